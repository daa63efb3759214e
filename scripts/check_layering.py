"""The layer order of nnunet_transfer, written down once, and the check that every import keeps it.
A developer tool, not part of the package: `python scripts/check_layering.py` prints what it
finds (exit status 1 when an import breaks the order), `tests/test_layering.py` runs it.

A module may import from its own layer or from a lower one, never from a higher one, and no
modules may import each other in a circle (imports inside functions count: a late import hides
a circle from Python, not from this check). Layers name top-level modules and packages; every
module inside a package belongs to the package's layer, so a new module is covered the moment
it exists. A listed name that does not exist (yet) is no mistake. The trainers nnU-Net
discovers (`trainers/`, shipped as `nnunet_transfer_trainers`) sit above every layer: they may
import anything, nothing of the package may import them.

The check reads the source with `ast` and imports nothing.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

PACKAGE = "nnunet_transfer"

# Bottom-up; each entry is one layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    # the ground floor: errors, file writing, the value rules of user input and the argument
    # types made from them, device types, trainer discovery, the Markdown / HTML / table
    # builder, and YAML read with its lines
    ("errors", "atomic_files", "value_rules", "arguments", "devices", "discovery", "document",
     "yaml_lines"),
    ("architectures", "data"),
    # checkpoints: the format readers, and `inspect`, which judges a file against the
    # strategies (training) and the transferred plans (planning)
    ("planning", "training", "checkpoints"),
    ("evaluation",),
    # analysis and source ranking: what forward passes of trained networks tell
    ("analysis", "source_ranking"),
    ("study",),
    ("cli",),
)

# Import name -> folder beside the package, for the packages above every layer.
ON_TOP: Mapping[str, str] = {"nnunet_transfer_trainers": "trainers"}


@dataclass(frozen=True)
class Module:
    name: str          # dotted, e.g. nnunet_transfer.analysis.measure
    path: str          # relative to the root folder
    is_package: bool   # an __init__.py


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}"


@dataclass(frozen=True)
class Cycle:
    modules: tuple[str, ...]
    imports: tuple[Import, ...]   # the imports between these modules

    def __str__(self) -> str:
        return (f"circle of {len(self.modules)} modules: {', '.join(self.modules)}\n"
                + "\n".join(f"    {i}" for i in self.imports))


@dataclass(frozen=True)
class LayeringReport:
    up_imports: tuple[Import, ...]   # from a lower layer up to a higher one
    cycles: tuple[Cycle, ...]
    uncovered: tuple[str, ...]       # modules of the package in no layer
    modules: tuple[str, ...]         # every module read

    @property
    def ok(self) -> bool:
        return not (self.up_imports or self.cycles or self.uncovered)

    def lines(self) -> list[str]:
        return ([f"up-import: {i}" for i in self.up_imports]
                + [f"import {c}" for c in self.cycles]
                + [f"in no layer: {name}" for name in self.uncovered])


def find_modules(root: str, package: str = PACKAGE,
                 on_top: Mapping[str, str] = ON_TOP) -> dict[str, Module]:
    """Every module of `package` (the folder `root/package`) and of the `on_top` packages."""
    folders = {package: package, **on_top}
    modules = {}
    for name, folder in folders.items():
        top = os.path.join(root, folder)
        for directory, subdirectories, files in os.walk(top):
            subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
            relative = os.path.relpath(directory, top)
            parts = [name] + ([] if relative == "." else relative.split(os.sep))
            for file in sorted(f for f in files if f.endswith(".py")):
                is_package = file == "__init__.py"
                dotted = ".".join(parts if is_package else parts + [file[:-3]])
                modules[dotted] = Module(dotted, os.path.relpath(
                    os.path.join(directory, file), root), is_package)
    return modules


def import_edges(root: str, modules: Mapping[str, Module],
                 on_top: Mapping[str, str] = ON_TOP) -> list[Import]:
    """Every import between `modules`, at module level or inside functions, to the most
    specific module it names (`from a import b` is an import of module a.b when there is one,
    else of a)."""
    # nnU-Net imports the trainers as top-level modules, so they may name each other bare.
    bare = {name.rpartition(".")[2]: name for name in modules
            if name.partition(".")[0] in on_top and not modules[name].is_package}
    edges = []
    for module in modules.values():
        with open(os.path.join(root, module.path), encoding="utf-8") as f:
            tree = ast.parse(f.read(), module.path)
        for node in ast.walk(tree):
            for target in _targets(node, module, modules, bare):
                if target != module.name:
                    edges.append(Import(module.name, target, module.path, node.lineno))
    return edges


def _targets(node: ast.AST, module: Module, modules: Mapping[str, Module],
             bare: Mapping[str, str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield from _nearest(alias.name, modules, bare)
    elif isinstance(node, ast.ImportFrom):
        prefix = node.module or ""
        if node.level:
            base = module.name if module.is_package else module.name.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            prefix = f"{base}.{prefix}" if prefix else base
        for alias in node.names:
            named = _nearest(f"{prefix}.{alias.name}", modules, bare, exact=True)
            yield from named or _nearest(prefix, modules, bare)


def _nearest(name: str, modules: Mapping[str, Module], bare: Mapping[str, str],
             exact: bool = False) -> list[str]:
    """The module `name`, or (unless `exact`) its nearest enclosing package that is one of
    `modules`; nothing for other packages' modules."""
    first, dot, rest = name.partition(".")
    if first in bare:
        name = bare[first] + dot + rest
    while name:
        if name in modules:
            return [name]
        if exact:
            return []
        name = name.rpartition(".")[0]
    return []


def layer_of(name: str, layers: tuple[tuple[str, ...], ...] = LAYERS, package: str = PACKAGE,
             on_top: Mapping[str, str] = ON_TOP) -> int | None:
    """The index of the layer of module `name` (len(layers) for the packages on top), or None
    when no layer covers it. The package's own __init__ is on the ground floor."""
    first, _, rest = name.partition(".")
    if first in on_top:
        return len(layers)
    if first != package:
        return None
    if not rest:
        return 0
    top = rest.partition(".")[0]
    return next((index for index, layer in enumerate(layers) if top in layer), None)


def import_cycles(names, edges: list[Import]) -> list[Cycle]:
    """The strongly connected components of more than one module (Tarjan), each with the
    imports inside it."""
    following: dict[str, list[str]] = {name: [] for name in names}
    for edge in edges:
        following[edge.importer].append(edge.imported)
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = lowest[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for other in following[name]:
            if other not in index:
                visit(other)
                lowest[name] = min(lowest[name], lowest[other])
            elif other in on_stack:
                lowest[name] = min(lowest[name], index[other])
        if lowest[name] == index[name]:
            component = []
            while not component or component[-1] != name:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            components.append(component)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(following) + 100))
    try:
        for name in sorted(following):
            if name not in index:
                visit(name)
    finally:
        sys.setrecursionlimit(limit)
    cycles = []
    for component in components:
        if len(component) > 1:
            members = set(component)
            cycles.append(Cycle(tuple(sorted(members)), tuple(
                e for e in edges if e.importer in members and e.imported in members)))
    return sorted(cycles, key=lambda c: c.modules)


def check_layering(root: str | None = None, layers: tuple[tuple[str, ...], ...] = LAYERS,
                   package: str = PACKAGE, on_top: Mapping[str, str] = ON_TOP
                   ) -> LayeringReport:
    """Up-imports, import circles and uncovered modules of the source tree at `root` (the folder
    holding `package/` and the `on_top` folders; default: the repository this script lies in)."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    modules = find_modules(root, package, on_top)
    edges = import_edges(root, modules, on_top)

    def layer(name: str) -> int | None:
        return layer_of(name, layers, package, on_top)

    up = [e for e in edges if layer(e.importer) is not None and layer(e.imported) is not None
          and layer(e.importer) < layer(e.imported)]
    return LayeringReport(
        up_imports=tuple(up), cycles=tuple(import_cycles(modules, edges)),
        uncovered=tuple(sorted(n for n in modules if layer(n) is None)),
        modules=tuple(sorted(modules)))


def main() -> int:
    report = check_layering()
    print("\n".join(report.lines()) or f"{len(report.modules)} modules keep the layers, no "
                                        "import circles")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
