"""The local control client (over the root-only unix socket), and starting a gateway for the
duration of one command when none is running."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from gateway.errors import NotReady, SandgateError
from gateway.settings import Settings
from gateway.timing import START_TIMEOUT


def socket_accepts(path: Path) -> bool:
    """Whether something listens on unix socket `path`. Checked with a socket we close
    ourselves: httpcore leaks the socket of a failed unix connect."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class ControlClient:
    def __init__(self, settings: Settings, timeout: float = 120.0) -> None:
        self.settings = settings
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(settings.control_socket)),
                                  base_url="http://sandgate", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def healthy(self) -> bool:
        if not socket_accepts(self.settings.control_socket):
            return False
        try:
            return self._http.get("/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise NotReady(f"the gateway is not answering on {self.settings.control_socket}: {e}",
                           "is `sandgate serve` still running?") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                detail, hint = body.get("detail"), body.get("hint")
            except ValueError:
                detail, hint = response.text, None
            error = SandgateError(str(detail), hint)
            error.status = response.status_code
            raise error
        return response.json() if response.content else None

    def create_sandbox(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/sandboxes", json=body)
        return result

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._call("DELETE", f"/v1/sandboxes/{sandbox_id}")

    def local_exec(self, sandbox_id: str, cmd: list[str], env: dict[str, str],
                   cwd: str | None) -> list[str]:
        result = self._call("POST", f"/v1/sandboxes/{sandbox_id}/local-exec",
                            json={"cmd": cmd, "env": env, "cwd": cwd})
        return list(result["argv"])

    def rotate_master(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/vault/rotate-master")
        return result

    def policy_status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/policies/status")
        return result

    def budgets(self, sandbox: str | None = None) -> list[dict[str, Any]]:
        params = {"sandbox": sandbox} if sandbox else {}
        result: dict[str, Any] = self._call("GET", "/v1/budgets", params=params)
        return list(result["budgets"])

    def flush_audit(self) -> None:
        self._call("POST", "/v1/audit/flush")


@contextlib.contextmanager
def gateway(settings: Settings, wrapper: Sequence[str] = ()) -> Iterator[ControlClient]:
    """A client of the running gateway, or of one started now (through the `wrapper`
    command, such as an nsenter) and stopped on exit."""
    client = ControlClient(settings)
    if client.healthy():
        try:
            yield client
        finally:
            client.close()
        return
    settings.home.mkdir(parents=True, exist_ok=True)
    log_path = settings.home / "gateway.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "gateway.cli", "serve"],
            env={**os.environ, **settings.as_env()}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=log, start_new_session=True,  # Ctrl-C is ours to handle
        )
    try:
        _wait_until_healthy(client, process, log_path)
        yield client
    finally:
        client.close()
        _stop(process)


def _wait_until_healthy(client: ControlClient, process: subprocess.Popen[bytes],
                        log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise NotReady("the gateway could not start: " + (tail[0] if tail else "no output"),
                           f"see {log_path}")
        if client.healthy():
            return
        time.sleep(0.05)
    raise NotReady(f"the gateway did not become ready within {START_TIMEOUT:.0f} s",
                   f"see {log_path}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
