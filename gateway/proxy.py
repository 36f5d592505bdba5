"""mitmproxy embedded as the gateway: transparent mode for TCP and a DNS server (in one
process, or DNS in the main process and TCP in each proxy worker), with the gateway's addons
first and only the built-in addons it needs."""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy import master, options
from mitmproxy.addons import core, disable_h2c, next_layer, proxyserver, tlsconfig

from gateway.addons import pipeline
from gateway.flowstate import GatewayState
from gateway.settings import Settings

CA_CERT = "mitmproxy-ca-cert.pem"
CA_KEY = "mitmproxy-ca.pem"


def builtin_addons() -> list[object]:
    # Deliberately not default_addons(): no DnsResolver (it would forward queries upstream if
    # a hook failed), no onboarding app (it answers mitm.it), no playback or rewriting.
    return [
        core.Core(),
        disable_h2c.DisableH2C(),
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
    ]


class Sandgate:
    """The gateway's addons as children of one: mitmproxy pays its per-addon dispatch (a
    coroutine and an error guard for every event) once for all of them, not once each."""

    def __init__(self, addons: list[object]) -> None:
        self.addons = addons


class Ready:
    """Calls `on_ready` once mitmproxy's servers listen (the `running` hook)."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self.on_ready = on_ready

    def running(self) -> None:
        self.on_ready()


def build_master(settings: Settings, state: GatewayState, *, dns: bool, tcp_port: int | None,
                 on_ready: Callable[[], None]) -> master.Master:
    """The DNS server (main process), a TCP proxy on `tcp_port` (worker), or both."""
    opts = options.Options()
    proxy = master.Master(opts)
    proxy.addons.add(Sandgate(pipeline(state, dns_ttl=settings.synthetic_ttl, dns=dns,
                                       tcp=tcp_port is not None)),
                     *builtin_addons(), Ready(on_ready))
    modes = [f"transparent@{tcp_port}"] if tcp_port is not None else []
    if dns:
        modes.append(f"dns@{settings.dns_port}")
    updates: dict[str, object] = {
        "mode": modes,
        "connection_strategy": "lazy",
        "confdir": str(settings.ca_dir),
        "http2": True,
        "rawtcp": True,
        # A hard ceiling for any buffered body (policies set lower per-sandbox limits).
        "body_size_limit": "256m",
    }
    if settings.upstream_ca is not None:
        updates["ssl_verify_upstream_trusted_ca"] = str(settings.upstream_ca)
    opts.update(**updates)
    return proxy
