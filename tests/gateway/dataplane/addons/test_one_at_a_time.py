"""OneAtATime: an HTTP/1 request that has been read and waits for its answer pauses reading
its connection until the answer, an error, a WebSocket's start or the connection's end;
HTTP/2 and requests already answered are never paused. (The pause itself, on a real
mitmproxy with a slow upstream: tests/gateway/dataplane/test_proxy.py.)"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from gateway.dataplane.addons.one_at_a_time import OneAtATime
from tests.doubles import data_plane

POLICY = "version: 1\nname: p\n"


class Counting:
    """A Reading that counts what it was asked (the real one is dataplane.proxy.Pauser)."""

    def __init__(self) -> None:
        self.paused: dict[str, int] = {}
        self.forgotten: list[str] = []
        self.entered = 0         # holds (the context manager) entered, ever

    def __call__(self, client_id: str) -> AbstractContextManager[None]:
        self.entered += 1
        return nullcontext()

    def pause(self, client_id: str) -> bool:
        self.paused[client_id] = self.paused.get(client_id, 0) + 1
        return True

    def resume(self, client_id: str) -> None:
        self.paused[client_id] -= 1

    def forget(self, client_id: str) -> None:
        self.forgotten.append(client_id)


@pytest.fixture
def addon(tmp_path: Path) -> tuple[OneAtATime, Counting]:
    plane = data_plane(tmp_path, POLICY)
    reading = Counting()
    plane.state.hold = reading
    return OneAtATime(plane.state), reading


@pytest.mark.parametrize("end", ["response", "error", "websocket_start"])
def test_an_http1_request_pauses_its_connection_until_it_ends(
        addon: tuple[OneAtATime, Counting], end: str) -> None:
    one, reading = addon
    flow = tflow.tflow()
    one.request(flow)
    assert reading.paused == {flow.client_conn.id: 1}
    getattr(one, end)(flow)
    getattr(one, end)(flow)                 # a second end resumes nothing more
    assert reading.paused == {flow.client_conn.id: 0}


def test_http2_and_answered_requests_are_not_paused(addon: tuple[OneAtATime, Counting]) -> None:
    one, reading = addon
    h2 = tflow.tflow()
    h2.request.http_version = "HTTP/2.0"
    answered = tflow.tflow(resp=True)
    for flow in (h2, answered):
        one.request(flow)
        one.response(flow)
    assert reading.paused == {}


def test_a_closed_connection_is_forgotten(addon: tuple[OneAtATime, Counting]) -> None:
    one, reading = addon
    flow = tflow.tflow()
    one.request(flow)
    one.client_disconnected(flow.client_conn)
    assert reading.forgotten == [flow.client_conn.id]


def test_without_a_proxy_server_nothing_is_paused(tmp_path: Path) -> None:
    one = OneAtATime(data_plane(tmp_path, POLICY).state)
    flow = tflow.tflow()
    one.request(flow)
    one.response(flow)
    assert isinstance(flow, http.HTTPFlow) and "sandgate.paused" not in flow.metadata
