"""An upstream that gives the credential it received back, every way an upstream might: the
bearer token of the request's Authorization header (what a gateway injected), encoded, in a
body (plain or compressed, with or without a length, small or large), a response header,
HTTP/2 trailers or WebSocket messages. The credential-confinement tests check that none of it
reaches the sandbox. Served by hypercorn (HTTP/1.1, HTTP/2 with trailers, WebSocket) in the
throw-away internet; every request it sees is logged with its headers and body.

    GET  /reveal?enc=E&where=W&size=N&compress=C&length=L
         E: raw b64-0 b64-1 b64-2 b64url-1 hex HEX pct pct-all spaced; W: body header trailer
    POST /echo-spaced          the request body, a space between every two bytes
    WS   /ws-reveal            the token (raw, base64, hex) in three messages, then echoes
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import brotli

try:
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]

type Scope = dict[str, Any]
type Receive = Callable[[], Awaitable[dict[str, Any]]]
type Send = Callable[[dict[str, Any]], Awaitable[None]]
type Write = Callable[..., None]


def encode(value: bytes, how: str) -> bytes:
    if how.startswith("b64"):
        prefix = b"x" * int(how[-1])
        encoded = base64.b64encode(prefix + value)
        return encoded.replace(b"+", b"-").replace(b"/", b"_") if "url" in how else encoded
    if how == "hex":
        return value.hex().encode()
    if how == "HEX":
        return value.hex().upper().encode()
    if how == "pct":
        return urllib.parse.quote(value, safe="").encode()
    if how == "pct-all":
        return "".join(f"%{b:02X}" for b in value).encode()
    if how == "spaced":
        return b" ".join(value[i:i + 1] for i in range(len(value)))
    return value


def compress(body: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(body)
    if how == "br":
        return bytes(brotli.compress(body))
    return bytes(zstd.compress(body))


def _token(scope: Scope) -> bytes:
    headers: dict[bytes, bytes] = dict(scope["headers"])
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    return token if scheme.lower() == b"bearer" else b""


async def _body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


def make_app(write: Write) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})
                if kind == "lifespan.shutdown":
                    return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["type"] == "websocket":
            write("reveal-ws", path=scope["path"], headers=headers)
            await _websocket(scope, receive, send, write)
            return
        body = await _body(receive)
        write("reveal", method=scope["method"], path=scope["path"],
              query=scope["query_string"].decode(), http_version=scope["http_version"],
              headers=headers, body=body.decode("latin-1")[:65536], body_len=len(body))
        if scope["path"] == "/echo-spaced":
            await _answer(send, encode(body, "spaced"), [])
            return
        query = dict(urllib.parse.parse_qsl(scope["query_string"].decode()))
        await _reveal(scope, send, query)

    return app


async def _answer(send: Send, body: bytes, headers: list[tuple[bytes, bytes]],
                  trailers: list[tuple[bytes, bytes]] | None = None,
                  length: bool = True, chunk: int = 65536) -> None:
    if length:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), *headers],
                "trailers": trailers is not None})
    for start in range(0, max(len(body), 1), chunk):
        await send({"type": "http.response.body", "body": body[start:start + chunk],
                    "more_body": start + chunk < len(body)})
    if trailers is not None:
        await send({"type": "http.response.trailers", "headers": trailers,
                    "more_trailers": False})


async def _reveal(scope: Scope, send: Send, query: dict[str, str]) -> None:
    form = encode(_token(scope), query.get("enc", "raw"))
    where, size = query.get("where", "body"), int(query.get("size", "100"))
    filler = b"." * (size // 2)
    body, headers, trailers = b"ok", [], None
    if where == "body":
        body = filler + form + filler
    elif where == "header":
        headers = [(b"x-reveal", form)]
    else:
        trailers = [(b"x-reveal", form)]
    if query.get("compress"):
        body = compress(body, query["compress"])
        headers = [*headers, (b"content-encoding", query["compress"].encode())]
    # hypercorn sends no trailers after a body of a given length
    length = query.get("length", "yes") == "yes" and trailers is None
    await _answer(send, body, headers, trailers, length=length)


async def _websocket(scope: Scope, receive: Receive, send: Send, write: Write) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    token = _token(scope)
    for how in ("raw", "b64-1", "hex"):
        await send({"type": "websocket.send", "text": encode(token, how).decode()})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text") or (message.get("bytes") or b"").decode("latin-1")
        write("reveal-ws-message", text=text)
        await send({"type": "websocket.send", "text": "echo:" + text})


def serve(write: Write, address: str, port: int, cert: str, key: str) -> None:
    """hypercorn on its own event loop, in a thread: HTTP/1.1 and HTTP/2 over TLS."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{address}:{port}"]
    config.certfile, config.keyfile = cert, key
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = config.errorlog = None
    app = make_app(write)
    async def run() -> None:
        # a shutdown trigger of our own: hypercorn would otherwise take the process's signals
        await hypercorn_serve(app, config,  # type: ignore[arg-type]
                              shutdown_trigger=asyncio.get_running_loop().create_future)

    threading.Thread(target=lambda: asyncio.run(run()), daemon=True).start()
    deadline = time.monotonic() + 10
    while True:      # ready once it accepts a connection
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
