"""The documentation agrees with the code: the tables the code declares (strategies, knobs,
study file keys, architectures) are what scripts/write_reference_tables.py writes, and every
relative link between the pages points to a file that exists."""

from __future__ import annotations

import glob
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import write_reference_tables as tables  # noqa: E402

PAGES = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "CONTRIBUTING.md"),
         os.path.join(ROOT, "CHANGELOG.md"),
         *glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("table", tables.GENERATED, ids=lambda t: t.name)
def test_page_holds_the_table_the_code_declares(table):
    with open(os.path.join(ROOT, table.page), encoding="utf-8") as f:
        text = f.read()
    expected = tables.with_table(text, table.name, table.text(), table.page)
    assert text == expected, (f"{table.page} differs from the code; run "
                              "python scripts/write_reference_tables.py")


def test_the_strategy_table_lists_every_strategy():
    from nnunet_transfer.training.strategies import STRATEGIES
    table = tables.strategies_table()
    assert len(STRATEGIES) == 13
    assert all(f"`{s.trainer_name}`" in table for s in STRATEGIES)


def test_a_changed_declaration_makes_the_page_differ(tmp_path, monkeypatch):
    page = tmp_path / "knobs.md"
    start, end = tables.markers("knobs-table")
    page.write_text(f"intro\n{start}\n{tables.knobs_table()}\n{end}\nrest\n")
    monkeypatch.setattr(tables, "ROOT", str(tmp_path))
    monkeypatch.setattr(tables, "GENERATED", (
        tables.GeneratedTable("knobs.md", "knobs-table", lambda: "| changed |"),))
    assert tables.differing_pages() == ["knobs.md (knobs-table)"]
    assert tables.write_table("knobs.md", "knobs-table", "| changed |")
    assert page.read_text() == f"intro\n{start}\n| changed |\n{end}\nrest\n"
    assert tables.differing_pages() == []


def relative_links(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)   # code is not a link
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def anchors(path: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    headings = re.findall(r"^#+ (.*)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_points_to_a_file(page):
    broken = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(page), file)) if file else page
        if not os.path.exists(path):
            broken.append(target)
        elif anchor and path.endswith(".md") and anchor not in anchors(path):
            broken.append(target)
    assert not broken, f"{os.path.relpath(page, ROOT)} has broken links: {broken}"


def test_every_docs_page_is_in_the_index():
    index = os.path.join(ROOT, "docs", "README.md")
    listed = {os.path.normpath(os.path.join(ROOT, "docs", t.split("#")[0]))
              for t in relative_links(index) if not t.startswith("#")}
    pages = {os.path.normpath(p) for p in PAGES if os.sep + "docs" + os.sep in p} - {index}
    assert pages <= listed, sorted(os.path.relpath(p, ROOT) for p in pages - listed)


def test_the_readme_shows_the_test_command_and_stays_short():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "make test" in readme and "make demo" in readme
    assert len(readme.splitlines()) <= 150
