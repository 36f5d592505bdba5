"""A real gateway (`sandgate serve` in a subprocess) with its own data dir, name prefix and
ports, pointed at the test topology's resolver and CA; and helpers to drive it through the
CLI the way a user would."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.client import Client, SandgateAPIError
from gateway.processes.launch import socket_accepts
from tests.topology import DNS_IP, Topology

REPO = Path(__file__).resolve().parent.parent

# Every real secret value a test stores; the gateway fixture searches its data dir for them.
REAL_SECRETS: list[str] = []
AWS_KEY_ID = "AKIASANDGATETEST0001"
AWS_SECRET = "real-aws-secret-" + secrets.token_hex(12)
REAL_SECRETS += [AWS_KEY_ID, AWS_SECRET]
SANDGATE = [sys.executable, "-m", "gateway.cli"]


def nft_counter(table: str, chain: str, comment: str) -> int:
    """Packets counted by the rule carrying `comment` in the gateway's nftables table."""
    listing = subprocess.run(["nft", "-j", "list", "chain", "inet", table, chain],
                             capture_output=True, text=True, check=True).stdout
    for item in json.loads(listing)["nftables"]:
        rule = item.get("rule")
        if rule and rule.get("comment") == comment:
            for expr in rule["expr"]:
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
    raise AssertionError(f"no counter on {chain}/{comment}")


def unforwardable_packets() -> int:
    """The kernel's count of packets it refused to route (InAddrErrors): what a link with
    forwarding switched off does to a packet for elsewhere, before nftables sees it."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
             if line.startswith("Ip:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["InAddrErrors"])


def wait_for[T](condition: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """The first true value `condition` returns, asked every `interval` seconds; fails the
    test when none came within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def status_of(call: Callable[[], object]) -> int:
    """The HTTP status an API client call ended with: 200 when it raised nothing."""
    try:
        call()
    except SandgateAPIError as e:
        return e.status
    return 200


MAX_WORKERS = 4   # transparent ports reserved per test gateway


def worker_processes(home: Path) -> list[int]:
    """Pids of proxy workers of the gateway whose data dir is `home` (parent alive or not)."""
    marker = f"SANDGATE_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
            if b"gateway.processes.worker" in cmdline \
                    and marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (proxy workers listen on a run of ports)."""
    while True:
        first = free_port()
        if first + count > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first + 1, first + count):
                    s = stack.enter_context(socket.socket())
                    s.bind(("0.0.0.0", port))
            return first
        except OSError:
            continue


@dataclass
class Gateway:
    prefix: str
    home: Path
    topology: Topology | None
    process: subprocess.Popen[bytes] | None = None
    trust_test_ca: bool = True    # SANDGATE_UPSTREAM_CA names the test internet's CA

    def __post_init__(self) -> None:
        self.extra_env: dict[str, str] = {}
        self.transparent_port = free_ports(MAX_WORKERS)
        self.api_port = free_port()
        self.dns_port = free_port()
        self.policy_dir = self.home / "policies"
        self.policy_dir.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "SANDGATE_HOME": str(self.home),
            "SANDGATE_NAME_PREFIX": self.prefix,
            "SANDGATE_TRANSPARENT_PORT": str(self.transparent_port),
            "SANDGATE_DNS_PORT": str(self.dns_port),
            "SANDGATE_API_PORT": str(self.api_port),
            "SANDGATE_POLICY_DIR": str(self.policy_dir),
            "SANDGATE_WORKERS": "2",   # the multi-process path, whatever the machine's cores
            # a stopped test gateway leaves nothing (test_restart.py keeps its sandboxes)
            "SANDGATE_DESTROY_ON_STOP": "1",
            **self.extra_env,
        }
        if self.topology is not None:
            assert self.topology.ca is not None
            env["SANDGATE_UPSTREAM_RESOLVER"] = DNS_IP
            if self.trust_test_ca:
                env["SANDGATE_UPSTREAM_CA"] = str(self.topology.ca.ca_cert)
        return env

    # lifecycle
    def start(self) -> None:
        self.launch()
        self.wait_until(self.healthy, timeout=180)  # a loaded machine: 54 s seen

    def launch(self) -> None:
        """`sandgate serve`, without waiting for it."""
        with open(self.home / "serve.log", "ab") as log:
            self.process = subprocess.Popen([*SANDGATE, "serve"], env=self.env, cwd=REPO,
                                            stdout=log, stderr=log, start_new_session=True)

    def wait_until(self, condition: Any, timeout: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_tail()}")
            if condition():
                return
            time.sleep(0.02)
        raise RuntimeError(f"gateway not ready: {self.log_tail()}")

    def alive(self) -> bool:
        """/healthz answers: the API is up (which says nothing of the proxy workers)."""
        return self._answers("/healthz")

    def _answers(self, path: str) -> bool:
        """`path` answers 200 on the control socket."""
        if not socket_accepts(self.home / "control.sock"):
            return False
        try:
            with self.client() as c:
                return c.get(path, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        path = self.home / "serve.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.home / "control.sock")),
                            base_url="http://sandgate", timeout=120)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def token(self, role: str, name: str | None = None) -> str:
        args = ["token", "create", f"--role={role}", *([f"--name={name}"] if name else [])]
        result = self.sandgate(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def admin_client(self, token_name: str, policies: dict[str, str] | None = None) -> Client:
        """An API client holding a new admin token, with `policies` (name -> text) stored."""
        client = Client(self.api_url, self.token("admin", token_name))
        for name, text in (policies or {}).items():
            client.put_policy(name, text)
        return client

    def healthy(self) -> bool:
        """/readyz answers: the API and the proxy workers are up."""
        return self._answers("/readyz")

    # driving it
    def policy(self, name: str, rules: list[dict[str, Any]], **extra: Any) -> Path:
        path = self.policy_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "name": name, **extra, "rules": rules}))
        return path

    def sandgate(self, *args: str, timeout: float = 120,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SANDGATE, *args], env={**self.env, **(env or {})}, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def run(self, policy: Path | str, *cmd: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return self.sandgate("run", f"--policy={policy}", *flags, "--", *cmd, timeout=timeout)

    def python(self, policy: Path | str, code: str,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(policy, "/usr/bin/python3", "-c", code, timeout=timeout)

    def set_secret(self, name: str, value: str) -> None:
        REAL_SECRETS.append(value)
        result = subprocess.run([*SANDGATE, "secret", "set", name], input=value, env=self.env,
                                cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert value not in result.stdout + result.stderr

    def last_audit_id(self) -> int:
        rows = self.audit_rows(limit=1)
        return int(rows[-1]["id"]) if rows else 0

    def audit_rows(self, since: int = 0, limit: int = 1000, **filters: str) -> list[dict[str, Any]]:
        flags = [f"--{k}={v}" for k, v in filters.items()]
        result = self.sandgate("audit", "--json", f"--limit={limit}", *flags)
        assert result.returncode == 0, result.stderr
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        return [r for r in rows if r["id"] > since]
