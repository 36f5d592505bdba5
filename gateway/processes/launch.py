"""The local control client (over the root-only unix socket), and starting a gateway for the
duration of one command when none is running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import NotReady, SandgateError
from gateway.timing import START_TIMEOUT

if TYPE_CHECKING:
    from gateway.settings import Settings


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


def _exchange(path: Path, method: str, target: str, payload: bytes,
              timeout: float) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 request over the control socket, the connection closed
    after it. By hand, not http.client or httpx: their imports (email, ssl; httpcore and
    trio) took a `sandgate run` one-liner a third of its time, and the peer is our own API
    (uvicorn), whose answers to these calls are never chunked."""
    head = (f"{method} {target} HTTP/1.1\r\nHost: sandgate\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(head.encode() + payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return _parse_response(b"".join(chunks))


def _parse_response(raw: bytes) -> tuple[int, bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") \
            or not parts[1].isdigit():
        raise ConnectionError("the control socket gave an incomplete answer")
    fields = dict(line.lower().split(b":", 1) for line in lines if b":" in line)
    if b"transfer-encoding" in fields:
        raise ConnectionError("the control socket answered in chunks, which this client "
                              "does not read")
    length = fields.get(b"content-length")
    if length is not None and int(length) != len(body):
        raise ConnectionError("the control socket's answer was cut short")
    return int(parts[1]), body


class ControlClient:
    def __init__(self, settings: Settings | None = None, timeout: float = 120.0,
                 control_socket: Path | None = None) -> None:
        """A client of `settings`' control socket, or of `control_socket` (`sandgate run`'s
        fast path has no Settings)."""
        assert settings is not None or control_socket is not None
        self.socket = control_socket or settings.control_socket  # type: ignore[union-attr]
        self.timeout = timeout

    def close(self) -> None:
        """Nothing held: each call opens its own connection (a unix connect is cheap)."""

    def _request(self, method: str, path: str, body: Any = None,
                 timeout: float | None = None) -> tuple[int, bytes]:
        payload = b"" if body is None else json.dumps(body).encode()
        return _exchange(self.socket, method, path, payload, timeout or self.timeout)

    def healthy(self) -> bool:
        if not socket_accepts(self.socket):
            return False
        try:
            return self._request("GET", "/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            status, content = self._request(method, path, body)
        except OSError as e:
            raise NotReady(f"the gateway is not answering on {self.socket}: {e}",
                           "is `sandgate serve` still running?") from None
        if status >= 400:
            error = SandgateError(*_error_of(content))
            error.status = status
            raise error
        return json.loads(content) if content else None

    def create_sandbox(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/sandboxes", body)
        return result

    def delete_sandbox(self, sandbox_id: str, wait: bool = True) -> None:
        """`wait=False`: the gateway answers at once and tears the sandbox down after."""
        self._call("DELETE", f"/v1/sandboxes/{sandbox_id}" + ("" if wait else "?wait=false"))

    def local_exec(self, sandbox_id: str, cmd: list[str], env: dict[str, str],
                   cwd: str | None) -> list[str]:
        result = self._call("POST", f"/v1/sandboxes/{sandbox_id}/local-exec",
                            {"cmd": cmd, "env": env, "cwd": cwd})
        return list(result["argv"])

    def rotate_master(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/vault/rotate-master")
        return result

    def policy_status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/policies/status")
        return result

    def budgets(self, sandbox: str | None = None) -> list[dict[str, Any]]:
        from urllib.parse import quote

        query = f"?sandbox={quote(sandbox, safe='')}" if sandbox else ""
        result: dict[str, Any] = self._call("GET", f"/v1/budgets{query}")
        return list(result["budgets"])

    def flush_audit(self) -> None:
        self._call("POST", "/v1/audit/flush")


def _error_of(content: bytes) -> tuple[str, str | None]:
    """(detail, hint) of an error response."""
    try:
        body = json.loads(content)
        return str(body.get("detail")), body.get("hint")
    except (ValueError, AttributeError):
        return content.decode(errors="replace"), None


@contextlib.contextmanager
def gateway(settings: Settings, wrapper: Sequence[str] = (),
            say: Callable[[str], None] | None = None) -> Iterator[ControlClient]:
    """A client of the running gateway, or of one started now (through the `wrapper`
    command, such as an nsenter) and stopped on exit with its sandboxes; `say` is told what
    is happening while one starts."""
    client = ControlClient(settings)
    if client.healthy():
        try:
            yield client
        finally:
            client.close()
        return
    settings.home.mkdir(parents=True, exist_ok=True)
    log_path = settings.home / "gateway.log"
    started = time.monotonic()
    if say:
        say(f"no gateway is running; starting one for this command (log: {log_path})")
    # A gateway started for one command stops with it: nothing may outlive it for a later
    # adoption (its data directory may be a temporary one)
    ephemeral = settings.model_copy(update={"destroy_on_stop": True})
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "gateway.cli", "serve"],
            env={**os.environ, **ephemeral.as_env()}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=log, start_new_session=True,  # Ctrl-C is ours to handle
        )
    try:
        _wait_until_healthy(client, process, log_path)
        if say:
            say(f"gateway ready after {time.monotonic() - started:.1f} s")
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
