#!/usr/bin/env python
"""Write the documentation's tables that the code declares into their pages.

Each table sits in its page between two marker comments, `<!-- NAME:start -->` and
`<!-- NAME:end -->`; this script replaces what is between them. The tables written from the
code (strategies, knobs, study file keys, architectures) are checked by
tests/test_reference_tables.py: a page that differs from what this script writes fails it.
The measured tables (`scripts/benchmark_architectures.py --update-docs`) go through the same
`write_table` into docs/benchmarks.md.

    python scripts/write_reference_tables.py           # rewrite the pages
    python scripts/write_reference_tables.py --check   # exit 1 naming the pages that differ
"""

from __future__ import annotations

import argparse
import json
import os
import pydoc
import re
import sys
from dataclasses import dataclass
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class GeneratedTable:
    page: str                  # relative to the repository root
    name: str                  # the marker name
    text: Callable[[], str]    # the table as the code declares it now


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def with_table(page_text: str, name: str, table: str, page: str) -> str:
    """`page_text` with the block between the markers of `name` replaced by `table`."""
    start, end = markers(name)
    if start not in page_text or end not in page_text:
        raise SystemExit(f"{page} has no {start} ... {end} block to write the table into")
    block = f"{start}\n{table.rstrip()}\n{end}"
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, page_text,
                  flags=re.S)


def write_table(page: str, name: str, table: str) -> bool:
    """Write `table` into `page` between its markers; whether the page changed."""
    path = os.path.join(ROOT, page)
    with open(path, encoding="utf-8") as f:
        old = f.read()
    new = with_table(old, name, table, page)
    if new != old:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return new != old


def _table(records: list[dict]) -> str:
    from nnunet_transfer.document import escape_pipes, markdown_table
    return markdown_table(records, as_text=str, escape=escape_pipes,
                          align=[None] * len(records[0])).rstrip()


def strategies_table() -> str:
    from nnunet_transfer.architectures.parts import PARTS
    from nnunet_transfer.training.strategies import STRATEGIES
    return _table([{
        "trainer (`-tr`)": f"`{s.trainer_name}`",
        "`-pretrained_weights`": s.pretrained.value,
        "initial LR": f"{0.01 * s.lr_factor:g} (x{s.lr_factor:g})",
        "frozen at the start": ", ".join(p for p in PARTS if p in s.frozen_parts) or "nothing",
        "phases": ", ".join(p.name for p in s.schedule.phases),
        "what trains": s.summary,
    } for s in STRATEGIES])


def knobs_table() -> str:
    from nnunet_transfer.training.budget import KNOBS
    return _table([{"variable": f"`{k.variable}`", "`env` option": f"`{k.option}`",
                    "meaning (default)": k.described} for k in KNOBS])


def study_keys_table() -> str:
    from nnunet_transfer.study.study_file import TOP_LEVEL_KEYS
    return _table([{"key": f"`{key}`", "meaning (default)": meaning}
                   for key, meaning in TOP_LEVEL_KEYS.items()])


def architectures_table() -> str:
    from importlib import resources
    from nnunet_transfer.architectures.registry import ARCHITECTURES
    rows = []
    for name in ARCHITECTURES:
        template = json.loads(resources.files("nnunet_transfer_plans")
                              .joinpath(f"{name}.json").read_text())
        network = template["network_class_name"]
        rows.append({"name": f"`{name}`",
                     "network": f"`{network.removeprefix('nnunet_transfer.architectures.')}`",
                     "deep supervision": "yes" if pydoc.locate(network).has_deep_supervision
                     else "no",
                     "what it is": template["description"]})
    return _table(rows)


GENERATED = (
    GeneratedTable("docs/reference/strategies.md", "strategies-table", strategies_table),
    GeneratedTable("docs/reference/knobs.md", "knobs-table", knobs_table),
    GeneratedTable("docs/reference/study_file.md", "study-keys-table", study_keys_table),
    GeneratedTable("docs/reference/architectures.md", "architectures-table",
                   architectures_table),
)


def differing_pages() -> list[str]:
    """The generated tables whose page does not hold what the code declares now."""
    differing = []
    for table in GENERATED:
        with open(os.path.join(ROOT, table.page), encoding="utf-8") as f:
            text = f.read()
        if with_table(text, table.name, table.text(), table.page) != text:
            differing.append(f"{table.page} ({table.name})")
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a page differs from the code")
    args = parser.parse_args()
    if args.check:
        differing = differing_pages()
        for page in differing:
            print(f"out of date: {page}; run python scripts/write_reference_tables.py")
        sys.exit(1 if differing else 0)
    for table in GENERATED:
        if write_table(table.page, table.name, table.text()):
            print(f"updated {table.page} ({table.name})")


if __name__ == "__main__":
    main()
