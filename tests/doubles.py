"""Test doubles for the root-free unit tests, each standing in for something that needs root or
other processes: a sandbox network (namespaces, nftables), a runtime (runsc), the audit
writer's database thread, the network to token endpoints. Everything else in these tests is
the real code: policies, the registry, the authority, the vault (SQLite in a temporary
directory), mitmproxy's flows, the token servers.

Integration tests (tests/integration, tests/security) use the real things."""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import requests.adapters
import requests.structures
from mitmproxy import connection
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy.mode_specs import ProxyMode

from gateway.control.policy_store import PolicyHandle
from gateway.dataplane.registry import Registry, SandboxContext, SyntheticPool
from gateway.dataplane.state import GatewayState
from gateway.dataplane.upstream import UpstreamResolver
from gateway.db import make_engine
from gateway.processes.authority import Authority, LocalCoordinator
from gateway.providers.transport import Connector, Exchange
from policies.loader import load_text
from sandbox_net.errors import NetError, RuntimeFailure
from sandbox_net.links import NetnsRef
from sandbox_net.runtime.base import Runtime, SandboxSpec
from sandbox_net.wiring import SandboxNetwork, Wired
from vault.crypto import MasterKey
from vault.store import Vault

SANDBOX_IP = "10.77.0.2"
SYNTHETIC = ipaddress.IPv4Network("198.18.0.0/24")


class RowSink:
    """Stands in for the audit writer (a database thread): keeps the rows it is given; with
    `room`, takes only that many more through `offer` (a full queue)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.room: int | None = None

    def record(self, **row: Any) -> None:
        self.rows.append(row)

    def has_room(self) -> bool:
        return self.room is None or self.room > 0

    def offer(self, **row: Any) -> bool:
        if not self.has_room():
            return False
        if self.room is not None:
            self.room -= 1
        self.rows.append(row)
        return True

    def flush(self, timeout: float = 0) -> bool:
        return True


@dataclass
class Plane:
    """One proxy's state with one registered sandbox, its coordinator the real authority."""

    state: GatewayState
    sandbox: SandboxContext
    authority: Authority
    sink: RowSink
    vault: Vault | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.sink.rows

    def close(self) -> None:
        if self.vault is not None:
            self.vault.engine.dispose()

    def address_of(self, name: str) -> str:
        """What the gateway's DNS would have answered the sandbox for `name`."""
        return str(self.sandbox.pool.address_for(name))


def policy_handle(yaml_text: str, path: Path = Path("/policies/test.yaml")) -> PolicyHandle:
    return PolicyHandle(path, load_text(yaml_text, str(path)), ())


def data_plane(tmp_path: Path, policy: str, *, answers: dict[str, list[str]] | None = None,
               secrets: dict[str, str] | None = None, ip: str = SANDBOX_IP,
               sandbox_id: str = "a1b2c3d4") -> Plane:
    """`answers`: upstream DNS (name -> addresses); `secrets`: name -> real value, stored in a
    real vault, the sandbox holding a placeholder for each."""
    table = answers or {}

    async def lookup(name: str) -> list[str]:
        if name not in table:
            raise OSError(f"no such name {name}")
        return table[name]

    registry = Registry()
    authority = Authority(registry)
    sink = RowSink()
    state = GatewayState(registry, UpstreamResolver(None, lookup=lookup),
                         LocalCoordinator(authority, sink))  # type: ignore[arg-type]
    vault = None
    placeholders: dict[str, str] = {}
    if secrets is not None:
        vault = Vault(make_engine(f"sqlite:///{tmp_path / 'vault.db'}"), MasterKey.generate())
        from vault.placeholders import new_placeholder
        for name, value in secrets.items():
            vault.put(name, value)
            placeholders[name] = new_placeholder()
        state.vault = vault
    sandbox = SandboxContext(id=sandbox_id, ip=ip, handle=policy_handle(policy),
                             pool=SyntheticPool(SYNTHETIC), secrets=placeholders, owner="tok")
    registry.add(sandbox)
    return Plane(state, sandbox, authority, sink, vault)


def client(source: str = SANDBOX_IP, dialed: tuple[str, int] = ("198.18.0.1", 443), *,
           sni: str | None = None, tls: bool = False) -> connection.Client:
    """A client connection as the transparent proxy sees it: `dialed` is where the sandbox
    meant to go (recovered from the nft redirect)."""
    return connection.Client(
        id=str(uuid.uuid4()), peername=(source, 40000), sockname=dialed, mitmcert=None,
        timestamp_start=1.0, sni=sni, tls=tls, state=ConnectionState.OPEN,
        proxy_mode=ProxyMode.parse("transparent"))


# the control plane's doubles
@dataclass
class InMemoryNetwork(SandboxNetwork):
    """Stands in for namespaces, links and nftables (HostNetwork needs root)."""

    wired: dict[str, Wired] = field(default_factory=dict)
    fail_next: Exception | None = None
    slots: dict[str, int] = field(default_factory=dict)   # the lowest free slot is reused

    def wire(self, sandbox_id: str) -> Wired:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        slot = min(set(range(len(self.slots) + 1)) - set(self.slots.values()))
        self.slots[sandbox_id] = slot
        base = ipaddress.IPv4Address("10.77.0.0") + 4 * slot
        wired = Wired(sandbox_id, f"/run/netns/t-{sandbox_id}", str(base + 2), str(base + 1),
                      ipaddress.IPv4Network(f"198.18.{slot}.0/24"))
        self.wired[sandbox_id] = wired
        return wired

    def adopt(self, sandbox_id: str, holder: int | None = None) -> Wired:
        wired = self.wired.get(sandbox_id)
        if wired is None:
            raise NetError("its network namespace is gone")
        return wired

    def attach(self, sandbox_id: str, netns: NetnsRef, ifname: str) -> Wired:
        wired = dataclasses.replace(self.wire(sandbox_id), netns_path=netns.path)
        self.wired[sandbox_id] = wired
        return wired

    def check(self, sandbox_id: str) -> None:
        if sandbox_id not in self.wired:
            raise NetError(f"sandbox {sandbox_id} is not wired")

    def unwire(self, sandbox_id: str) -> None:
        self.wired.pop(sandbox_id, None)
        self.slots.pop(sandbox_id, None)

    def netns_path(self, sandbox_id: str) -> str:
        return f"/run/netns/t-{sandbox_id}"

    def leftovers(self) -> set[str]:
        return set(self.wired)


class InMemoryRuntime(Runtime):
    """Stands in for runsc: remembers which sandboxes run; exec is not modelled."""

    name = "gvisor"

    def __init__(self) -> None:
        self.running: dict[str, SandboxSpec] = {}
        self.started: list[str] = []
        self.fail_start: str | None = None

    def preflight(self) -> None:
        return None

    def start(self, spec: SandboxSpec) -> None:
        if self.fail_start is not None:
            raise RuntimeFailure(self.fail_start)
        self.running[spec.sandbox_id] = spec
        self.started.append(spec.sandbox_id)

    def exec_command(self, spec: SandboxSpec, argv: list[str], *, env: dict[str, str],
                     cwd: str | None) -> list[str]:
        return ["true"]

    def stop(self, spec: SandboxSpec) -> None:
        self.running.pop(spec.sandbox_id, None)

    def alive(self, spec: SandboxSpec) -> str | None:
        return None if spec.sandbox_id in self.running else "not running"

    def holder(self, spec: SandboxSpec) -> int | None:
        return None


__all__ = ["InMemoryNetwork", "InMemoryRuntime", "NetError", "Plane", "RowSink", "client",
           "data_plane", "policy_handle"]


# the network to token endpoints
class WsgiAdapter(requests.adapters.BaseAdapter):
    """Stands in for the network between the gateway and a token endpoint (the real one, in
    the test topology, needs root): hands each request to a WSGI app in this process (the
    real token servers of sandbox_net.testnet.tokens) and notes it as the gateway's adapter
    does."""

    def __init__(self, app: Any, exchanges: list[Exchange]) -> None:
        super().__init__()
        self.client = app.test_client()
        self.exchanges = exchanges

    def send(self, request: requests.PreparedRequest, **_kwargs: Any) -> requests.Response:
        url = urllib.parse.urlsplit(request.url or "")
        exchange = Exchange(request.method or "GET", url.hostname or "", url.port or 443,
                            url.path, upstream="203.0.113.80")
        self.exchanges.append(exchange)
        answer = self.client.open(url.path + (f"?{url.query}" if url.query else ""),
                                  method=request.method, headers=dict(request.headers),
                                  data=request.body, base_url=f"https://{url.netloc}")
        exchange.status = answer.status_code
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = requests.structures.CaseInsensitiveDict(answer.headers)
        response._content = answer.get_data()
        response.url, response.request = request.url or "", request
        return response

    def close(self) -> None:
        pass


def wsgi_connector(app: Any) -> Connector:
    """A broker's `connect` that reaches `app` (see WsgiAdapter)."""
    def connect(_permitted: Any, exchanges: list[Exchange]) -> Callable[[Any], None]:
        def prepare(session: requests.Session) -> None:
            adapter = WsgiAdapter(app, exchanges)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        return prepare
    return connect
