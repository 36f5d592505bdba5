"""Flows for the addon tests: a sandbox's connection through Identify, then requests on it."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Iterator

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
            http2: bool = False, absolute: bool = False) -> http.HTTPFlow:
    """A request on `conn`, with the Host (or :authority) of `url`."""
    parts = urllib.parse.urlsplit(url)
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
