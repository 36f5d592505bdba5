"""mitmproxy embedded in each proxy worker: transparent mode for TCP, with the gateway's
addons first and only the built-in addons it needs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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


class Pauser:
    """Stops reading a client connection while one of its requests waits: held for approval
    (gateway.dataplane.authorize), or an HTTP/1 request waiting for its answer
    (addons.one_at_a_time).

    mitmproxy reads on while a hook or an upstream takes its time: HTTP/1 pipelined bytes
    pile up in the connection's buffer, a body and HTTP/2 DATA (acknowledged at once) in the
    held stream's event queue, all in the worker's memory. With the socket's reading paused,
    what the sandbox sends waits in its own socket buffers (TCP flow control) and the worker
    holds at most what it had read already. The whole connection waits: other HTTP/2 streams
    on it too (docs/POLICY.md). Nested pauses resume on the last."""

    def __init__(self, server: proxyserver.Proxyserver) -> None:
        self.server = server
        self.holds: dict[str, int] = {}

    @contextmanager
    def __call__(self, client_id: str) -> Iterator[None]:
        paused = self.pause(client_id)
        try:
            yield
        finally:
            if paused:
                self.resume(client_id)

    def pause(self, client_id: str) -> bool:
        """Stop reading; False when the connection is gone (nothing to resume then)."""
        io = self._io(client_id)
        if io is None:
            return False
        self.holds[client_id] = self.holds.get(client_id, 0) + 1
        io.transport.pause_reading()
        # The reader resumes a transport it paused itself (its buffer was full) once a read
        # drains it: it must not resume this pause, which is ours to end.
        io.reader._paused = False    # type: ignore[attr-defined]
        return True

    def resume(self, client_id: str) -> None:
        if client_id not in self.holds:
            return
        self.holds[client_id] -= 1
        if self.holds[client_id]:
            return
        del self.holds[client_id]
        io = self._io(client_id)
        if io is not None:
            io.transport.resume_reading()

    def forget(self, client_id: str) -> None:
        """The connection closed: its count goes (a pause it never ended included)."""
        self.holds.pop(client_id, None)

    def _io(self, client_id: str) -> _StreamIO | None:
        handler = self.server.connections.get(client_id)
        io = handler.transports.get(handler.client) if handler is not None else None
        if io is None or not isinstance(io.reader, asyncio.StreamReader) or \
                not isinstance(io.writer, asyncio.StreamWriter) or \
                not isinstance(io.writer.transport, asyncio.Transport):
            return None
        return _StreamIO(io.reader, io.writer.transport)


@dataclass(frozen=True, slots=True)
class _StreamIO:
    reader: asyncio.StreamReader
    transport: asyncio.Transport


def build_master(settings: Settings, state: GatewayState, *, tcp_port: int,
                 on_ready: Callable[[], None]) -> master.Master:
    """A proxy worker's mitmproxy: transparent TCP on `tcp_port`."""
    opts = options.Options()
    proxy = master.Master(opts)
    builtins = builtin_addons()
    server = next(a for a in builtins if isinstance(a, proxyserver.Proxyserver))
    state.cut = Cutter(server)
    state.hold = Pauser(server)
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
