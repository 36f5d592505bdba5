"""ClientCert: after mitmproxy's TlsConfig has built the upstream TLS connection, the
connection's client certificate (chain and key) is presented, and the server is still
verified against the same trust and name. A real handshake, in memory, with a Python TLS
server that requires a client certificate under the client root."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mitmproxy import connection, tls
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.proxy import context
from mitmproxy.test import taddons
from OpenSSL import SSL

from gateway.dataplane.addons.client_cert import ClientCert
from sandbox_net.testnet import certs
from sandbox_net.testnet.mtls import ClientPki, make_client_pki
from tests.doubles import Plane, data_plane
from tests.gateway.dataplane.addons.conftest import connect
from vault import providers

POLICY = """
version: 1
name: p
rules:
  - {id: mtls, hosts: [mtls.example.test], inject: [{secret: CERT, as: mtls}]}
"""
NAME = "mtls.example.test"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> certs.TestCA:
    return certs.make_ca(tmp_path_factory.mktemp("ca"), [NAME], [])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClientPki:
    return make_client_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def plane(tmp_path: Path, pki: ClientPki) -> Iterator[Plane]:
    plane = data_plane(tmp_path, POLICY, answers={NAME: ["203.0.113.10"]},
                       secrets={"CERT": "-"})
    assert plane.vault is not None
    providers.store(plane.vault, "CERT", providers.parse("mtls_client_cert", {
        "certificate": pki.chain.read_text(), "key": pki.key.read_text()}))
    yield plane
    plane.close()


def handshake(plane: Plane, client: connection.Client, ca: certs.TestCA,
              pki: ClientPki, server_name: str = NAME) -> ssl.SSLObject:
    """Start upstream TLS as mitmproxy would (TlsConfig, then ClientCert), and run it
    against a server that requires a client certificate; the server's side, done."""
    server = connection.Server(address=("203.0.113.10", 443), sni=server_name)
    with taddons.context(TlsConfig()) as tctx:
        tctx.options.update(ssl_verify_upstream_trusted_ca=str(ca.ca_cert))
        data = tls.TlsData(server, context.Context(client, tctx.options))
        tctx.master.addons.get("tlsconfig").tls_start_server(data)
        ClientCert(plane.state).tls_start_server(data)
    assert data.ssl_conn is not None
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(ca.server_cert, ca.server_key)
    serving.load_verify_locations(pki.ca)
    serving.verify_mode = ssl.CERT_REQUIRED
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    peer = serving.wrap_bio(incoming, outgoing, server_side=True)
    client_done = server_done = False
    for _ in range(20):
        client_done = client_done or _step(data.ssl_conn.do_handshake, SSL.WantReadError)
        incoming.write(_pending(data.ssl_conn))
        server_done = server_done or _step(peer.do_handshake, ssl.SSLWantReadError)
        if outgoing.pending:
            data.ssl_conn.bio_write(outgoing.read())
        if client_done and server_done:
            return peer
    raise AssertionError("the handshake did not finish")


def _step(handshake: Callable[[], object], want: type[Exception]) -> bool:
    try:
        handshake()
    except want:
        return False
    return True


def _pending(conn: SSL.Connection) -> bytes:
    try:
        return conn.bio_read(65536)
    except SSL.WantReadError:
        return b""


def test_the_connections_certificate_is_presented(plane: Plane, ca: certs.TestCA,
                                                  pki: ClientPki) -> None:
    client = connect(plane, NAME)
    state = plane.state.conns[client.id]
    state.client_cert, state.client_cert_fixed = "CERT", True
    peer = handshake(plane, client, ca, pki)
    subject = dict(item[0] for item in peer.getpeercert()["subject"])
    assert subject["commonName"] == pki.subject    # the chain made it verify


def test_a_connection_without_one_presents_none(plane: Plane, ca: certs.TestCA,
                                                pki: ClientPki) -> None:
    client = connect(plane, NAME)
    with pytest.raises(ssl.SSLError, match=r"PEER_DID_NOT_RETURN_A_CERTIFICATE|certificate"):
        handshake(plane, client, ca, pki)


def test_the_server_is_still_verified_by_name(plane: Plane, ca: certs.TestCA,
                                              pki: ClientPki) -> None:
    client = connect(plane, NAME)
    state = plane.state.conns[client.id]
    state.client_cert, state.client_cert_fixed = "CERT", True
    with pytest.raises(SSL.Error, match="certificate verify failed"):
        handshake(plane, client, ca, pki, server_name="other.example.test")
