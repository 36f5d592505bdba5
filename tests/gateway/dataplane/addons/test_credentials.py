"""Credentials: the real value goes only to its form's location on the bound host; a
placeholder anywhere else trips the wire, also towards the bound host; what comes back is
scrubbed of the real value in every form."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from gateway.dataplane.addons.credentials import Credentials
from gateway.dataplane.state import METADATA_KEY, SECRETS_KEY
from tests.doubles import Plane, data_plane
from tests.gateway.dataplane.addons.conftest import Through, connect, request

POLICY = """
version: 1
name: p
rules:
  - id: api
    hosts: [api.example.test]
    inject: [{secret: TOKEN, as: bearer}]
  - id: keyed
    hosts: [keyed.example.test]
    inject: [{secret: TOKEN, as: header, header: x-api-key, template: "Key {value}"}]
  - id: basic
    hosts: [basic.example.test]
    inject: [{secret: TOKEN, as: basic, username_secret: USER}]
  - id: query
    hosts: [query.example.test]
    inject: [{secret: TOKEN, as: query, param: key}]
  - id: body
    hosts: [body.example.test]
    inject: [{secret: TOKEN, as: body}]
  - {id: other, hosts: [other.example.test]}
"""
REAL = "real-token-value-0123456789/+="
USER = "real-user-name"
ANSWERS = {name: ["203.0.113.10"] for name in (
    "api.example.test", "keyed.example.test", "basic.example.test", "query.example.test",
    "body.example.test", "other.example.test")}


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    plane = data_plane(tmp_path, POLICY, answers=ANSWERS, secrets={"TOKEN": REAL, "USER": USER})
    yield plane
    plane.close()


def reason(flow: http.HTTPFlow) -> str | None:
    return flow.response.headers["x-sandgate-reason"] if flow.response else None


def everything(flow: http.HTTPFlow, body: bytes) -> bytes:
    """Every byte of the request that would go upstream."""
    return (flow.request.path.encode() + repr(flow.request.headers.fields).encode() + body)


@pytest.mark.parametrize(("host", "header", "value", "expected"), [
    ("api", "authorization", "Bearer {p}", "Bearer {r}"),
    ("api", "authorization", "bearer   {p}", "Bearer {r}"),
    ("keyed", "x-api-key", "Key {p}", "Key {r}"),
])
def test_the_location_gets_the_real_value(plane: Plane, host: str, header: str, value: str,
                                          expected: str) -> None:
    placeholder = plane.sandbox.secrets["TOKEN"]
    flow = request(connect(plane, f"{host}.example.test"), "GET",
                   f"https://{host}.example.test/v1", headers=[(header,
                                                                value.format(p=placeholder))])
    Through(plane).request(flow)
    assert flow.response is None
    assert flow.request.headers[header] == expected.format(r=REAL)
    assert flow.metadata[METADATA_KEY].secrets == ("TOKEN",)


def test_the_form_is_added_when_the_sandbox_sent_none(plane: Plane) -> None:
    flow = request(connect(plane, "api.example.test"), "GET", "https://api.example.test/")
    Through(plane).request(flow)
    assert flow.request.headers["authorization"] == f"Bearer {REAL}"


def test_basic_with_a_user_name_that_is_a_secret_too(plane: Plane) -> None:
    secrets = plane.sandbox.secrets
    sent = "Basic " + base64.b64encode(f"{secrets['USER']}:{secrets['TOKEN']}".encode()).decode()
    flow = request(connect(plane, "basic.example.test"), "GET",
                   "https://basic.example.test/", headers=[("authorization", sent)])
    Through(plane).request(flow)
    assert flow.request.headers["authorization"] == \
        "Basic " + base64.b64encode(f"{USER}:{REAL}".encode()).decode()


def test_the_query_form(plane: Plane) -> None:
    placeholder = plane.sandbox.secrets["TOKEN"]
    flow = request(connect(plane, "query.example.test"), "GET",
                   f"https://query.example.test/x?key={placeholder}&page=2")
    Through(plane).request(flow)
    assert flow.request.query["key"] == REAL and flow.request.query["page"] == "2"


@pytest.mark.parametrize(("host", "place"), [
    ("api", "path"), ("api", "query"), ("api", "header"), ("api", "cookie"),
    ("api", "authorization, other scheme"),
    ("keyed", "authorization"), ("query", "other parameter"), ("query", "key twice"),
    ("api", "percent-encoded path"), ("api", "base64 header"),
])
def test_a_placeholder_anywhere_else_trips_the_wire_even_to_the_bound_host(
        plane: Plane, host: str, place: str) -> None:
    p = plane.sandbox.secrets["TOKEN"]
    encoded_p = "".join(f"%{ord(c):02x}" for c in p)
    url, headers = f"https://{host}.example.test/v1", []
    if place == "path":
        url += f"/{p}"
    elif place == "percent-encoded path":
        url += f"/{encoded_p}"
    elif place in ("query", "other parameter"):
        url += f"?q={p}"
    elif place == "key twice":
        url += f"?key={p}&key={p}"
    elif place == "header":
        headers = [("x-note", f"see {p}")]
    elif place == "base64 header":
        headers = [("x-note", base64.b64encode(f"token={p}".encode()).decode())]
    elif place == "cookie":
        headers = [("cookie", f"session={p}")]
    else:
        headers = [("authorization", f"Token {p}")]
    flow = request(connect(plane, f"{host}.example.test"), "GET", url, headers=headers)
    sent = Through(plane).request(flow)
    assert reason(flow) == "secret_exfil_attempt"
    assert REAL.encode() not in everything(flow, sent)
    assert plane.sandbox.quarantined
    (verdict_secrets,) = [flow.metadata[METADATA_KEY].secrets]
    assert verdict_secrets == ("TOKEN",)


def test_a_placeholder_of_another_sandbox_trips_the_wire(tmp_path: Path, plane: Plane) -> None:
    from gateway.dataplane.registry import SandboxContext, SyntheticPool
    from tests.doubles import SYNTHETIC, policy_handle

    other = SandboxContext(id="other1", ip="10.77.0.6", handle=policy_handle(POLICY),
                           pool=SyntheticPool(SYNTHETIC), secrets={"TOKEN": "sgp_" + "z" * 32})
    plane.state.registry.add(other)
    flow = request(connect(plane, "other.example.test"), "GET", "https://other.example.test/",
                   headers=[("authorization", f"Bearer {other.secrets['TOKEN']}")])
    Through(plane).request(flow)
    assert reason(flow) == "secret_exfil_attempt"
    assert "another sandbox" in flow.metadata[METADATA_KEY].error


def test_the_body_form_replaces_the_placeholder_in_the_body_only(plane: Plane) -> None:
    p = plane.sandbox.secrets["TOKEN"]
    body = f'{{"key": "{p}", "again": "{p}"}}'.encode()
    flow = request(connect(plane, "body.example.test"), "POST", "https://body.example.test/",
                   body=body)
    sent = Through(plane).request(flow)
    assert sent == f'{{"key": "{REAL}", "again": "{REAL}"}}'.encode()
    assert flow.request.headers["content-length"] == str(len(sent))
    header_flow = request(connect(plane, "body.example.test"), "GET",
                          "https://body.example.test/", headers=[("x-key", p)])
    Through(plane).request(header_flow)
    assert reason(header_flow) == "secret_exfil_attempt"   # the body, not the head


def test_every_form_of_the_real_value_is_scrubbed_from_what_comes_back(plane: Plane) -> None:
    p = plane.sandbox.secrets["TOKEN"]
    flow = request(connect(plane, "api.example.test"), "GET", "https://api.example.test/",
                   headers=[("authorization", f"Bearer {p}")])
    through = Through(plane)
    through.request(flow)
    echoes = [REAL.encode(), base64.b64encode(b"xx" + REAL.encode()),
              REAL.encode().hex().encode(), f"Bearer {REAL}".encode()]
    response = http.Response.make(200, b" | ".join(echoes),
                                  {"x-echo": f"Bearer {REAL}", "content-type": "text/plain"})
    response.encode("gzip")
    got = through.response(flow, response)
    assert REAL.encode() not in got and REAL.encode().hex().encode() not in got
    assert base64.b64encode(REAL.encode())[4:20] not in got
    assert p.encode() in got
    assert flow.response is not None and flow.response.headers["x-echo"] == f"Bearer {p}"
    assert "content-encoding" not in flow.response.headers


def test_trailers_are_scrubbed(plane: Plane) -> None:
    flow = request(connect(plane, "api.example.test"), "GET", "https://api.example.test/",
                   http2=True)
    through = Through(plane)
    through.request(flow)
    response = http.Response.make(200, b"ok")
    response.trailers = http.Headers(x_checksum=f"token {REAL}")
    through.response(flow, response)
    assert flow.response is not None and flow.response.trailers is not None
    assert REAL not in flow.response.trailers["x-checksum"]


def test_a_websocket_message_with_a_placeholder_is_dropped_and_the_connection_cut(
        plane: Plane) -> None:
    p = plane.sandbox.secrets["TOKEN"]
    flow = tflow.twebsocketflow()
    flow.client_conn = connect(plane, "other.example.test")
    cut: list[http.HTTPFlow] = []
    plane.state.cut = cut.append
    from mitmproxy.websocket import WebSocketMessage
    from wsproto.frame_protocol import Opcode
    message = WebSocketMessage(Opcode.TEXT, True, f"hello {p}".encode())
    assert flow.websocket is not None
    flow.websocket.messages.append(message)
    Credentials(plane.state).websocket_message(flow)
    assert message.dropped and cut == [flow]
    assert plane.rows[-1]["reason"] == "secret_exfil_attempt"
    assert plane.sandbox.quarantined


def test_a_rotated_value_is_scrubbed_from_the_next_response(plane: Plane) -> None:
    """Scrub tables are kept per set of values: the requests before a rotation share one,
    the first after it gets the new value's."""
    assert plane.vault is not None
    p = plane.sandbox.secrets["TOKEN"]
    through, tables = Through(plane), []
    for real in (REAL, REAL, "rotated-token-value-987654"):
        if real != REAL:
            plane.vault.put("TOKEN", real)
        flow = request(connect(plane, "api.example.test"), "GET", "https://api.example.test/",
                       headers=[("authorization", f"Bearer {p}")])
        through.request(flow)
        assert flow.request.headers["authorization"] == f"Bearer {real}"
        got = through.response(flow, http.Response.make(
            200, f"{real} {real.encode().hex()}".encode(), {"content-type": "text/plain"}))
        assert got == f"{p} {p.encode().hex()}".encode()
        tables.append(flow.metadata[SECRETS_KEY].scrub)
    assert tables[0] is tables[1] and tables[2] is not tables[0]


@pytest.mark.parametrize("framing", [("transfer-encoding", "chunked"),
                                     ("content-length", str(5 << 20))],
                         ids=["chunked", "5MiB"])
def test_a_request_refused_before_its_large_body_is_cut_not_read(
        plane: Plane, framing: tuple[str, str]) -> None:
    """Refused at its head (here the tripwire), a request announcing a large or endless body
    is cut: mitmproxy would read all of it into the worker before sending the answer."""
    p = plane.sandbox.secrets["TOKEN"]
    flow = request(connect(plane, "other.example.test"), "POST", "https://other.example.test/",
                   headers=[("authorization", f"Bearer {p}"), framing])
    flow.request.raw_content = None        # as mitmproxy has it at requestheaders
    Through(plane).request(flow)
    assert flow.response is None and flow.error is not None
    assert plane.sandbox.quarantined
    assert flow.metadata[METADATA_KEY].decision.reason == "secret_exfil_attempt"
