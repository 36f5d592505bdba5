"""HTTP/1: nothing more is read from a client connection while one of its requests waits for
its answer.

mitmproxy's HTTP/1 server reads on behind a request in flight and keeps what it reads (the
next pipelined requests, or anything at all) in the connection's buffer until the answer is
out: a sandbox behind a slow upstream could pile up gigabytes in the worker that serves every
sandbox on it. A client that waits for its answer, as every HTTP/1 client does unless it
pipelines, loses nothing: once the answer is read, reading resumes and mitmproxy takes the
next request where it left off. HTTP/2 is not paused here (its streams must go on side by
side): an allowed HTTP/2 body streams on to its upstream as it comes (addons.bodies), a
refused one is answered or cut at its head (gateway.dataplane.denials).

The pause begins once the whole request has been read (`request` comes after a streamed body
too) and only while no answer has begun; it ends with the answer read (`response`), the
flow's error, a WebSocket's start, or the connection's end. The same ends a pause that
gateway.dataplane.denials began for a refused HTTP/2 request."""

from __future__ import annotations

from mitmproxy import connection, http

from gateway.dataplane.state import PAUSED_KEY, GatewayState


class OneAtATime:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def request(self, flow: http.HTTPFlow) -> None:
        http1 = flow.request.http_version.startswith("HTTP/1")
        if not http1 or flow.response is not None or flow.error is not None:
            return
        if self.state.hold.pause(flow.client_conn.id):
            flow.metadata[PAUSED_KEY] = True

    def response(self, flow: http.HTTPFlow) -> None:
        self._resume(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._resume(flow)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self._resume(flow)

    def client_disconnected(self, client: connection.Client) -> None:
        self.state.hold.forget(client.id)

    def _resume(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.pop(PAUSED_KEY, False):
            self.state.hold.resume(flow.client_conn.id)
