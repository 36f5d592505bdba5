"""The SSE rewriter means to the client exactly what the stream meant: any stream, cut into
any chunks and written out again, parses (with the client's own parser, the one the MCP SDK
uses) into the same events as the original."""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane.sse import EventRewriter, TooLong, event


def client_events(raw: bytes) -> list[tuple[str, str, str, int | None]]:
    """What httpx2's EventSource (the SDK client's parser) makes of a whole stream."""
    async def read() -> list[tuple[str, str, str, int | None]]:
        response = httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                   content=raw,
                                   request=httpx2.Request("GET", "https://mcp.example.test/"))
        return [(e.event, e.data, e.id, e.retry)
                async for e in httpx2.EventSource(response, max_event_size=None)]
    return asyncio.run(read())


def rewritten(raw: bytes, cuts: list[int], rewrite: object = None) -> bytes:
    rewriter = EventRewriter(rewrite or (lambda data: data), 1 << 20)  # type: ignore[arg-type]
    out, start = b"", 0
    for cut in sorted({c % (len(raw) + 1) for c in cuts}):
        out += rewriter.feed(raw[start:cut])
        start = cut
    return out + rewriter.feed(raw[start:]) + rewriter.finish()


PIECES = st.sampled_from([
    "data: ", "data:", "data", "event: ", "event:x", "id: ", "id:7", "id: a\0b", "retry: ",
    "retry: 10", "retry: x1", ": comment", ":", "other: y", " data: lead", "\r\n", "\n",
    "\r", "\r\n\r\n", "\n\n", '{"jsonrpc":"2.0"}', "é", "\ufeff", "text", " ", "\x00",
])


@settings(max_examples=150, deadline=None)
@given(st.lists(PIECES, max_size=40), st.lists(st.integers(0, 400), max_size=6),
       st.booleans())
def test_any_stream_means_the_same_after_rewriting(pieces: list[str], cuts: list[int],
                                                   bom: bool) -> None:
    raw = ("\ufeff" if bom else "").encode() + "".join(pieces).encode()
    assert client_events(rewritten(raw, cuts)) == client_events(raw)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=4))
def test_bytes_that_are_not_utf8_mean_the_same_too(raw: bytes, cuts: list[int]) -> None:
    assert client_events(rewritten(raw, cuts)) == client_events(raw)


def test_the_rewrite_replaces_data_and_keeps_the_rest() -> None:
    raw = b"event: message\r\nid: 3\r\nretry: 5\r\ndata: a\r\ndata: b\r\n\r\n"
    out = rewritten(raw, [7, 30], lambda data: data.upper())
    assert client_events(out) == [("message", "A\nB", "3", 5)]


def test_an_event_without_its_blank_line_is_dropped_as_a_client_would() -> None:
    assert rewritten(b"data: whole\n\ndata: half", []) == event("whole", None)


@pytest.mark.parametrize("raw", [b"data: " + b"x" * 2000 + b"\n",
                                 b"data: x\n" * 300, b"x" * 2000])
def test_what_is_too_large_to_hold_raises(raw: bytes) -> None:
    rewriter = EventRewriter(lambda data: data, 1000)
    with pytest.raises(TooLong):
        rewriter.feed(raw)
        rewriter.finish()
