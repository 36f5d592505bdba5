"""Flows for the addon tests: a sandbox's connection through Identify, then requests on it."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable, Iterable, Iterator

import pytest
from mitmproxy import connection, http
from mitmproxy.test import taddons, tflow

from gateway.dataplane.addons.identify import Identify
from tests.doubles import Plane, client


@pytest.fixture(autouse=True)
def tctx() -> Iterator[taddons.context]:
    """mitmproxy's addon context (its log handler among others), one per test."""
    with taddons.context() as context:
        yield context


def connect(plane: Plane, name: str | None, port: int = 443, *,
            address: str | None = None, tls: bool | None = None) -> connection.Client:
    """The sandbox dials `name`'s synthetic address (or `address`) and the gateway knows it."""
    dialed = plane.address_of(name) if name else (address or "203.0.113.9")
    conn = client(dialed=(dialed, port), tls=port == 443 if tls is None else tls,
                  sni=name if port == 443 else None)
    asyncio.run(Identify(plane.state).client_connected(conn))
    assert conn.error is None, conn.error
    return conn


def request(conn: connection.Client, method: str, url: str, *,
            headers: list[tuple[str, str]] | None = None, body: bytes = b"",
            http2: bool = False, absolute: bool = False,
            target: str | None = None) -> http.HTTPFlow:
    """A request on `conn`, with the Host (or :authority) of `url`; `target` replaces the
    path (and query) it sends, verbatim."""
    parts = urllib.parse.urlsplit(url)
    if target is None:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
    fields = [] if http2 else [("host", parts.netloc)]
    fields += headers or []
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in fields):
        fields.append(("content-length", str(len(body))))
    req = http.Request(
        host=parts.hostname or "", port=parts.port or (443 if parts.scheme == "https" else 80),
        method=method.encode(), scheme=parts.scheme.encode(),
        authority=parts.netloc.encode() if http2 or absolute else b"",
        path=target.encode(), http_version=b"HTTP/2.0" if http2 else b"HTTP/1.1",
        headers=http.Headers([(k.encode(), v.encode()) for k, v in fields]), content=body,
        trailers=None, timestamp_start=1.0, timestamp_end=None)
    return tflow.tflow(client_conn=conn, req=req)


class Through:
    """Runs a flow through the HTTP part of the pipeline as mitmproxy would: the head, then
    the body held whole or fed to its stream callable in `chunks`, the same for the
    response. `cut` lists the flows whose connections the gateway cut."""

    def __init__(self, plane: Plane) -> None:
        from gateway.dataplane.addons.bodies import Bodies
        from gateway.dataplane.addons.credentials import Credentials
        from gateway.dataplane.addons.http_policy import HttpPolicy
        from gateway.dataplane.addons.mcp_on_demand import McpOnDemand

        self.plane = plane
        self.cut: list[http.HTTPFlow] = []
        plane.state.cut = self.cut.append
        self.policy = HttpPolicy(plane.state)
        self.credentials = Credentials(plane.state)
        self.bodies = Bodies(plane.state, self.credentials.trip)
        self.mcp = McpOnDemand(plane.state)     # as in the pipeline

    def request(self, flow: http.HTTPFlow, chunks: list[bytes] | None = None) -> bytes:
        """What goes upstream of the body (held: the request's content)."""
        return asyncio.run(self.request_async(flow, chunks))

    async def request_async(self, flow: http.HTTPFlow,
                            chunks: list[bytes] | None = None) -> bytes:
        """The same, on the caller's event loop (as mitmproxy calls stream callables: on the
        loop, between reads)."""
        await self.policy.requestheaders(flow)
        if flow.response is not None:
            return b""
        await self.credentials.requestheaders(flow)
        self.bodies.requestheaders(flow)
        self.mcp.requestheaders(flow)
        if flow.response is not None or flow.error is not None:
            return b""
        sent = b""
        stream = flow.request.stream
        if callable(stream):
            sent = await streamed_async(stream, chunks or [flow.request.raw_content or b""])
            flow.request.raw_content = None
        flow.request.timestamp_end = flow.request.timestamp_start + 0.001  # the body is in
        self.credentials.request(flow)
        await self.bodies.request(flow)
        self.mcp.request(flow)
        if flow.response is not None:
            return b""
        if not callable(stream):
            sent = flow.request.raw_content or b""
        return sent

    def response(self, flow: http.HTTPFlow, response: http.Response,
                 chunks: list[bytes] | None = None) -> bytes:
        """What reaches the sandbox of the response body."""
        flow.response = response
        self.credentials.responseheaders(flow)
        self.bodies.responseheaders(flow)
        self.mcp.responseheaders(flow)
        got = b""
        stream = flow.response.stream
        if callable(stream):
            got = streamed(stream, chunks or [response.raw_content or b""])
            flow.response.raw_content = None
        self.credentials.response(flow)
        self.bodies.response(flow)
        self.mcp.response(flow)
        if not callable(stream):
            got = flow.response.raw_content or b""
        return got


def streamed(stream: Callable[[bytes], bytes | Iterable[bytes]], chunks: list[bytes]) -> bytes:
    """What mitmproxy sends on of a streamed body fed in `chunks` (then the empty call that
    ends it)."""
    return b"".join(_sent(stream, chunk) for chunk in [*chunks, b""])


async def streamed_async(stream: Callable[[bytes], bytes | Iterable[bytes]],
                         chunks: list[bytes]) -> bytes:
    """`streamed`, each chunk a read of its own: the event loop runs between them (the
    answers to a stream's budget questions arrive there)."""
    sent = b""
    for chunk in [*chunks, b""]:
        sent += _sent(stream, chunk)
        await asyncio.sleep(0)
    return sent


def _sent(stream: Callable[[bytes], bytes | Iterable[bytes]], chunk: bytes) -> bytes:
    """mitmproxy sends each piece a stream callable returns as it is, one HTTP/1 chunk each
    when the body is chunked: an empty piece for a chunk of data would be the terminating
    chunk, ending the body early as if complete. That is refused here, for every stream."""
    out = stream(chunk)
    pieces = [out] if isinstance(out, bytes) else list(out)
    if chunk and b"" in pieces:
        raise AssertionError("a stream callable returned an empty piece for a chunk of "
                             "data: an HTTP/1 chunked body would end there")
    return b"".join(pieces)
