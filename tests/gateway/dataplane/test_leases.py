"""Streams lease their bytes from the one ledger: parallel uploads of unknown length, raw TCP
streams, together stop at the budget; a stream on credit stops being read until its next
grant, and one whose grant falls short is cut, the credit it used charged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import http, tcp
from mitmproxy.test import tflow

from gateway.dataplane.addons.rate_meter import RateMeter
from gateway.dataplane.addons.tcp_policy import TcpPolicy
from gateway.dataplane.bodies import head_size
from gateway.dataplane.leases import CHUNK
from gateway.dataplane.state import METADATA_KEY, NotPaused
from tests.doubles import Plane, data_plane
from tests.gateway.dataplane.addons.conftest import Through, connect, request

KIB = 1024


def policy(bytes_up: int) -> str:
    return f"""
version: 1
name: b
rules:
  - {{id: up, hosts: [up.example.test], protocols: [https, tcp],
      budget: {{bytes_up: {bytes_up}, per: 1h}}}}
"""


def plane_with(tmp_path: Path, bytes_up: int) -> Plane:
    return data_plane(tmp_path, policy(bytes_up), answers={"up.example.test": ["203.0.113.10"]})


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Plane]:
    plane = plane_with(tmp_path, 200 * KIB)
    yield plane
    plane.close()


def upload(plane: Plane) -> http.HTTPFlow:
    return request(connect(plane, "up.example.test"), "POST", "https://up.example.test/",
                   headers=[("transfer-encoding", "chunked")])


def spent(plane: Plane) -> int:
    [usage] = plane.authority.ledger.usage()
    return int(usage["bytes_up"])


def end(plane: Plane, flow: http.HTTPFlow) -> None:
    meter = RateMeter(plane.state)
    if flow.error is not None or flow in Through(plane).cut:
        meter.error(flow)
    else:
        flow.response = http.Response.make(200, b"ok")
        meter.response(flow)


def test_parallel_uploads_together_stop_at_the_budget(small: Plane) -> None:
    """Each upload used to be told what was left when it started, and both sent all of it."""
    through = Through(small)
    flows = [upload(small), upload(small)]
    chunks = [b"x" * (20 * KIB)] * 8            # 160 KiB each, 320 KiB together

    async def both() -> list[bytes]:
        return list(await asyncio.gather(*(through.request_async(f, chunks) for f in flows)))

    sent = asyncio.run(both())
    heads = sum(head_size(f.request) for f in flows)
    # together, what was left and no more (less than one chunk of the upload: a piece
    # too small for the next one is all that is left); each got a share
    assert 200 * KIB - heads - 2 * 20 * KIB < sum(map(len, sent)) <= 200 * KIB - heads
    assert min(map(len, sent)) > 0
    assert through.cut and all(str(f.metadata[METADATA_KEY].decision.reason) ==
                               "budget_exceeded" for f in through.cut)
    for flow in flows:
        end(small, flow)
    assert spent(small) == heads + sum(map(len, sent)) <= 200 * KIB


def test_parallel_tcp_streams_wait_for_their_lease_and_stop_at_the_budget(
        small: Plane) -> None:
    meter = RateMeter(small.state)
    flows = [tflow.ttcpflow(client_conn=connect(small, "up.example.test", 9000, tls=False))
             for _ in range(2)]

    async def stream(flow: tcp.TCPFlow) -> int:
        await TcpPolicy(small.state).tcp_start(flow)
        if not flow.metadata[METADATA_KEY].decision.allowed:
            return 0        # refused at its start: never connected
        sent = 0
        for _ in range(8):
            if not flow.live:       # cut: mitmproxy reads no more of it
                break
            flow.messages.append(tcp.TCPMessage(True, b"y" * (20 * KIB)))
            await meter.tcp_message(flow)
            sent += len(flow.messages[-1].content)
        return sent

    async def both() -> list[int]:
        return list(await asyncio.gather(*(stream(f) for f in flows)))

    sent = asyncio.run(both())
    # messages wait for their grant, never owe: the budget, less than one message
    assert 200 * KIB - 2 * 20 * KIB < sum(sent) <= 200 * KIB
    assert min(sent) > 0 and [f.live for f in flows].count(False) >= 1
    for flow in flows:
        meter.tcp_end(flow)
    assert spent(small) == sum(sent)             # the unused leases came back


class Pauses(NotPaused):
    """Records the pauses and resumes of client connections (dataplane.proxy.Pauser's)."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def pause(self, client_id: str) -> bool:
        self.calls.append(True)
        return True

    def resume(self, client_id: str) -> None:
        self.calls.append(False)


@pytest.mark.parametrize(("budget", "cut"), [(3 * CHUNK, False), (CHUNK + 100 * KIB, True)])
def test_a_body_on_credit_stops_being_read_until_its_next_grant(
        tmp_path: Path, budget: int, cut: bool) -> None:
    """One read that passes the lease before the next grant came: it goes on credit (at most
    a chunk), the client connection is paused, and resumed when the answer comes; an answer
    that does not cover the credit cuts the stream and charges what it sent."""
    plane = plane_with(tmp_path, budget)
    through, pauses = Through(plane), Pauses()
    plane.state.hold = pauses
    flow = upload(plane)
    big = b"z" * (CHUNK + 200 * KIB)
    sent = asyncio.run(through.request_async(flow, [big, b"tail"]))
    assert pauses.calls == [True, False]
    assert (flow in through.cut) is cut
    assert sent == (big if cut else big + b"tail")      # the credit went; the tail did not
    end(plane, flow)
    assert spent(plane) == head_size(flow.request) + len(sent)   # over the budget when cut
    plane.close()


def test_a_read_past_a_whole_chunk_of_credit_is_refused(tmp_path: Path) -> None:
    plane = plane_with(tmp_path, 10 * CHUNK)
    through = Through(plane)
    flow = upload(plane)
    sent = asyncio.run(through.request_async(flow, [b"w" * (2 * CHUNK + 1)]))
    assert sent == b"" and through.cut == [flow]
    end(plane, flow)
    assert spent(plane) == head_size(flow.request)      # its unused lease came back
    plane.close()


def test_a_body_of_announced_length_is_reserved_and_leases_nothing_more(tmp_path: Path) -> None:
    plane = plane_with(tmp_path, 10 * CHUNK)
    through = Through(plane)
    body = b"k" * (2 * CHUNK)           # over the scan window: it streams
    flow = request(connect(plane, "up.example.test"), "POST", "https://up.example.test/",
                   body=body)
    sent = asyncio.run(through.request_async(flow, [body[:CHUNK], body[CHUNK:]]))
    assert sent == body and through.cut == []
    assert spent(plane) == head_size(flow.request) + len(body)     # no lease held beside it
    plane.close()


def test_what_is_given_back_after_the_window_turned_is_never_more_than_it_was_charged() -> None:
    """A stream leased in one window and again in the next: its unused bytes go back to the
    new window only up to what the new window was charged (the old window's grant stays
    counted), so other traffic of the new window is never undercounted."""
    from gateway.dataplane.leases import CHUNK, StreamLease
    from gateway.processes.budgets import SANDBOX, Cap, Ledger

    now = [3600 * 1000 + 3590.0]        # ten seconds before an hour's window ends
    ledger = Ledger(clock=lambda: now[0])
    cap = Cap(SANDBOX, None, 100 * CHUNK, None, 3600)

    class Direct:                       # the coordinator's calls, on the ledger itself
        async def lease(self, s: str, p: str, caps: list[Cap], want: int) -> object:
            return ledger.lease(s, p, caps, want)

        def unlease(self, s: str, p: str, caps: list[Cap], size: int, at: float) -> None:
            ledger.give_back(s, p, caps, size, at)

        def spend(self, s: str, p: str, caps: list[Cap], size: int) -> None:
            ledger.spend(s, p, caps, size)

    async def scenario() -> int:
        admitted = ledger.admit("sb", "p", [cap], 0, CHUNK)
        lease = StreamLease(Direct(), "sb", "p", (cap,), granted=admitted.leased,  # type: ignore[arg-type]
                            at=admitted.at, spent=admitted.spent)
        now[0] += 20                                    # the window turns
        ledger.admit("sb", "p", [cap], 5 * CHUNK, 0)    # 5 MiB of other traffic in it
        lease.take(CHUNK // 2 + 1)                      # asks for its next lease, in it
        while lease.asking is not None:
            await asyncio.sleep(0)
        lease.end()
        [usage] = [u for u in ledger.usage() if u["window_start"] == 3600 * 1001]
        return int(usage["bytes_up"])

    # the stream's bytes were granted, and counted, in the old window; the new one keeps
    # all of the other traffic (it was left with 4.5 MiB when the whole remainder came back)
    assert asyncio.run(scenario()) == 5 * CHUNK
