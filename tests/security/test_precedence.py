"""The precedence rules, from inside a real sandbox: the most specific allow rule decides
whatever the order, a deny without `protocols` stops raw TCP too, and a repeated query
parameter cannot carry a second value past an allow rule's condition."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gateway.client import Client
from gateway.selftest.seat import Seat
from tests.topology import Topology

pytestmark = pytest.mark.integration

POLICY = {
    "version": 1,
    "name": "precedence-suite",
    "rules": [
        # first in order, and matches every HEAD below: the specific rules must still decide
        {"id": "broad", "hosts": ["*.upstream.test"], "ports": [80], "methods": ["HEAD"]},
        {"id": "plain", "hosts": ["www.upstream.test"], "ports": [80], "paths": ["/plain/**"]},
        {"id": "git", "hosts": ["www.upstream.test"], "ports": [80], "paths": ["/git/**"],
         "query": {"service": "git-upload-pack"}},
        {"id": "no-echo-alt", "action": "deny", "hosts": ["echo.upstream.test"],
         "ports": [7001]},
        {"id": "streams", "hosts": [".upstream.test"], "ports": [7, 7001],
         "protocols": ["tcp"]},
    ],
}


@pytest.fixture(scope="module")
def seat(topology: Topology, security_client: Client) -> Iterator[Seat]:
    security_client.put_policy("precedence-suite", json.dumps(POLICY))
    with security_client.create(policy="precedence-suite", ttl_seconds=600) as sandbox:
        yield Seat(topology, security_client, sandbox)


def http_rows(seat: Seat, mark: object) -> list[tuple[str, str | None, int | None]]:
    return [(r["path"], r["rule"], r["status"]) for r in seat.rows(mark)  # type: ignore[arg-type]
            if r["protocol"] == "http"]


def test_the_most_specific_rule_decides(seat: Seat) -> None:
    mark = seat.mark()
    result = seat.sh("curl -sS -I --max-time 10 -o /dev/null -w '%{http_code}' "
                     "http://www.upstream.test/plain/a")
    assert result.stdout == "200"
    assert http_rows(seat, mark) == [("/plain/a", "plain", 200)]


def test_a_repeated_query_parameter_cannot_smuggle_a_value(seat: Seat) -> None:
    mark = seat.mark()
    one = seat.sh("curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "
                  "'http://www.upstream.test/git/r/info/refs?service=git-upload-pack'")
    two = seat.sh("curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "
                  "'http://www.upstream.test/git/r/info/refs?service=git-receive-pack"
                  "&service=git-upload-pack'")
    assert (one.stdout, two.stdout) == ("200", "403")
    assert [e["path"] for e in seat.seen(mark, "http")] == [
        "/git/r/info/refs?service=git-upload-pack"]
    assert [(rule, status) for _, rule, status in http_rows(seat, mark)] == \
        [("git", 200), (None, 403)]


def test_a_deny_without_protocols_stops_raw_tcp(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run("out['allowed'] = echo('echo.upstream.test', 7)\n"
                   "out['denied'] = echo('echo.upstream.test', 7001)")
    assert got["allowed"] == "ping" and got["denied"] != "ping"
    assert [e["local"][1] for e in seat.seen(mark, "tcp")] == [7]
    assert [(r["port"], r["rule"], r["reason"]) for r in seat.rows(mark)
            if r["protocol"] == "tcp"] == [(7, "streams", "allowed_by_rule"),
                                           (7001, "no-echo-alt", "denied_by_rule")]
