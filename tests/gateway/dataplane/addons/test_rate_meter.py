"""RateMeter: the bytes of allowed requests and streams are charged to their rule's
bytes-per-minute budget; a rule in debt admits nothing more."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mitmproxy import http, tcp
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
    asyncio.run(RateMeter(plane.state).tcp_message(flow))
    bucket = plane.authority.limiter
    assert not bucket.admit(plane.sandbox.id, "up", plane.sandbox.policy.rules[0].spec.limits)


BUDGETED = """
version: 1
name: p
rules:
  - {id: up, hosts: [up.example.test], protocols: [tcp, https], budget: {bytes_up: 1000, per: 1h}}
"""


def test_a_stream_is_cut_before_the_bytes_that_pass_its_budget(tmp_path: Path) -> None:
    from gateway.dataplane.addons.tcp_policy import TcpPolicy
    from gateway.dataplane.state import METADATA_KEY

    plane = data_plane(tmp_path, BUDGETED, answers={"up.example.test": ["203.0.113.30"]})
    meter = RateMeter(plane.state)
    flow = tflow.ttcpflow(client_conn=connect(plane, "up.example.test", 9000, tls=False))
    asyncio.run(TcpPolicy(plane.state).tcp_start(flow))
    for from_client, size in ((True, 600), (False, 5000), (True, 500)):
        flow.messages.append(tcp.TCPMessage(from_client, b"y" * size))
        asyncio.run(meter.tcp_message(flow))
        assert flow.live == (size != 500)
    assert [len(m.content) for m in flow.messages[-3:]] == [600, 5000, 0]
    assert str(flow.metadata[METADATA_KEY].decision.reason) == "budget_exceeded"
    [usage] = plane.authority.ledger.usage()
    assert (usage["bytes_up"], usage["requests"]) == (1000, 1)  # all it could lease
    meter.tcp_end(flow)
    [usage] = plane.authority.ledger.usage()
    assert (usage["bytes_up"], usage["requests"]) == (600, 1)   # what it did not send, back


def test_websocket_messages_count_against_the_upgrades_budget(tmp_path: Path) -> None:
    from mitmproxy import websocket

    plane = data_plane(tmp_path, BUDGETED, answers={"up.example.test": ["203.0.113.30"]})
    flow = request(connect(plane, "up.example.test"), "GET", "https://up.example.test/ws")
    asyncio.run(HttpPolicy(plane.state).requestheaders(flow))
    assert flow.response is None
    flow.websocket = websocket.WebSocketData()
    meter = RateMeter(plane.state)
    for size, from_client in ((900, True), (5000, False), (200, True)):
        flow.websocket.messages.append(
            websocket.WebSocketMessage(2, from_client, b"w" * size))
        asyncio.run(meter.websocket_message(flow))
    sent, answer, over = flow.websocket.messages
    assert not sent.dropped and not answer.dropped and over.dropped and not flow.live


def test_a_stream_waiting_for_its_next_lease_is_not_read_meanwhile(tmp_path: Path) -> None:
    """While a stream's hook waits for a grant, mitmproxy would read on and queue what the
    sandbox sends: the connection's reading is paused for the wait (and only then)."""
    from gateway.dataplane.addons.tcp_policy import TcpPolicy
    from tests.gateway.dataplane.addons.test_one_at_a_time import Counting

    plane = data_plane(tmp_path, BUDGETED.replace("1000", "10000000"),
                       answers={"up.example.test": ["203.0.113.30"]})
    reading = Counting()
    plane.state.hold = reading
    meter = RateMeter(plane.state)
    flow = tflow.ttcpflow(client_conn=connect(plane, "up.example.test", 9000, tls=False))
    asyncio.run(TcpPolicy(plane.state).tcp_start(flow))
    paused: list[int] = []
    for size in (10, 2 << 20):       # within the first grant; then past it
        flow.messages.append(tcp.TCPMessage(True, b"y" * size))
        before = reading.entered
        asyncio.run(meter.tcp_message(flow))
        paused.append(reading.entered - before)
    assert flow.live and paused == [0, 1]
