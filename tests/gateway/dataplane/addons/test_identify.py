"""Identify: a connection's source address names its sandbox; anything else is refused
before a byte is read, and every refusal is a row."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.dataplane.addons.identify import Identify
from tests.doubles import client, data_plane

POLICY = """
version: 1
name: p
limits: {connections: 2}
rules:
  - {id: api, hosts: [api.example.test], ports: [443]}
"""


def test_an_unknown_source_is_refused_and_audited(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY)
    addon = Identify(plane.state)
    stranger = client("10.77.9.9")
    asyncio.run(addon.client_connected(stranger))
    assert stranger.error == "sandgate: unknown source"
    assert stranger.id not in plane.state.conns
    (row,) = plane.rows
    assert (row["reason"], row["sandbox_id"], row["decision"]) == \
        ("unknown_sandbox", None, "deny")


def test_a_sandbox_connection_knows_the_name_behind_the_dialed_address(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY)
    addon = Identify(plane.state)
    conn = client(dialed=(plane.address_of("api.example.test"), 443))
    asyncio.run(addon.client_connected(conn))
    known = plane.state.conns[conn.id]
    assert (known.name, known.dialed_port, known.sandbox.id) == ("api.example.test", 443,
                                                                 plane.sandbox.id)
    assert plane.authority.open_connections(plane.sandbox.id) == 1
    assert plane.rows == []


def test_an_address_the_dns_never_gave_has_no_name(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY)
    addon = Identify(plane.state)
    conn = client(dialed=("203.0.113.7", 443))
    asyncio.run(addon.client_connected(conn))
    assert plane.state.conns[conn.id].name is None
    assert plane.state.conns[conn.id].target == "203.0.113.7"


def test_connections_over_the_limit_are_refused(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY)
    addon = Identify(plane.state)
    conns = [client() for _ in range(3)]
    for conn in conns:
        asyncio.run(addon.client_connected(conn))
    assert [c.error for c in conns] == [None, None, "sandgate: connection limit"]
    assert [r["reason"] for r in plane.rows] == ["connection_limit"]
    addon.client_disconnected(conns[0])
    retry = client()
    asyncio.run(addon.client_connected(retry))
    assert retry.error is None                      # a closed connection frees its place


def test_a_connection_closed_before_any_data_still_gets_a_row(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY)
    addon = Identify(plane.state)
    conn = client(dialed=(plane.address_of("api.example.test"), 443))
    asyncio.run(addon.client_connected(conn))
    addon.client_disconnected(conn)
    (row,) = plane.rows
    assert (row["protocol"], row["host"], row["error"]) == \
        ("tcp", "api.example.test", "closed before sending data")
    assert plane.authority.open_connections(plane.sandbox.id) == 0
