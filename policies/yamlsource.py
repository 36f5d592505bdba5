"""YAML to plain data, remembering where each value came from (line and column, 1-based)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

type Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    col: int


class YamlSyntaxError(ValueError):
    def __init__(self, message: str, position: Position) -> None:
        super().__init__(message)
        self.position = position


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


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so `id: no` stays a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _pos(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def load(text: str) -> Located:
    """Parse one YAML document. Raises YamlSyntaxError with a position on bad YAML,
    duplicate keys, or non-scalar keys."""
    try:
        root = yaml.compose(text, Loader=_Loader)
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
    positions: dict[Path, Position] = {}
    if root is None:
        return Located(None, {(): Position(1, 1)})
    data = _convert(root, (), positions)
    return Located(data, positions)


def _convert(node: yaml.Node, path: Path, positions: dict[Path, Position]) -> Any:
    positions[path] = _pos(node)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlSyntaxError("mapping keys must be plain names", _pos(key_node))
            key = str(key_node.value)
            if key in result:
                raise YamlSyntaxError(f"duplicate key {key!r}", _pos(key_node))
            result[key] = _convert(value_node, (*path, key), positions)
            positions[(*path, key)] = _pos(value_node)
            positions[(*path, "<key>", key)] = _pos(key_node)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), positions) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = _Loader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
