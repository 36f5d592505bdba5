"""A throw-away internet: the test topology of DESIGN.md, also what `sandgate selftest`
builds. An `inet` namespace stands in for the internet.

    host ── {prefix}i0 198.51.100.249/30 ═══ eth0 198.51.100.250/30 ── inet namespace
                                                   + service addresses (/32 each)
                                                   + trap addresses (private, metadata...)

The host reaches exactly the addresses we create, by one /32 route each via {prefix}i0, so a
packet to any of them lands in the inet namespace we built, never on a real network; and no
wider route of ours shadows an address the host's own network uses (this machine's package
mirror sits in 203.0.113.0/24, its own address in 192.0.2.0/24). The inet namespace has no
default route, and its servers make no name lookups.
"""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyroute2 import IPRoute, NetlinkError, netns

from sandbox_net.testnet.certs import TestCA, make_ca

if TYPE_CHECKING:
    from sandbox_net.testnet.mtls import ClientPki
    from sandbox_net.testnet.tokens import Material

LINK_HOST = "198.51.100.249"
LINK_INET = "198.51.100.250"
LINK_PREFIX = 30
HTTP_IP = "198.51.100.10"
HTTPS_IP = "198.51.100.11"
OTHER_IP = "198.51.100.12"
ECHO_IP = "198.51.100.20"
UDP_IP = "198.51.100.30"
DNS_IP = "198.51.100.53"
REVEAL_PORT = 9443   # on HTTPS_IP: secure.upstream.test:9443
MCP_PORT = 9444      # on HTTPS_IP: mcp.upstream.test:9444, an MCP server (testnet.mcpserver)
TOKENS_IP = "198.51.100.40"   # token endpoints and the APIs taking their tokens (tokens=True)
MTLS_IP = "198.51.100.41"     # an upstream that requires a client certificate (tokens=True)
TOKEN_NAMES = {"auth.upstream.test": TOKENS_IP, "github.upstream.test": TOKENS_IP,
               "google.upstream.test": TOKENS_IP, "mtls.upstream.test": MTLS_IP}

ZONE = {
    "www.upstream.test": HTTP_IP,
    "secure.upstream.test": HTTPS_IP,
    "other.upstream.test": OTHER_IP,
    "denied.upstream.test": OTHER_IP,
    "echo.upstream.test": ECHO_IP,
    "mcp.upstream.test": HTTPS_IP,
}
# Addresses a gateway must refuse to dial (private, metadata, CGNAT); each hosts a trap
# server, so even a buggy gateway reaches only our own trap: trap-<i>.upstream.test in DNS.
TRAPS = ["10.99.0.1", "169.254.169.254", "100.64.0.1", "172.16.5.5", "192.168.7.7"]
TRAPS_FIRST = TRAPS[0]
METADATA_IP = "169.254.169.254"
TLS_NAMES = ["secure.upstream.test", "other.upstream.test", "www.upstream.test",
             "mcp.upstream.test"]


@dataclass
class Topology:
    prefix: str
    workdir: Path
    traps: list[str] = field(default_factory=list)
    sigv4_keys: dict[str, str] = field(default_factory=dict)   # the upstream's "real" keys
    extra_zone: dict[str, str | list[str]] = field(default_factory=dict)
    tls_names: list[str] = field(default_factory=list)         # more names for the cert
    host_netns: str | None = None   # where the "host" side lives; None: the real host
    dns_ttl: int = 5                # of single-address answers
    reveal: bool = False            # the credential-revealing upstream on REVEAL_PORT
    mcp: bool = False               # the MCP server on MCP_PORT (starting it takes a second)
    tokens: bool = False            # token endpoints and the mTLS upstream (testnet.tokens)
    token_lifetime: int = 4         # seconds the tokens they issue live
    ca: TestCA | None = None
    material: Material | None = None
    client_pki: ClientPki | None = None
    process: subprocess.Popen[str] | None = None

    @property
    def netns(self) -> str:
        return f"{self.prefix}-inet"

    @property
    def host_link(self) -> str:
        return f"{self.prefix}i0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "upstreams.jsonl"

    # lifecycle
    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        names = [*TLS_NAMES, *self.tls_names, *(TOKEN_NAMES if self.tokens else ())]
        self.ca = make_ca(self.workdir / "ca", names, [HTTPS_IP, OTHER_IP])
        if self.tokens:
            from sandbox_net.testnet.mtls import make_client_pki
            from sandbox_net.testnet.tokens import make_material

            self.material = make_material(self.workdir / "tokens", "google.upstream.test",
                                          self.token_lifetime)
            self.client_pki = make_client_pki(self.workdir / "client-pki")
        self._build_network()
        self._start_servers()

    def _service_addresses(self) -> list[str]:
        tokens = [TOKENS_IP, MTLS_IP] if self.tokens else []
        return [HTTP_IP, HTTPS_IP, OTHER_IP, ECHO_IP, UDP_IP, DNS_IP, *tokens, *self.traps]

    def _build_network(self) -> None:
        netns.create(self.netns)
        with IPRoute(netns=self.host_netns) as ipr:
            ipr.link("add", ifname=self.host_link, kind="veth",
                     peer={"ifname": f"{self.prefix}i1", "net_ns_fd": self.netns})
            (index,) = ipr.link_lookup(ifname=self.host_link)
            ipr.addr("add", index=index, address=LINK_HOST, prefixlen=LINK_PREFIX)
            ipr.link("set", index=index, state="up")
            for address in self._service_addresses():
                try:
                    ipr.route("add", dst=f"{address}/32", gateway=LINK_INET, oif=index)
                except NetlinkError as error:
                    if error.code != errno.EEXIST:
                        raise
                    raise RuntimeError(
                        f"a route to {address} already exists: another test topology is "
                        "running on this host (they cannot run concurrently) or a dead run "
                        "left it behind") from error
        with IPRoute(netns=self.netns) as ns:
            (inner,) = ns.link_lookup(ifname=f"{self.prefix}i1")
            ns.link("set", index=inner, ifname="eth0")
            ns.addr("add", index=inner, address=LINK_INET, prefixlen=LINK_PREFIX)
            for address in self._service_addresses():
                ns.addr("add", index=inner, address=address, prefixlen=32)
            ns.link("set", index=inner, state="up")
            (lo,) = ns.link_lookup(ifname="lo")
            ns.link("set", index=lo, state="up")

    def rezone(self, extra_zone: dict[str, str | list[str]]) -> None:
        """Restart the servers with other extra DNS answers (the event log carries on)."""
        self._stop_servers()
        self.extra_zone = extra_zone
        self._start_servers()

    def _start_servers(self) -> None:
        assert self.ca is not None
        tls = {"cert": str(self.ca.server_cert), "key": str(self.ca.server_key)}
        zone: dict[str, str | list[str]] = {
            **ZONE, **{f"trap-{i}.upstream.test": t for i, t in enumerate(self.traps)},
            # names an attacker would make resolve to places the gateway must not dial
            "loop.upstream.test": "127.0.0.1",
            "sandboxes.upstream.test": "10.77.0.1",
            "gateway-own.upstream.test": LINK_HOST,
            "rebind.upstream.test": [HTTP_IP, *self.traps[:1]],
            **(TOKEN_NAMES if self.tokens else {}),
            **self.extra_zone,
        }
        config = {
            "log": str(self.log_path),
            "http": [
                {"address": HTTP_IP, "port": 80}, {"address": HTTP_IP, "port": 8080},
                {"address": OTHER_IP, "port": 80},
                {"address": HTTPS_IP, "port": 443, "tls": tls},
                {"address": HTTPS_IP, "port": 8443, "tls": tls},
                {"address": OTHER_IP, "port": 443, "tls": tls},
                *({"address": t, "port": 80} for t in self.traps),
            ],
            "dns": {"address": DNS_IP, "zone": zone, "ttl": self.dns_ttl},
            "echo": [{"address": ECHO_IP, "port": 7}, {"address": ECHO_IP, "port": 7001}],
            "udp": [{"address": UDP_IP, "port": 9999}, {"address": HTTPS_IP, "port": 443}],
            "websocket": [{"address": HTTP_IP, "port": 8765}],
            # gives back the credential it receives, every way it can (testnet.reveal;
            # the test suite's, it needs hypercorn from the dev extras)
            "reveal": [{"address": HTTPS_IP, "port": REVEAL_PORT, "tls": tls}] if self.reveal
                      else [],
            "mcp": [{"address": HTTPS_IP, "port": MCP_PORT, "tls": tls}] if self.mcp else [],
            "sigv4_keys": self.sigv4_keys,
            # token endpoints (Authlib, Flask: runtime dependencies) and the mTLS upstream
            "tokens": [{"address": TOKENS_IP, "port": 443, "tls": tls,
                        "spec": self.material.spec()}] if self.material else [],
            "mtls": [{"address": MTLS_IP, "port": 443, "tls": tls,
                      "client_ca": str(self.client_pki.ca)}] if self.client_pki else [],
        }
        config_path = self.workdir / "upstreams.json"
        config_path.write_text(json.dumps(config))
        self.log_path.touch()
        self.process = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-m",
             "sandbox_net.testnet.servers", str(config_path)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"upstream servers did not start: {line!r}")

    def _stop_servers(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def stop(self) -> None:
        self._stop_servers()
        with IPRoute(netns=self.host_netns) as ipr:
            for index in ipr.link_lookup(ifname=self.host_link):
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=index)
        if self.netns in netns.listnetns():
            netns.remove(self.netns)

    # what the internet saw
    def mark(self) -> int:
        return self.log_path.stat().st_size

    def events(self, since: int = 0, kind: str | None = None) -> list[dict[str, Any]]:
        with open(self.log_path) as f:
            f.seek(since)
            lines = [json.loads(line) for line in f if line.strip()]
        return [e for e in lines if kind is None or e["kind"] == kind]
