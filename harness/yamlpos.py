"""YAML loading that remembers the line of every key, so errors can point at it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class PositionedYAMLError(ValueError):
    """Malformed YAML, with file and line."""


def load_with_lines(text: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML; return the data and a map from key path (tuple of keys and
    list indices) to its 1-based line number."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "unknown line"
        problem = getattr(exc, "problem", None) or str(exc)
        raise PositionedYAMLError(f"{where}: malformed YAML: {problem}") from None
    if node is None:
        return None, {}
    lines: dict[tuple, int] = {}
    _walk(node, (), lines)
    data = yaml.safe_load(text)
    return data, lines


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines)


def line_for(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of the deepest prefix of `loc` that the YAML had."""
    for cut in range(len(loc), -1, -1):
        if tuple(loc[:cut]) in lines:
            return lines[tuple(loc[:cut])]
    return None


def read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PositionedYAMLError("file not found") from None
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise PositionedYAMLError(f"cannot read: {exc.__class__.__name__}: {exc}") from None
