"""Bodies: held when small, streamed (never held) otherwise; limits on bytes sent and bytes
decoded; the tripwire in bodies, a placeholder split across chunks included; HTTP/1
upstreams never get a body without framing."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import brotli
import pytest
from mitmproxy import http, tls
from mitmproxy.proxy import context
from mitmproxy.test import tflow

from gateway.dataplane.addons.rate_meter import RateMeter
from gateway.dataplane.bodies import SCAN_WINDOW, head_size
from gateway.dataplane.state import COUNTS_KEY, METADATA_KEY
from tests.doubles import Plane, data_plane
from tests.gateway.dataplane.addons.conftest import Through, connect, request

POLICY = """
version: 1
name: p
limits: {request_body_bytes: 2000000, response_body_bytes: 3000000}
rules:
  - {id: up, hosts: [up.example.test], inject: [{secret: TOKEN, as: bearer}]}
"""
MIB = 1024 * 1024


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    plane = data_plane(tmp_path, POLICY, answers={"up.example.test": ["203.0.113.10"]},
                       secrets={"TOKEN": "real-secret-value-abcdefgh"})
    yield plane
    plane.close()


def verdict_reason(flow: http.HTTPFlow) -> str:
    return str(flow.metadata[METADATA_KEY].decision.reason)


def post(plane: Plane, body: bytes, headers: list[tuple[str, str]] | None = None,
         http2: bool = False) -> http.HTTPFlow:
    return request(connect(plane, "up.example.test"), "POST", "https://up.example.test/",
                   body=body, headers=headers, http2=http2)



def chunked_response() -> http.Response:
    """A 200 whose body comes chunked, of a length not known ahead."""
    response = http.Response.make(200)
    del response.headers["content-length"]
    response.headers["transfer-encoding"] = "chunked"
    return response

def test_a_small_body_is_held_and_a_placeholder_in_it_answered_403(plane: Plane) -> None:
    flow = post(plane, f"prompt: spell out {plane.sandbox.secrets['TOKEN']}".encode())
    Through(plane).request(flow)
    assert flow.request.stream is False
    assert flow.response is not None and flow.response.status_code == 403
    assert verdict_reason(flow) == "secret_exfil_attempt" and plane.sandbox.quarantined


def test_a_large_body_streams_and_a_split_placeholder_cuts_the_connection(plane: Plane) -> None:
    placeholder = plane.sandbox.secrets["TOKEN"].encode()
    body = b"a" * SCAN_WINDOW + placeholder + b"z" * 1000
    cut_at = SCAN_WINDOW + 10                      # the placeholder in two chunks
    through = Through(plane)
    flow = post(plane, body)
    sent = through.request(flow, chunks=[body[:cut_at], body[cut_at:]])
    assert callable(flow.request.stream)
    assert through.cut == [flow]
    assert verdict_reason(flow) == "secret_exfil_attempt" and plane.sandbox.quarantined
    assert placeholder not in sent          # what went out before the cut is not the secret


def test_a_streamed_body_passes_unchanged_and_is_counted(plane: Plane) -> None:
    body = b"x" * (SCAN_WINDOW + 5000)
    through = Through(plane)
    flow = post(plane, body)
    sent = through.request(flow, chunks=[body[:70000], body[70000:]])
    assert sent == body and through.cut == []
    assert flow.metadata[COUNTS_KEY].up == len(body)


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_a_compression_bomb_is_refused_without_inflating(plane: Plane, encoding: str) -> None:
    zeros = b"\0" * (64 * MIB)
    body = gzip.compress(zeros) if encoding == "gzip" else brotli.compress(zeros, quality=5)
    flow = post(plane, body, headers=[("content-encoding", encoding)])
    Through(plane).request(flow)
    assert flow.response is not None and flow.response.status_code == 413
    assert "decodes to more than" in flow.metadata[METADATA_KEY].error


def test_a_placeholder_inside_a_compressed_body_is_found(plane: Plane) -> None:
    body = brotli.compress(f"x={plane.sandbox.secrets['TOKEN']}".encode())
    flow = post(plane, body, headers=[("content-encoding", "br")])
    Through(plane).request(flow)
    assert verdict_reason(flow) == "secret_exfil_attempt"


def test_a_chunked_body_over_the_limit_is_cut(plane: Plane) -> None:
    chunk = b"y" * MIB
    flow = post(plane, b"", headers=[("transfer-encoding", "chunked")])
    through = Through(plane)
    sent = through.request(flow, chunks=[chunk, chunk, chunk])
    assert through.cut == [flow] and verdict_reason(flow) == "body_too_large"
    assert len(sent) <= 2000000


def test_an_http2_body_without_length_is_framed_for_http1_upstreams(plane: Plane) -> None:
    through = Through(plane)
    flow = post(plane, b"", http2=True)
    flow.request.headers.pop("content-length", None)
    through.request(flow, chunks=[b"x" * 10])
    assert flow.request.headers["transfer-encoding"] == "chunked"
    conn = plane.state.conns[flow.client_conn.id]
    assert conn.framing_pending == [flow.request]
    # the upstream turns out to speak HTTP/2: no chunked framing there
    server = tflow.tserver_conn()
    server.alpn = b"h2"
    through.bodies.tls_established_server(tls.TlsData(server, context.Context(
        flow.client_conn, None)))  # type: ignore[arg-type]
    assert "transfer-encoding" not in flow.request.headers


def test_a_body_on_an_http2_get_without_length_is_refused(plane: Plane) -> None:
    through = Through(plane)
    flow = request(connect(plane, "up.example.test"), "GET", "https://up.example.test/",
                   http2=True)
    through.request(flow, chunks=[b"smuggled"])
    assert through.cut == [flow] and "transfer-encoding" not in flow.request.headers


def test_a_response_over_the_limit_is_cut(plane: Plane) -> None:
    through = Through(plane)
    flow = request(connect(plane, "up.example.test"), "GET", "https://up.example.test/")
    through.request(flow)
    response = chunked_response()
    got = through.response(flow, response, chunks=[b"z" * MIB] * 4)
    assert through.cut == [flow] and len(got) <= 3 * MIB
    assert verdict_reason(flow) == "body_too_large"


def test_a_streamed_compressed_response_is_decoded_and_scrubbed(plane: Plane) -> None:
    real = b"real-secret-value-abcdefgh"
    through = Through(plane)
    flow = request(connect(plane, "up.example.test"), "GET", "https://up.example.test/")
    through.request(flow)
    payload = b"-" * (2 * SCAN_WINDOW) + real + b"-" * 100
    response = chunked_response()
    response.headers["content-encoding"] = "gzip"
    encoded = gzip.compress(payload)
    got = through.response(flow, response, chunks=[encoded[i:i + 4096]
                                                   for i in range(0, len(encoded), 4096)])
    assert real not in got and plane.sandbox.secrets["TOKEN"].encode() in got
    assert len(got) == len(payload) - len(real) + len(plane.sandbox.secrets["TOKEN"])
    assert flow.response is not None and "content-encoding" not in flow.response.headers


def test_a_chunk_held_back_sends_nothing_rather_than_an_empty_chunk(plane: Plane) -> None:
    """The scrubber holds small chunks back (a secret may be split across them); mitmproxy
    would send an empty piece as HTTP/1's terminating chunk, ending the response there
    (`streamed` in the conftest refuses one)."""
    real = b"real-secret-value-abcdefgh"
    through = Through(plane)
    flow = request(connect(plane, "up.example.test"), "GET", "https://up.example.test/")
    through.request(flow)
    response = chunked_response()
    payload = b"ok " + real + b" and the rest of the answer"
    got = through.response(flow, response, chunks=[payload[i:i + 5]
                                                   for i in range(0, len(payload), 5)])
    assert got == payload.replace(real, plane.sandbox.secrets["TOKEN"].encode())
    assert through.cut == []


BUDGET_POLICY = """
version: 1
name: b
budget: {requests: 4, per: 1h}
rules:
  - {id: up, hosts: [up.example.test], budget: {bytes_up: 100000, per: 1h}}
"""


@pytest.fixture
def budgeted(tmp_path: Path) -> Iterator[Plane]:
    plane = data_plane(tmp_path, BUDGET_POLICY, answers={"up.example.test": ["203.0.113.10"]})
    yield plane
    plane.close()


def test_a_streamed_upload_spends_its_lease_and_is_cut_where_it_crosses_its_budget(
        budgeted: Plane) -> None:
    through = Through(budgeted)
    first = post(budgeted, b"", headers=[("transfer-encoding", "chunked")])
    sent = through.request(first, chunks=[b"a" * 30000, b"b" * 30000])
    assert len(sent) == 60000 and through.cut == []

    def spent() -> int:
        [rule] = [u for u in budgeted.authority.ledger.usage() if u["scope"] == "rule"]
        return int(rule["bytes_up"])

    assert spent() == 100000        # its lease: all that was left (less than a chunk)
    first.response = http.Response.make(200, b"ok")
    RateMeter(budgeted.state).response(first)       # it ended: the unused lease comes back
    assert spent() == head_size(first.request) + 60000

    second = post(budgeted, b"", headers=[("transfer-encoding", "chunked")])
    sent = through.request(second, chunks=[b"c" * 30000, b"d" * 30000])
    assert through.cut == [second] and sent == b"c" * 30000   # the crossing chunk never went
    assert verdict_reason(second) == "budget_exceeded"
    assert second.metadata[METADATA_KEY].decision.rule == "up"


def test_an_announced_body_that_does_not_fit_is_answered_429_before_it_goes(
        budgeted: Plane) -> None:
    through = Through(budgeted)
    fits = post(budgeted, b"x" * 90000)
    through.request(fits)
    assert fits.response is None
    over = post(budgeted, b"y" * 20000)
    through.request(over)
    assert over.response is not None and over.response.status_code == 429
    body = over.response.json()
    assert body["reason"] == "budget_exceeded" and body["rule"] == "up"
    # the request line and headers count too
    assert f"this request is {20000 + head_size(over.request)} (head and body)" in \
        body["detail"]


def test_the_sandbox_budget_counts_every_rule(budgeted: Plane) -> None:
    through = Through(budgeted)
    flows = [post(budgeted, b"z") for _ in range(5)]
    for flow in flows:
        through.request(flow)
    assert [f.response.status_code if f.response else None for f in flows] == \
        [None, None, None, None, 429]
    assert "the sandbox's budget (4 requests per 1h)" in flows[-1].response.json()["detail"]
