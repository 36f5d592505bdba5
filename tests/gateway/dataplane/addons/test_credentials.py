"""Credentials: a placeholder becomes the real value only on the hosts its rule binds it to;
anywhere else it trips the wire; the real value coming back is scrubbed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import http

from gateway.dataplane.addons.credentials import Credentials
from gateway.dataplane.addons.http_policy import HttpPolicy
from tests.doubles import Plane, data_plane
from tests.gateway.dataplane.addons.conftest import connect, request

POLICY = """
version: 1
name: p
rules:
  - id: api
    hosts: [api.example.test]
    protocols: [https]
    inject: [{secret: TOKEN, as: bearer}]
  - {id: other, hosts: [other.example.test]}
"""
REAL = "real-token-value-0123456789"
ANSWERS = {"api.example.test": ["203.0.113.10"], "other.example.test": ["203.0.113.11"]}


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    plane = data_plane(tmp_path, POLICY, answers=ANSWERS, secrets={"TOKEN": REAL})
    yield plane
    plane.close()


def through(plane: Plane, flow: http.HTTPFlow) -> http.HTTPFlow:
    asyncio.run(HttpPolicy(plane.state).requestheaders(flow))
    if flow.response is None:
        Credentials(plane.state).request(flow)
    return flow


def test_the_bound_host_gets_the_real_value(plane: Plane) -> None:
    placeholder = plane.sandbox.secrets["TOKEN"]
    flow = through(plane, request(connect(plane, "api.example.test"), "GET",
                                  "https://api.example.test/",
                                  headers=[("authorization", f"Bearer {placeholder}")]))
    assert flow.response is None
    assert flow.request.headers["authorization"] == f"Bearer {REAL}"


def test_a_placeholder_to_another_host_trips_the_wire(plane: Plane) -> None:
    placeholder = plane.sandbox.secrets["TOKEN"]
    flow = through(plane, request(connect(plane, "other.example.test"), "POST",
                                  "https://other.example.test/", body=placeholder.encode()))
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-sandgate-reason"] == "secret_exfil_attempt"
    assert REAL not in flow.request.get_text()
    assert plane.sandbox.quarantined


def test_the_real_value_echoed_back_is_scrubbed(plane: Plane) -> None:
    placeholder = plane.sandbox.secrets["TOKEN"]
    flow = through(plane, request(connect(plane, "api.example.test"), "GET",
                                  "https://api.example.test/",
                                  headers=[("authorization", f"Bearer {placeholder}")]))
    flow.response = http.Response.make(200, f"you sent {REAL}", {"x-echo": REAL})
    flow.response.encode("gzip")
    assert REAL.encode() not in (flow.response.raw_content or b"")   # compressed on the wire
    Credentials(plane.state).response(flow)
    assert flow.response.get_text() == f"you sent {placeholder}"
    assert flow.response.headers["x-echo"] == placeholder


def test_a_response_that_cannot_be_checked_is_refused(plane: Plane) -> None:
    placeholder = plane.sandbox.secrets["TOKEN"]
    flow = through(plane, request(connect(plane, "api.example.test"), "GET",
                                  "https://api.example.test/",
                                  headers=[("authorization", f"Bearer {placeholder}")]))
    flow.response = http.Response.make(200)
    flow.response.headers["content-encoding"] = "gzip"
    flow.response.raw_content = b"not gzip at all"
    Credentials(plane.state).response(flow)
    assert flow.response.status_code == 502
    assert flow.response.headers["x-sandgate-reason"] == "response_unscannable"
