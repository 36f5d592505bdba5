"""TcpPolicy: a stream that is not HTTP is decided on name and port at its start; raw TCP
needs a rule that names it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from gateway.dataplane.addons.tcp_policy import TcpPolicy
from gateway.dataplane.state import METADATA_KEY
from tests.doubles import data_plane
from tests.gateway.dataplane.addons.conftest import connect

POLICY = """
version: 1
name: p
rules:
  - {id: db, hosts: [db.example.test], ports: [5432], protocols: [tcp]}
  - {id: web, hosts: [web.example.test]}
  - {id: feed, hosts: [feed.example.test], ports: [443], protocols: [https, tls]}
"""
ANSWERS = {"db.example.test": ["203.0.113.20"], "web.example.test": ["203.0.113.21"],
           "feed.example.test": ["203.0.113.22"]}


@pytest.mark.parametrize(("name", "port", "tls", "allowed"), [
    ("db.example.test", 5432, False, True),
    ("db.example.test", 5433, False, False),     # another port
    ("web.example.test", 8080, False, False),    # raw TCP is not among a rule's defaults
    ("web.example.test", 443, True, False),      # nor is TLS that carries no HTTP
    ("feed.example.test", 443, True, True),      # unless a rule names it
])
def test_streams_are_decided_at_their_start(tmp_path: Path, name: str, port: int, tls: bool,
                                            allowed: bool) -> None:
    plane = data_plane(tmp_path, POLICY, answers=ANSWERS)
    conn = connect(plane, name, port, tls=tls)
    flow = tflow.ttcpflow(client_conn=conn)
    plane.state.conns[conn.id].permits.clear()
    asyncio.run(TcpPolicy(plane.state).tcp_start(flow))
    verdict = flow.metadata[METADATA_KEY]
    assert verdict.decision.allowed is allowed
    permits = plane.state.conns[conn.id].permits
    assert (str(permits[(name, port)].address) if allowed else permits) == \
        (ANSWERS[name][0] if allowed else {})
