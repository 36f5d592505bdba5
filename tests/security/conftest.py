"""The attacker's seat: a real gVisor sandbox behind the session gateway, a policy that allows
a few things (so attacks have something to abuse), and helpers that report what the attempt
got, what the internet saw, and what the audit log says."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.client import Client, ExecResult, Sandbox
from tests.harness import Gateway
from tests.security.probes import parse, program
from tests.topology import Topology

SECURITY_POLICY = {
    "version": 1,
    "name": "security-suite",
    "limits": {"connections": 40, "request_body_bytes": 1024 * 1024},
    "rules": [
        {"id": "www", "hosts": ["www.upstream.test"], "ports": [80, 8765]},
        {"id": "secure", "hosts": ["secure.upstream.test"], "ports": [443],
         "inject": [{"secret": "SEC_TOKEN", "as": "bearer"}]},
        {"id": "echo", "hosts": ["echo.upstream.test"], "ports": [7], "protocols": ["tcp"]},
        # allowed by name, so that only the address check stands in the way
        {"id": "risky-names", "ports": [80], "hosts": [
            "trap-0.upstream.test", "trap-1.upstream.test", "trap-2.upstream.test",
            "trap-3.upstream.test", "trap-4.upstream.test", "loop.upstream.test",
            "sandboxes.upstream.test", "gateway-own.upstream.test", "rebind.upstream.test"]},
    ],
}
SEC_TOKEN = "real-security-token-" + secrets.token_hex(10)


@dataclass
class Seat:
    """One attacking sandbox and what it takes to judge an attempt."""

    gateway: Gateway
    topology: Topology
    client: Client
    sandbox: Sandbox

    def run(self, body: str, timeout: float = 60) -> dict[str, Any]:
        result = self.sandbox.exec(["/usr/bin/python3", "-c", program(body)], timeout=timeout)
        assert result.exit_code == 0, result.stderr[-2000:]
        return parse(result.stdout)

    def sh(self, script: str, timeout: float = 60) -> ExecResult:
        return self.sandbox.exec(["/bin/sh", "-c", script], timeout=timeout)

    def mark(self) -> tuple[int, int]:
        page = self.client.request("GET", "/v1/audit", params={
            "sandbox": self.sandbox.id, "latest": "true", "limit": 1})
        return self.topology.mark(), (page["rows"][-1]["id"] if page["rows"] else 0)

    def seen(self, mark: tuple[int, int], kind: str | None = None) -> list[dict[str, Any]]:
        return self.topology.events(mark[0], kind)

    def rows(self, mark: tuple[int, int]) -> list[dict[str, Any]]:
        return [r for r in self.client.audit(sandbox=self.sandbox.id) if r["id"] > mark[1]]

    def reasons(self, mark: tuple[int, int], protocol: str | None = None) -> list[str]:
        return [r["reason"] for r in self.rows(mark)
                if protocol is None or r["protocol"] in protocol.split("|")]

    def synthetic(self, name: str) -> str:
        return str(self.run(f"out['ip'] = socket.gethostbyname({name!r})")["ip"])


@pytest.fixture(scope="session")
def security_client(gateway: Gateway) -> Iterator[Client]:
    client = Client(gateway.api_url, gateway.token("admin", "security-suite"))
    client.put_policy("security-suite", json.dumps(SECURITY_POLICY))
    client.put_secret("SEC_TOKEN", SEC_TOKEN)
    from tests.harness import REAL_SECRETS

    REAL_SECRETS.append(SEC_TOKEN)
    yield client
    client.close()


def _seat(gateway: Gateway, topology: Topology, client: Client) -> Iterator[Seat]:
    with client.create(policy="security-suite", secrets=["SEC_TOKEN"],
                       ttl_seconds=3600) as sandbox:
        yield Seat(gateway, topology, client, sandbox)


@pytest.fixture(scope="module")
def seat(gateway: Gateway, topology: Topology, security_client: Client) -> Iterator[Seat]:
    """Shared by the attempts that leave the sandbox usable."""
    yield from _seat(gateway, topology, security_client)


@pytest.fixture
def fresh_seat(gateway: Gateway, topology: Topology,
               security_client: Client) -> Iterator[Seat]:
    """For attempts that quarantine or exhaust their sandbox."""
    yield from _seat(gateway, topology, security_client)
