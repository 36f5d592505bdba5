"""What reading MCP costs: median latency of `tools/list` and `tools/call` with the official
SDK's client against the test internet's SDK-built MCP server, direct (the world's host
namespace, no proxy), through the gateway under a rule without `mcp:` (the body passes
unread), and through the gateway under a rule with `mcp:` (every message read, tools/list
answers filtered); for the JSON endpoint (protocol 2026-07-28) and the SSE one (2025-11-25).

    .venv/bin/python bench/mcp_egress.py [--count N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import report
from world import BENCH, World, gateway_in, settings_for, world

from sandbox_net.testnet import HTTPS_IP, MCP_PORT

RULE = f"""version: 1
name: {{name}}
rules:
  - id: mcp
    hosts: [mcp.upstream.test]
    ports: [{MCP_PORT}]
{{extra}}"""
MCP = "    mcp: {tools: ['read_*', 'list_*'], args: {repo: 'octo/*'}}\n"
ENDPOINTS = {"json": ("/mcp-json", "auto"), "sse": ("/mcp", "legacy")}


def timed(the_world: World, netns: str, url: str, ca: Path, mode: str,
          count: int) -> dict[str, float]:
    result = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", sys.executable,
                             str(BENCH / "mcp_calls.py"), url, str(ca), mode, str(count)],
                            capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"MCP client failed: {result.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    count = parser.parse_args().count
    with tempfile.TemporaryDirectory() as tmp, world(Path(tmp), mcp=True) as the_world, \
            gateway_in(the_world, workers=2) as client:
        assert the_world.topology.ca is not None
        gateway_ca = settings_for(the_world, 2).ca_dir / "mitmproxy-ca-cert.pem"
        sandboxes = {}
        for name, extra in (("plain", ""), ("mcp", MCP)):
            client.put_policy(f"bench-{name}", RULE.format(name=f"bench-{name}", extra=extra))
            sandboxes[name] = client.create(policy=f"bench-{name}")
        try:
            for endpoint, (path, mode) in ENDPOINTS.items():
                got = {"direct": timed(the_world, the_world.host,
                                       f"https://{HTTPS_IP}:{MCP_PORT}{path}",
                                       the_world.topology.ca.ca_cert, mode, count)}
                for name, sandbox in sandboxes.items():
                    got[name] = timed(the_world, sandbox.info["netns"],
                                      f"https://mcp.upstream.test:{MCP_PORT}{path}",
                                      gateway_ca, mode, count)
                for what in ("list_ms", "call_ms"):
                    for place, figures in got.items():
                        report(f"mcp_{endpoint}_{what[:-3]}_{place}_ms", figures[what])
                    report(f"mcp_{endpoint}_{what[:-3]}_mcp_vs_plain_ratio",
                           round(got["mcp"][what] / got["plain"][what], 3))
        finally:
            for sandbox in sandboxes.values():
                sandbox.delete()


if __name__ == "__main__":
    main()
