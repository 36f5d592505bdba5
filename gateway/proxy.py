"""mitmproxy embedded as the gateway: transparent mode for TCP and a DNS server, in one
process, with the gateway's addons first and only the built-in addons it needs."""

from __future__ import annotations

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


class Ready:
    """Marks the gateway ready once mitmproxy's servers listen (the `running` hook)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def running(self) -> None:
        self.state.ready = True


def build_master(settings: Settings, state: GatewayState) -> master.Master:
    opts = options.Options()
    proxy = master.Master(opts)
    proxy.addons.add(*pipeline(state, dns_ttl=settings.synthetic_ttl), *builtin_addons(),
                     Ready(state))
    updates: dict[str, object] = {
        "mode": [f"transparent@{settings.transparent_port}", f"dns@{settings.dns_port}"],
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
