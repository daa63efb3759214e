"""YAML read with the line of every value, so that a file's mistakes name their line (the
study file, a custom strategy file).

PyYAML's `safe_load` drops positions; its node tree (`compose`) keeps them. `load_with_lines`
builds the plain Python value from the nodes and a table {path: line}, where a path is the tuple
of keys and list indices leading to a value, e.g. ("datasets", "source", "id"). `Problems`
collects every mistake with its line and raises them together; `Reader` gives typed access to
one mapping, recording mistakes instead of raising.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from nnunet_transfer.errors import UserError

Path = tuple


@dataclass
class LocatedDocument:
    value: object
    lines: dict[Path, int] = field(default_factory=dict)   # 1-based

    def line(self, path: Path) -> int:
        """The line of `path`, else of its closest enclosing value that has one."""
        path = tuple(path)
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


def load_with_lines(text: str, where: str) -> LocatedDocument:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise UserError(f"{where}{at}: not valid YAML ({problem})") from None
    document = LocatedDocument(None)
    if root is None:
        return document
    constructor = yaml.SafeLoader("")  # turns scalar nodes into ints, floats, bools, strings

    def build(node, path: Path):
        document.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out = {}
            for key_node, value_node in node.value:
                key = constructor.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):
                    raise UserError(f"{where}:{key_node.start_mark.line + 1}: a key must be a "
                                    "plain name")
                if key in out:
                    raise UserError(f"{where}:{key_node.start_mark.line + 1}: {key!r} is given "
                                    "twice in the same block")
                out[key] = build(value_node, path + (key,))
                document.lines[path + (key,)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, path + (index,)) for index, item in enumerate(node.value)]
        return constructor.construct_object(node, deep=True)

    document.value = build(root, ())
    return document


def suggest(value, choices) -> str:
    """The closest choice, if one is close, and the list of choices."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{hint}; choose from {', '.join(map(str, choices))}"


class Problems:
    """Every mistake found, with its line; raised together at the end."""

    def __init__(self, where: str, document: LocatedDocument, what: str = "the study file",
                 consequence: str = "nothing was run"):
        self.where, self.document, self.items = where, document, []
        self.what, self.consequence = what, consequence

    def add(self, path: tuple, message: str) -> None:
        dotted = ".".join(str(p) for p in path) or "(top level)"
        self.items.append((self.document.line(path), f"{dotted}: {message}"))

    def raise_if_any(self) -> None:
        if self.items:
            lines = [f"{self.where}:{line}: {text}" for line, text in sorted(self.items)]
            count = len(lines)
            raise UserError(f"{self.what} has {count} mistake{'s' * (count != 1)}; "
                            f"{self.consequence}:\n  " + "\n  ".join(lines))


class Reader:
    """Typed access to the mapping at `path`, recording problems instead of raising."""

    def __init__(self, problems: Problems, value, path: tuple, known: set[str]):
        self.problems, self.path = problems, path
        if value is None:
            value = {}
        if not isinstance(value, dict):
            problems.add(path, f"expected a mapping of keys, got {type(value).__name__}")
            value = {}
        self.value = value
        for key in value:
            if key not in known:
                problems.add(path + (key,), "unknown key" + suggest(key, sorted(known)))

    def get(self, key: str, check: Callable, default=None, required: bool = False):
        if key not in self.value or self.value[key] is None:
            if required:
                self.problems.add(self.path + (key,), "is required")
            return default
        try:
            return check(self.value[key])
        except ValueError as error:
            self.problems.add(self.path + (key,), str(error))
            return default
