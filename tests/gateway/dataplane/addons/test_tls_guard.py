"""TlsGuard: the ClientHello's SNI must name the host behind the dialed address; a real
ClientHello (made by Python's ssl module) is the input."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from mitmproxy import options, tls
from mitmproxy.proxy import context
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.test import tflow

from gateway.dataplane.addons.identify import Identify
from gateway.dataplane.addons.tls_guard import TlsGuard
from tests.doubles import Plane, client, data_plane

POLICY = """
version: 1
name: p
rules:
  - {id: api, hosts: [api.example.test, other.example.test], ports: [443]}
"""


def client_hello(sni: str | None) -> tls.ClientHello:
    """The ClientHello a TLS client sends for `sni` (None: none at all)."""
    ctx = ssl.create_default_context()
    if sni is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    session = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        session.do_handshake()
    hello = parse_client_hello(outgoing.read())
    assert hello is not None
    return hello


def hello_on(plane: Plane, name: str | None, sni: str | None) -> tls.ClientHelloData:
    dialed = plane.address_of(name) if name else "203.0.113.9"
    conn = client(dialed=(dialed, 443), sni=sni)
    asyncio.run(Identify(plane.state).client_connected(conn))
    data = tls.ClientHelloData(context.Context(conn, options.Options()), client_hello(sni))
    data.context.server = tflow.tserver_conn()
    TlsGuard(plane.state).tls_clienthello(data)
    return data


@pytest.mark.parametrize(("sni", "reason"), [
    ("api.example.test", None),
    ("API.Example.Test.", None),                # the same name, spelt otherwise
    ("other.example.test", "sni_mismatch"),     # allowed too, but not the dialed one
    ("evil.example", "sni_mismatch"),
    (None, "missing_sni"),
])
def test_sni_must_name_the_dialed_host(tmp_path: Path, sni: str | None,
                                       reason: str | None) -> None:
    plane = data_plane(tmp_path, POLICY)
    data = hello_on(plane, "api.example.test", sni)
    conn = plane.state.conns[data.context.client.id]
    if reason is None:
        assert conn.refused is None and not data.ignore_connection and plane.rows == []
        return
    assert conn.refused is not None and str(conn.refused.reason) == reason
    assert data.ignore_connection                      # handed to a layer that dials nothing
    (row,) = plane.rows
    assert (row["reason"], row["protocol"], row["sni"]) == (reason, "tls", sni)


def test_an_ip_literal_is_left_to_the_address_rules(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY)
    data = hello_on(plane, None, "anything.example")
    assert plane.state.conns[data.context.client.id].refused is None
