"""mitmproxy embedded in each proxy worker: transparent mode for TCP, with the gateway's
addons first and only the built-in addons it needs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mitmproxy import ctx, master, options
from mitmproxy import flow as flow_
from mitmproxy.addons import core, disable_h2c, next_layer, proxyserver, tlsconfig

from gateway.dataplane.addons import pipeline
from gateway.dataplane.addons.client_cert import ClientCert
from gateway.dataplane.state import GatewayState
from gateway.dataplane.trust import upstream_trust
from gateway.settings import Settings

logger = logging.getLogger(__name__)


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
    """Calls `on_ready` once mitmproxy's server listens on `port` (the `running` hook comes
    after the servers were set up, also when that failed: then the worker stops, and its
    supervisor starts another)."""

    def __init__(self, on_ready: Callable[[], None], port: int) -> None:
        self.on_ready = on_ready
        self.port = port

    def running(self) -> None:
        server = ctx.master.addons.get("proxyserver")
        if not any(address[1] == self.port for address in server.listen_addrs()):
            logger.error("the proxy does not listen on port %d; stopping", self.port)
            ctx.master.shutdown()
            return
        self.on_ready()


class Cutter:
    """Closes a flow's client and server connections at once: how a body streaming through
    is stopped when it breaks a rule (its headers already went out, so no answer is
    possible). mitmproxy has no public call for it; this is the connection handler's own
    close, which its layers use, run on the event loop after the current event.

    The upstream's transport is aborted at once, its unsent bytes dropped: the rest of the
    current event (the body's end, when it arrived in the same read) would otherwise still
    be written, and a chunked upload would reach the upstream ended, as if whole."""

    def __init__(self, server: proxyserver.Proxyserver) -> None:
        self.server = server

    def __call__(self, flow: flow_.Flow) -> None:
        handler = self.server.connections.get(flow.client_conn.id)
        if handler is None:
            return
        io = handler.transports.get(flow.server_conn)
        if io is not None and isinstance(io.writer, asyncio.StreamWriter):
            io.writer.transport.abort()
        loop = asyncio.get_running_loop()
        for conn in (flow.client_conn, flow.server_conn):
            if conn.connected:
                loop.call_soon(handler.close_connection, conn)


class Reading:
    """Stops and resumes reading a flow's client connection: how a body streaming on credit
    waits for its next budget lease (gateway.dataplane.leases) without the gateway buffering
    what the sandbox goes on sending. The kernel's socket buffer and TCP's window hold the
    rest; what asyncio's reader already holds still arrives (bounded by its limit)."""

    def __init__(self, server: proxyserver.Proxyserver) -> None:
        self.server = server

    def __call__(self, flow: flow_.Flow, paused: bool) -> None:
        handler = self.server.connections.get(flow.client_conn.id)
        io = handler.transports.get(flow.client_conn) if handler is not None else None
        if io is None or not isinstance(io.writer, asyncio.StreamWriter):
            return
        transport = io.writer.transport
        if not isinstance(transport, asyncio.ReadTransport) or transport.is_closing():
            return
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()


def build_master(settings: Settings, state: GatewayState, *, tcp_port: int,
                 on_ready: Callable[[], None]) -> master.Master:
    """A proxy worker's mitmproxy: transparent TCP on `tcp_port`."""
    opts = options.Options()
    proxy = master.Master(opts)
    builtins = builtin_addons()
    server = next(a for a in builtins if isinstance(a, proxyserver.Proxyserver))
    state.cut = Cutter(server)
    state.pause = Reading(server)
    # ClientCert after TlsConfig: it moves the upstream TLS connection TlsConfig built to the
    # context of the rule's client certificate (addons.client_cert).
    proxy.addons.add(Sandgate(pipeline(state)), *builtins, ClientCert(state),
                     Ready(on_ready, tcp_port))
    updates: dict[str, object] = {
        "mode": [f"transparent@{tcp_port}"],
        "connection_strategy": "lazy",
        "confdir": str(settings.ca_dir),
        "http2": True,
        "rawtcp": True,
        # No body_size_limit: mitmproxy would kill a body of a known larger length before
        # the addons can stream it. The Bodies addon bounds every body (held ones to a window).
    }
    # The host's trust store, not certifi's (mitmproxy's default): gateway.dataplane.trust.
    trust = upstream_trust(settings.ca_dir, settings.upstream_ca)
    updates["ssl_verify_upstream_trusted_ca"] = str(trust.ca_file) if trust.ca_file else None
    updates["ssl_verify_upstream_trusted_confdir"] = trust.ca_dir
    opts.update(**updates)
    return proxy
