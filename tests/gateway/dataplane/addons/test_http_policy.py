"""HttpPolicy: Host (or :authority, or an absolute request line) must name the dialed host;
then the policy decides, the name is vetted upstream, and a refusal is a JSON 403 (400, 413,
429, 502) naming the policy, rule and reason. One meaning per request: the canonical path
goes upstream, absolute targets become origin-form or are refused, repeated single headers
are refused, header conditions see every value, a private address is reused only by the rule
that opened it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mitmproxy import http

from gateway.dataplane.addons.http_policy import HttpPolicy
from gateway.dataplane.state import METADATA_KEY, SENT_KEY, FlowVerdict
from tests.doubles import Plane, data_plane
from tests.gateway.dataplane.addons.conftest import connect, request

POLICY = """
version: 1
name: web
limits: {request_body_bytes: 1000}
rules:
  - {id: api, hosts: [api.example.test], ports: [443], methods: [GET, POST]}
  - {id: few, hosts: [few.example.test], ports: [443], limits: {requests_per_minute: 1}}
  - {id: private, hosts: [intranet.example.test], ports: [443]}
  - {id: gone, hosts: [gone.example.test], ports: [443]}
  - {id: repos, hosts: [code.example.test], ports: [443], paths: ["/repos/**"]}
  - {id: no-admin, action: deny, hosts: [code.example.test], paths: ["/admin/**"]}
  - {id: no-debug, action: deny, hosts: [code.example.test], headers: {x-debug: "1"}}
  - {id: lan, hosts: [mixed.example.test], paths: ["/lan/**"], addresses: [10.1.0.0/16]}
  - {id: mixed, hosts: [mixed.example.test]}
"""
ANSWERS = {"api.example.test": ["203.0.113.10"], "few.example.test": ["203.0.113.11"],
           "intranet.example.test": ["10.1.2.3"], "code.example.test": ["203.0.113.13"],
           "mixed.example.test": ["10.1.2.4"]}


def decide(plane: Plane, flow: http.HTTPFlow) -> FlowVerdict:
    asyncio.run(HttpPolicy(plane.state).requestheaders(flow))
    verdict = flow.metadata[METADATA_KEY]
    assert isinstance(verdict, FlowVerdict)
    return verdict


def denial(flow: http.HTTPFlow) -> tuple[int, dict[str, object]]:
    assert flow.response is not None
    body = json.loads(flow.response.get_text() or "")
    assert flow.response.headers["x-sandgate-reason"] == body["reason"]
    return flow.response.status_code, body


@pytest.fixture
def plane(tmp_path: Path) -> Plane:
    return data_plane(tmp_path, POLICY, answers=ANSWERS)


def test_an_allowed_request_goes_to_the_vetted_address(plane: Plane) -> None:
    flow = request(connect(plane, "api.example.test"), "GET",
                   "https://api.example.test/v1/x?q=1")
    verdict = decide(plane, flow)
    assert (verdict.decision.rule, verdict.upstream) == ("api", "203.0.113.10")
    assert flow.response is None
    assert flow.request.host == "203.0.113.10"                  # dialed: the vetted address
    assert flow.request.host_header == "api.example.test"       # named: as the sandbox sent


@pytest.mark.parametrize(("method", "url", "headers", "status", "reason"), [
    ("DELETE", "https://api.example.test/v1/x", [], 403, "no_matching_rule"),
    ("GET", "https://other.example.test/", [], 403, "host_mismatch"),
    ("GET", "https://intranet.example.test/", [], 403, "host_mismatch"),
    ("POST", "https://api.example.test/", [("content-length", "5000")], 413,
     "body_too_large"),
])
def test_refusals_name_their_reason(plane: Plane, method: str, url: str,
                                    headers: list[tuple[str, str]], status: int,
                                    reason: str) -> None:
    flow = request(connect(plane, "api.example.test"), method, url, headers=headers)
    verdict = decide(plane, flow)
    assert str(verdict.decision.reason) == reason
    got_status, body = denial(flow)
    assert (got_status, body["reason"], body["policy"], body["host"]) == \
        (status, reason, "web", "api.example.test")


def test_a_name_that_resolves_to_a_private_address_is_refused(plane: Plane) -> None:
    flow = request(connect(plane, "intranet.example.test"), "GET",
                   "https://intranet.example.test/")
    assert str(decide(plane, flow).decision.reason) == "refused_address"
    assert denial(flow)[0] == 403


def test_an_unresolvable_name_is_a_502(plane: Plane) -> None:
    flow = request(connect(plane, "gone.example.test"), "GET", "https://gone.example.test/")
    assert str(decide(plane, flow).decision.reason) == "upstream_unresolvable"
    assert denial(flow)[0] == 502


def test_an_absolute_request_line_must_name_the_same_host(plane: Plane) -> None:
    conn = connect(plane, "api.example.test")
    fronted = request(conn, "GET", "https://evil.example/x", absolute=True,
                      headers=[("host", "api.example.test")])
    fronted.request.headers["host"] = "api.example.test"
    assert str(decide(plane, fronted).decision.reason) == "host_mismatch"


def test_the_rate_limit_answers_429(plane: Plane) -> None:
    conn = connect(plane, "few.example.test")
    first = request(conn, "GET", "https://few.example.test/")
    second = request(conn, "GET", "https://few.example.test/")
    assert decide(plane, first).decision.allowed
    assert str(decide(plane, second).decision.reason) == "rate_limited"
    assert denial(second)[0] == 429


def test_a_refused_request_with_a_large_body_is_cut_off(plane: Plane) -> None:
    flow = request(connect(plane, "api.example.test"), "DELETE",
                   "https://api.example.test/", headers=[("transfer-encoding", "chunked")])
    decide(plane, flow)
    assert flow.response is None and flow.error is not None   # killed, not read to the end


def test_monitor_mode_lets_through_what_it_would_deny(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY.replace("name: web", "name: web\nmode: monitor"),
                       answers={**ANSWERS, "new.example.test": ["203.0.113.12"]})
    flow = request(connect(plane, "new.example.test"), "GET", "https://new.example.test/")
    verdict = decide(plane, flow)
    assert str(verdict.decision.verdict) == "would_deny" and flow.response is None


def test_the_canonical_path_goes_upstream(plane: Plane) -> None:
    flow = request(connect(plane, "code.example.test"), "GET", "https://code.example.test/",
                   target="/repos/a/%62//./c;v=1?q=%2e")
    verdict = decide(plane, flow)
    assert verdict.decision.rule == "repos" and flow.response is None
    assert flow.request.path == "/repos/a/b/c?q=%2e"        # the query as it was
    assert flow.metadata[SENT_KEY].path == "/repos/a/b/c"   # audited as matched...
    assert verdict.error == "path canonicalised from '/repos/a/%62//./c;v=1'"   # ...and sent


@pytest.mark.parametrize(("target", "status", "reason"), [
    ("/repos/..;/admin/x", 403, "denied_by_rule"),
    ("/repos/%2e%2e/admin/x", 403, "denied_by_rule"),
    ("//admin/x", 403, "denied_by_rule"),
    ("/%61dmin/x", 403, "denied_by_rule"),
    ("/repos/a%2fb", 400, "ambiguous_path"),
    ("/repos/a\\..\\..\\admin", 400, "ambiguous_path"),
    ("/repos/%252e%252e/admin", 400, "ambiguous_path"),
])
def test_paths_that_could_mean_a_denied_one(plane: Plane, target: str, status: int,
                                            reason: str) -> None:
    flow = request(connect(plane, "code.example.test"), "GET", "https://code.example.test/",
                   target=target)
    assert str(decide(plane, flow).decision.reason) == reason
    assert denial(flow)[:1] == (status,)


@pytest.mark.parametrize("http2", [False, True])
def test_an_absolute_target_naming_the_dialed_host_becomes_origin_form(
        plane: Plane, http2: bool) -> None:
    flow = request(connect(plane, "code.example.test"), "GET", "https://code.example.test/",
                   http2=http2, absolute=True,
                   target="/repos/x" if not http2 else "https://code.example.test/repos/x?a")
    if not http2:
        flow.request.authority = "code.example.test"
    assert decide(plane, flow).decision.rule == "repos"
    assert (flow.request.authority if not http2 else "", flow.request.path) == \
        ("", "/repos/x" if not http2 else "/repos/x?a")


@pytest.mark.parametrize(("http2", "target", "reason"), [
    (True, "https://evil.example/x", "host_mismatch"),       # :path smuggling another host
    (True, "https://code.example.test:8443/x", "host_mismatch"),   # or another port
    (True, "http://code.example.test/x", "host_mismatch"),   # or clear text
    (True, "x", "protocol_error"),
    (True, "*", "protocol_error"),                            # '*' is for OPTIONS
    (False, "https://code.example.test:22/x", "host_mismatch"),
])
def test_absolute_targets_elsewhere_are_refused(plane: Plane, http2: bool, target: str,
                                                reason: str) -> None:
    flow = request(connect(plane, "code.example.test"), "GET", "https://code.example.test/",
                   http2=http2, absolute=True, target=target)
    if not http2:
        parts = target.split("/", 3)
        flow.request.authority, flow.request.path = parts[2], "/" + parts[3]
    assert str(decide(plane, flow).decision.reason) == reason
    assert flow.response is not None


@pytest.mark.parametrize(("headers", "http2", "reason"), [
    ([("host", "code.example.test")], False, "protocol_error"),         # a second Host
    ([("authorization", "a"), ("authorization", "b")], False, "protocol_error"),
    ([("content-length", "0"), ("content-length", "0")], False, "protocol_error"),
    ([("host", "api.example.test")], True, "host_mismatch"),            # Host vs :authority
    ([("authorization", "a"), ("authorization", "b")], True, "protocol_error"),
    ([("host", "code.example.test:8443")], True, "host_mismatch"),      # another port
])
def test_headers_that_could_mean_two_things(plane: Plane, headers: list[tuple[str, str]],
                                            http2: bool, reason: str) -> None:
    flow = request(connect(plane, "code.example.test"), "GET",
                   "https://code.example.test/repos/x", headers=headers, http2=http2)
    assert str(decide(plane, flow).decision.reason) == reason


@pytest.mark.parametrize("http2", [False, True])
def test_the_host_must_name_the_dialed_port(plane: Plane, http2: bool) -> None:
    for authority, reason in (("code.example.test:8443", "host_mismatch"),
                              ("code.example.test:443", "allowed_by_rule")):
        flow = request(connect(plane, "code.example.test"), "GET",
                       f"https://{authority}/repos/x", http2=http2)
        assert str(decide(plane, flow).decision.reason) == reason


def test_a_deny_on_a_header_sees_every_value(plane: Plane) -> None:
    flow = request(connect(plane, "code.example.test"), "GET",
                   "https://code.example.test/repos/x",
                   headers=[("x-debug", "0"), ("X-Debug", "1")])
    assert decide(plane, flow).decision.rule == "no-debug"


def test_a_private_address_serves_only_the_rule_that_opened_it(plane: Plane) -> None:
    conn = connect(plane, "mixed.example.test")
    opened = request(conn, "GET", "https://mixed.example.test/lan/x")
    assert decide(plane, opened).upstream == "10.1.2.4"
    other = request(conn, "GET", "https://mixed.example.test/elsewhere")
    verdict = decide(plane, other)
    assert (str(verdict.decision.reason), verdict.decision.rule) == ("refused_address", "mixed")
    assert other.response is not None
    fresh = request(connect(plane, "mixed.example.test"), "GET",
                    "https://mixed.example.test/elsewhere")
    assert str(decide(plane, fresh).decision.reason) == "refused_address"
