"""YAML to plain data, remembering where each value came from (line and column, 1-based).

Policies arrive from files, hot reload and the control API, so the loader treats its input
as hostile: it builds plain data (mappings, sequences, strings, numbers, booleans, null)
straight from the parser's events and refuses what could make a small document expensive or
mean more than data:

- aliases and anchors (`&a`, `*a`: a 352-byte alias bomb expands to gigabytes),
- merge keys (`<<`), and explicit tags (`!!python/object`, `!custom`, even `!!str`),
- documents larger than MAX_BYTES, with more than MAX_NODES values or nested deeper than
  MAX_DEPTH, and parsing that takes longer than PARSE_SECONDS.

libyaml parses when PyYAML has it (the same events, several times faster).
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

import yaml

type Path = tuple[str | int, ...]

MAX_BYTES = 1024 * 1024          # a 1 MiB policy holds about 10,000 rules
MAX_NODES = 250_000              # values (scalars, mappings, sequences) in one document
MAX_DEPTH = 32                   # a policy needs 6 levels
PARSE_SECONDS = 5.0              # a 1 MiB policy parses in about a second here
_CHECK_EVERY = 256               # events between two looks at the clock


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    col: int


class YamlSyntaxError(ValueError):
    def __init__(self, message: str, position: Position) -> None:
        super().__init__(message)
        self.position = position


class UnreadableFile(ValueError):
    """A policy file that cannot be read; the message says why."""


@dataclass
class Located:
    """The data of a YAML document and the position of every mapping key and value."""

    data: Any
    positions: dict[Path, Position]

    def position(self, path: Path) -> Position:
        """The position of `path`, or of its nearest ancestor that has one."""
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), Position(1, 1))


_Parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Plain (unquoted) scalars: YAML 1.2 core schema. Only true/false are booleans, so `id: no`
# stays a string; dates stay strings too (nothing in a policy is a date).
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$")
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?$"
                    r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")


def _plain(text: str) -> Any:
    if _NULL.match(text):
        return None
    if _BOOL.match(text):
        return text in ("true", "True", "TRUE")
    try:
        if _INT.match(text):
            return int(text.replace("_", ""), 0)
        if _FLOAT.match(text) and ("." in text or "e" in text.lower()):
            lowered = text.lower().replace("_", "")
            return float(lowered.replace(".inf", "inf").replace(".nan", "nan"))
    except ValueError:  # '.', '1e': not numbers after all
        pass
    return text


def _at(event: Any) -> Position:
    mark = event.start_mark
    return Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)


class _Frame:
    """An open mapping or sequence: its data, its path, and for a mapping the key whose
    value comes next."""

    __slots__ = ("data", "key", "path")

    def __init__(self, data: Any, path: Path) -> None:
        self.data = data
        self.path = path
        self.key: str | None = None


class _Builder:
    """Plain data from a stream of parser events, with no recursion: a document nested
    deeper than MAX_DEPTH is refused before the parser reads further."""

    def __init__(self) -> None:
        self.positions: dict[Path, Position] = {}
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.documents = 0
        self.nodes = 0
        self.handlers = {
            yaml.ScalarEvent: self._scalar, yaml.MappingStartEvent: self._open,
            yaml.SequenceStartEvent: self._open, yaml.MappingEndEvent: self._close,
            yaml.SequenceEndEvent: self._close, yaml.AliasEvent: self._alias,
            yaml.DocumentStartEvent: self._document,
        }

    def feed(self, event: Any) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _alias(self, event: Any) -> None:
        raise YamlSyntaxError("YAML aliases (*name) are not allowed in a policy; write the "
                              "value out", _at(event))

    def _document(self, event: Any) -> None:
        self.documents += 1
        if self.documents > 1:
            raise YamlSyntaxError("a policy file holds one YAML document; remove '---'",
                                  _at(event))

    def _check(self, event: Any) -> None:
        """What every value must pass: no anchor, no tag, within the count."""
        if event.anchor is not None:
            raise YamlSyntaxError(f"YAML anchors (&{event.anchor}) are not allowed in a "
                                  "policy; write each value out", _at(event))
        if event.tag is not None and event.tag != "!":
            raise YamlSyntaxError(f"YAML tags ({event.tag}) are not allowed in a policy; "
                                  "write plain values", _at(event))
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise YamlSyntaxError(f"YAML: more than {MAX_NODES} values; split the policy "
                                  "into smaller files", _at(event))

    def _scalar(self, event: Any) -> None:
        self._check(event)
        plain = event.implicit[0] and event.tag is None
        frame = self.stack[-1] if self.stack else None
        if frame is not None and frame.key is None and isinstance(frame.data, dict):
            self._key(frame, event, plain)
            return
        self._place(frame, _plain(event.value) if plain else event.value, event)

    def _key(self, frame: _Frame, event: Any, plain: bool) -> None:
        key = str(event.value)
        if plain and key == "<<":
            raise YamlSyntaxError("YAML merge keys (<<) are not allowed in a policy; write "
                                  "the keys out", _at(event))
        if key in frame.data:
            raise YamlSyntaxError(f"duplicate key {key!r}", _at(event))
        self.positions[(*frame.path, "<key>", key)] = _at(event)
        frame.key = key

    def _open(self, event: Any) -> None:
        self._check(event)
        if len(self.stack) >= MAX_DEPTH:
            raise YamlSyntaxError(f"YAML nested deeper than {MAX_DEPTH} levels", _at(event))
        data: Any = {} if type(event) is yaml.MappingStartEvent else []
        frame = self.stack[-1] if self.stack else None
        path = self._place(frame, data, event)
        self.stack.append(_Frame(data, path))

    def _close(self, _event: Any) -> None:
        self.stack.pop()

    def _place(self, frame: _Frame | None, value: Any, event: Any) -> Path:
        """Put `value` where the document is (root, next item, or the pending key's value)
        and record its position; return its path."""
        path: Path
        if frame is None:
            self.root, path = value, ()
        elif isinstance(frame.data, list):
            path = (*frame.path, len(frame.data))
            frame.data.append(value)
        elif frame.key is None:  # a mapping or sequence used as a key
            raise YamlSyntaxError("mapping keys must be plain names", _at(event))
        else:
            path = (*frame.path, frame.key)
            frame.data[frame.key] = value
            frame.key = None
        self.positions[path] = _at(event)
        return path


def load(text: str) -> Located:
    """Parse one YAML document into plain data. Raises YamlSyntaxError with a position on bad
    YAML, anything but plain data (aliases, anchors, merge keys, tags), duplicate keys,
    non-scalar keys, and documents over the size, value, depth or time limits."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise YamlSyntaxError(f"policy is {size} bytes, more than the {MAX_BYTES} allowed; "
                              "split it into several policies joined by `extends`",
                              Position(1, 1))
    builder = _Builder()
    deadline = time.monotonic() + PARSE_SECONDS
    try:
        for count, event in enumerate(yaml.parse(text, Loader=_Parser)):
            if count % _CHECK_EVERY == 0 and time.monotonic() > deadline:
                raise YamlSyntaxError(f"YAML: parsing took longer than {PARSE_SECONDS:g} s; "
                                      "split the policy into smaller files", _at(event))
            builder.feed(event)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        position = Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)
        raise YamlSyntaxError(f"YAML syntax: {e.problem or e}", position) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        before = text[: e.position]
        position = Position(before.count("\n") + 1, len(before) - before.rfind("\n"))
        character = chr(e.character) if isinstance(e.character, int) else e.character
        raise YamlSyntaxError(f"YAML: character {character!r} is not allowed in YAML",
                              position) from None
    if builder.root is None and () not in builder.positions:
        return Located(None, {(): Position(1, 1)})
    return Located(builder.root, builder.positions)


def read_file(path: FilePath) -> str:
    """A policy file's text. Refused unread: a file over MAX_BYTES, and anything but a
    regular file (opening a FIFO for reading would block until a writer came)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnreadableFile("no such policy file") from None
    except OSError as e:
        raise UnreadableFile(f"cannot read policy file: {e.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile("not a regular file")
        if info.st_size > MAX_BYTES:
            raise UnreadableFile(f"policy is {info.st_size} bytes, more than the {MAX_BYTES} "
                                 "allowed; split it into several policies joined by `extends`")
        try:
            data = handle.read(MAX_BYTES + 1)
        except OSError as e:
            raise UnreadableFile(f"cannot read policy file: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableFile(f"not valid UTF-8 (byte {e.start})") from None
