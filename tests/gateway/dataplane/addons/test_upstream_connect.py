"""UpstreamConnect: whatever the layers above decided, an upstream connection goes only to an
address vetted for the connection's name and port, with that name as SNI."""

from __future__ import annotations

from pathlib import Path

from mitmproxy import connection
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from gateway.dataplane.addons.upstream_connect import UpstreamConnect
from gateway.dataplane.upstream import Vetted
from tests.doubles import Plane, data_plane
from tests.gateway.dataplane.addons.conftest import connect

POLICY = "version: 1\nname: p\nrules:\n  - {id: api, hosts: [api.example.test]}\n"


def dial(plane: Plane, client: connection.Client, address: tuple[str, int]) -> connection.Server:
    server = tflow.tserver_conn()
    server.address = address
    server.sni = "whatever.example"
    UpstreamConnect(plane.state).server_connect(
        server_hooks.ServerConnectionHookData(server=server, client=client))
    return server


def test_only_the_vetted_address_is_dialed_with_the_dialed_name_as_sni(tmp_path: Path) -> None:
    import ipaddress
    plane = data_plane(tmp_path, POLICY)
    conn = connect(plane, "api.example.test")
    plane.state.conns[conn.id].permits[("api.example.test", 443)] = Vetted(
        "api.example.test", ipaddress.IPv4Address("203.0.113.10"))
    server = dial(plane, conn, ("203.0.113.10", 443))
    assert server.error is None
    assert (server.address, server.sni) == (("203.0.113.10", 443), "api.example.test")
    # the raw stream still names the synthetic address: mapped to the vetted one
    synthetic = dial(plane, conn, (plane.address_of("api.example.test"), 443))
    assert synthetic.address == ("203.0.113.10", 443)
    assert dial(plane, conn, ("203.0.113.66", 443)).error is not None   # anything else
    assert dial(plane, conn, ("203.0.113.10", 8443)).error is not None  # another port


def test_no_permit_no_connection(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY)
    conn = connect(plane, "api.example.test")
    assert dial(plane, conn, (plane.address_of("api.example.test"), 443)).error is not None
    stranger = tflow.tclient_conn()
    assert dial(plane, stranger, ("203.0.113.10", 443)).error is not None
