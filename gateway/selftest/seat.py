"""The attacker's seat: a real sandbox behind a gateway, and what it takes to judge an
attempt from it: what the attempt got, what the throw-away internet saw, what the audit log
says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.client import Client, ExecResult, Sandbox
from gateway.selftest.probes import parse, program
from sandbox_net.testnet import Topology

Mark = tuple[int, int]   # (internet event log offset, last audit row id)


@dataclass
class Seat:
    topology: Topology
    client: Client
    sandbox: Sandbox

    def run(self, body: str, timeout: float = 60) -> dict[str, Any]:
        """Run an attempt (Python source appended to the probes' prelude); its `out`."""
        result = self.sandbox.exec(["/usr/bin/python3", "-c", program(body)], timeout=timeout)
        if result.exit_code != 0:
            raise AssertionError(f"probe failed in the sandbox: {result.stderr[-2000:]}")
        return parse(result.stdout)

    def sh(self, script: str, timeout: float = 60) -> ExecResult:
        return self.sandbox.exec(["/bin/sh", "-c", script], timeout=timeout)

    def mark(self) -> Mark:
        page = self.client.request("GET", "/v1/audit", params={
            "sandbox": self.sandbox.id, "latest": "true", "limit": 1})
        return self.topology.mark(), (page["rows"][-1]["id"] if page["rows"] else 0)

    def seen(self, mark: Mark, kind: str | None = None) -> list[dict[str, Any]]:
        return self.topology.events(mark[0], kind)

    def rows(self, mark: Mark) -> list[dict[str, Any]]:
        return [r for r in self.client.audit(sandbox=self.sandbox.id) if r["id"] > mark[1]]

    def reasons(self, mark: Mark, protocol: str | None = None) -> list[str]:
        return [r["reason"] for r in self.rows(mark)
                if protocol is None or r["protocol"] in protocol.split("|")]

    def synthetic(self, name: str) -> str:
        return str(self.run(f"out['ip'] = socket.gethostbyname({name!r})")["ip"])
