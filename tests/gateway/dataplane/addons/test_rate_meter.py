"""RateMeter: the bytes of allowed requests and streams are charged to their rule's
bytes-per-minute budget; a rule in debt admits nothing more."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mitmproxy import http
from mitmproxy.test import tflow

from gateway.dataplane.addons.http_policy import HttpPolicy
from gateway.dataplane.addons.rate_meter import RateMeter
from tests.doubles import data_plane
from tests.gateway.dataplane.addons.conftest import connect, request

POLICY = """
version: 1
name: p
rules:
  - {id: up, hosts: [up.example.test], limits: {bytes_per_minute: 1000}}
"""


def test_bytes_over_the_budget_refuse_the_next_request(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY, answers={"up.example.test": ["203.0.113.30"]})
    conn = connect(plane, "up.example.test")
    policy, meter = HttpPolicy(plane.state), RateMeter(plane.state)
    first = request(conn, "POST", "https://up.example.test/", body=b"x" * 1500)
    asyncio.run(policy.requestheaders(first))
    assert first.response is None
    first.response = http.Response.make(200, b"ok")
    meter.response(first)
    second = request(conn, "GET", "https://up.example.test/")
    asyncio.run(policy.requestheaders(second))
    assert second.response is not None and second.response.status_code == 429


def test_stream_bytes_are_charged_too(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY.replace("up.example.test]", "up.example.test], "
                                                "protocols: [tcp]"),
                       answers={"up.example.test": ["203.0.113.30"]})
    conn = connect(plane, "up.example.test", 9000, tls=False)
    from gateway.dataplane.addons.tcp_policy import TcpPolicy
    flow = tflow.ttcpflow(client_conn=conn)
    asyncio.run(TcpPolicy(plane.state).tcp_start(flow))
    flow.messages[-1].content = b"y" * 2000
    RateMeter(plane.state).tcp_message(flow)
    bucket = plane.authority.limiter
    assert not bucket.admit(plane.sandbox.id, "up", plane.sandbox.policy.rules[0].spec.limits)
