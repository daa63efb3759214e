"""YAML read with the line of every value, so that a study file's mistakes name their line.

PyYAML's `safe_load` drops positions; its node tree (`compose`) keeps them. `load_with_lines`
builds the plain Python value from the nodes and a table {path: line}, where a path is the tuple
of keys and list indices leading to a value, e.g. ("datasets", "source", "id").
"""

from __future__ import annotations

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
