"""Server-sent events read as the MCP SDK's client reads them (httpx2's parser: the WHATWG
event-stream rules, UTF-8 with replacement, lines ended by CRLF, CR or LF, `field: value`
with one leading space dropped; a leading BOM is not dropped, so a first line behind one is
a field no client knows) and written out again in one canonical form, so that what the
gateway checked is exactly what any client gets: no spelling of the stream can mean one
thing to the gateway and another to the client.

`EventRewriter.feed(chunk) -> bytes` and `finish() -> bytes` fit mitmproxy's stream
callables; `rewrite` maps each event's data (a JSON-RPC message, for MCP) to its
replacement. An event or line larger than `limit` raises `TooLong`: held without bound, a
stream could make the gateway hold anything.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field


class TooLong(ValueError):
    pass


@dataclass
class _Event:
    event: str | None = None
    id: str | None = None
    retry: str | None = None
    data: list[str] = field(default_factory=list)
    size: int = 0

    @property
    def pending(self) -> bool:
        return self.event is not None or self.id is not None or self.retry is not None \
            or bool(self.data)


class EventRewriter:
    def __init__(self, rewrite: Callable[[str], str], limit: int) -> None:
        self.rewrite = rewrite
        self.limit = limit
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._event = _Event()

    def feed(self, chunk: bytes) -> bytes:
        return self._lines(self._buffer + self._decoder.decode(chunk), end=False)

    def finish(self) -> bytes:
        """The rest; an event without its closing blank line is never dispatched by the
        client, so it is dropped here too, except that the client takes a CR at the very
        end for a line end followed by an empty line (and dispatches)."""
        text = self._buffer + self._decoder.decode(b"", final=True)
        text = text[:-1] + "\n\n" if text.endswith("\r") else text + "\n" if text else ""
        return self._lines(text, end=True)

    def _lines(self, text: str, end: bool) -> bytes:
        out: list[str] = []
        start = 0
        while True:
            cut = _line_end(text, start, end)
            if cut is None:
                break
            line_end, next_start = cut
            self._line(text[start:line_end], out)
            start = next_start
        self._buffer = text[start:]
        if len(self._buffer) > self.limit:
            raise TooLong(f"a server-sent event line over {self.limit} characters")
        return "".join(out).encode()

    def _line(self, line: str, out: list[str]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line.startswith(":"):
            out.append(line + "\n")     # a comment (a keep-alive): meaningless to a client
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        event = self._event
        event.size += len(line)
        if event.size > self.limit:
            raise TooLong(f"a server-sent event over {self.limit} characters")
        if name == "data":
            event.data.append(value)
        elif name == "event":
            event.event = value
        elif name == "id" and "\0" not in value:
            event.id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            event.retry = value
        # any other field is ignored by clients, and dropped here

    def _dispatch(self, out: list[str]) -> None:
        event, self._event = self._event, _Event()
        if not event.pending:
            return
        lines = []
        if event.event is not None:
            lines.append(f"event: {event.event}")
        if event.id is not None:
            lines.append(f"id: {event.id}")
        if event.retry is not None:
            lines.append(f"retry: {event.retry}")
        if event.data:
            data = "\n".join(event.data)
            new = self.rewrite(data)
            lines += [f"data: {part}" for part in new.split("\n")]
        out.append("\n".join(lines) + "\n\n")


def _line_end(text: str, start: int, end: bool) -> tuple[int, int] | None:
    """(end of the line, start of the next) for the line at `start`; None when the line is
    not complete yet (a CR at the very end may still be followed by LF)."""
    cr, lf = text.find("\r", start), text.find("\n", start)
    if lf != -1 and (cr == -1 or lf < cr):
        return lf, lf + 1
    if cr == -1:
        return None
    if cr + 1 < len(text):
        return cr, cr + 2 if text[cr + 1] == "\n" else cr + 1
    return (cr, cr + 1) if end else None


def event(data: str, name: str | None = "message") -> bytes:
    """One event, written as EventRewriter writes events."""
    head = f"event: {name}\n" if name is not None else ""
    return (head + "".join(f"data: {part}\n" for part in data.split("\n")) + "\n").encode()
