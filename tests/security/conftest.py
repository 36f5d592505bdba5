"""The attacker's seat: a real gVisor sandbox behind the session gateway, a policy that allows
a few things (so attacks have something to abuse), and helpers that report what the attempt
got, what the internet saw, and what the audit log says."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from gateway.client import Client
from gateway.selftest.seat import Seat
from tests.harness import Gateway
from tests.topology import REVEAL_PORT, Topology

SECURITY_POLICY = {
    "version": 1,
    "name": "security-suite",
    "limits": {"connections": 40, "request_body_bytes": 1024 * 1024},
    "rules": [
        {"id": "www", "hosts": ["www.upstream.test"], "ports": [80, 8765]},
        {"id": "secure", "hosts": ["secure.upstream.test"], "ports": [443, REVEAL_PORT],
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


@pytest.fixture(scope="session")
def security_client(gateway: Gateway) -> Iterator[Client]:
    policies = {"security-suite": json.dumps(SECURITY_POLICY)}
    with gateway.admin_client("security-suite", policies) as client:
        client.put_secret("SEC_TOKEN", SEC_TOKEN)
        from tests.harness import REAL_SECRETS

        REAL_SECRETS.append(SEC_TOKEN)
        yield client


def _seat(topology: Topology, client: Client) -> Iterator[Seat]:
    with client.create(policy="security-suite", secrets=["SEC_TOKEN"],
                       ttl_seconds=3600) as sandbox:
        yield Seat(topology, client, sandbox)


@pytest.fixture(scope="module")
def seat(gateway: Gateway, topology: Topology, security_client: Client) -> Iterator[Seat]:
    """Shared by the attempts that leave the sandbox usable."""
    yield from _seat(topology, security_client)


@pytest.fixture
def fresh_seat(gateway: Gateway, topology: Topology,
               security_client: Client) -> Iterator[Seat]:
    """For attempts that quarantine or exhaust their sandbox."""
    yield from _seat(topology, security_client)
