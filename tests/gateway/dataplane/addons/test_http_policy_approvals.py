"""HttpPolicy under an `ask` rule: the request waits in its hook (only that flow: another
request is decided meanwhile) until the approval book, on a real database, has a decision
made in another thread as the API makes it; then it goes out under the rule's grant, or is
refused with the reason. With nobody to ask, it is refused at once."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from mitmproxy import http

from gateway.approvals.ask import Scope
from gateway.approvals.book import ApprovalBook
from gateway.dataplane.addons.http_policy import HttpPolicy
from gateway.dataplane.state import METADATA_KEY, FlowVerdict
from gateway.db import make_engine
from tests.doubles import Plane, data_plane
from tests.gateway.dataplane.addons.conftest import connect, request

POLICY = """
version: 1
name: web
rules:
  - {id: reads, hosts: [api.example.test], methods: [GET]}
  - {id: writes, action: ask, hosts: [api.example.test], methods: [POST]}
"""
ANSWERS = {"api.example.test": ["203.0.113.10"]}


def verdict_of(flow: http.HTTPFlow) -> FlowVerdict:
    verdict = flow.metadata[METADATA_KEY]
    assert isinstance(verdict, FlowVerdict)
    return verdict


def with_book(tmp_path: Path) -> tuple[Plane, ApprovalBook]:
    plane = data_plane(tmp_path, POLICY, answers=ANSWERS)
    engine = make_engine(f"sqlite:///{tmp_path / 'approvals.db'}")
    book = ApprovalBook(engine, plane.sink.rows.append, gateway_id="gw", timeout=30)
    plane.authority.approvals = book
    return plane, book


def run_held(plane: Plane, book: ApprovalBook, allow: bool, path: str = "/items/1",
             query: str = "draft=1", body: bytes = b"") -> tuple[http.HTTPFlow, http.HTTPFlow]:
    policy = HttpPolicy(plane.state)
    held = request(connect(plane, "api.example.test"), "POST",
                   f"https://api.example.test{path}?{query}", body=body)
    other = request(connect(plane, "api.example.test"), "GET", "https://api.example.test/x")

    async def scenario() -> None:
        waiting = asyncio.ensure_future(policy.requestheaders(held))
        for _ in range(500):
            if rows := await asyncio.to_thread(book.list, "pending"):
                break
            await asyncio.sleep(0.01)
        await policy.requestheaders(other)     # decided while the first one waits
        assert other.response is None and not waiting.done()
        [row] = rows
        assert (row["method"], row["path"], row["rule"]) == ("POST", "/items/1", "writes")
        decider = threading.Thread(target=book.decide, args=(row["id"],),
                                   kwargs={"allow": allow, "scope": Scope.ONCE, "who": "ann"})
        decider.start()
        await asyncio.wait_for(waiting, 10)
        decider.join()

    asyncio.run(scenario())
    book.engine.dispose()
    return held, other


def test_an_approved_request_goes_out_to_the_vetted_address(tmp_path: Path) -> None:
    plane, book = with_book(tmp_path)
    held, _other = run_held(plane, book, allow=True)
    verdict = verdict_of(held)
    assert held.response is None
    assert (verdict.decision.verdict, verdict.decision.reason, verdict.decision.rule) == (
        "allow", "approved", "writes")
    assert verdict.upstream == "203.0.113.10" and held.request.host == "203.0.113.10"
    assert verdict.error == "approval 1 (once) by ann"


def test_what_goes_out_is_the_path_the_person_approved(tmp_path: Path) -> None:
    """The approver is shown the path as the policy reads it; a spelling an upstream may read
    otherwise (`..;`, dot segments) must not go out in its place."""
    plane, book = with_book(tmp_path)
    held, _other = run_held(plane, book, allow=True, path="/admin/..;/items/./1")
    assert held.response is None
    assert held.request.path == "/items/1?draft=1"


def test_a_denied_request_is_refused_with_the_reason(tmp_path: Path) -> None:
    plane, book = with_book(tmp_path)
    held, _other = run_held(plane, book, allow=False)
    assert held.response is not None and held.response.status_code == 403
    body = json.loads(held.response.get_text() or "")
    assert (body["reason"], body["rule"]) == ("approval_denied", "writes")


def test_with_nobody_to_ask_it_is_refused_at_once(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY, answers=ANSWERS)
    flow = request(connect(plane, "api.example.test"), "POST", "https://api.example.test/a")
    asyncio.run(HttpPolicy(plane.state).requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-sandgate-reason"] == "approval_required"


def test_the_person_deciding_sees_the_redacted_query_and_the_body_length(
        tmp_path: Path) -> None:
    """Requests alike in path are not alike: the query (credential-like values and
    placeholders redacted) and the body's announced length are part of the question."""
    plane, book = with_book(tmp_path)
    run_held(plane, book, allow=False, query="draft=1&access_token=s3cret&q=a+b",
             body=b"twelve bytes")
    [row] = book.list()
    book.engine.dispose()
    assert "s3cret" not in json.dumps(row)
    assert (row["query"], row["body_bytes"]) == ("draft=1&access_token=[redacted]&q=a+b", 12)
