"""Markdown text: plain text escaped so that it shows as written, and the one pipe-table writer
(`markdown_table`) behind the study report, the analysis summaries and the comparison tables.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Sequence
from urllib.parse import quote

from nnunet_transfer.document.cells import format_value, is_bool, is_missing, is_numeric_column

_MD_SPECIAL = re.compile(r"[\\`*\[\]<>|&~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_escape(text: Any) -> str:
    """Plain text as Markdown that shows exactly that text, on one line.

    Backslash-escapes the characters that start inline markup (CommonMark allows a backslash
    before any ASCII punctuation); an underscore inside a word is left alone (it never starts
    emphasis there), so `nnUNetTrainer_FineTune` stays readable."""
    text = " ".join(str(text).split())
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def escape_pipes(text: str) -> str:
    """Only what would break a table row: `|` escaped, line breaks as spaces (other markup in
    the cell is kept, e.g. `0 -> 2` or `*` after a significant value)."""
    return text.replace("|", "\\|").replace("\n", " ")


def md_code(text: str) -> str:
    """`text` as a Markdown code span (fence longer than any backtick run inside)."""
    text = " ".join(text.split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_link_target(path: str) -> str:
    """A relative path as a Markdown link destination (POSIX separators, %-encoded)."""
    return quote(path.replace(os.sep, "/"), safe="/._-~")


def quote_block(markdown: str) -> str:
    return "\n".join("> " + line if line.strip() else ">" for line in markdown.splitlines())


def _header_and_rows(data: Any, columns: Sequence[str] | None,
                     index: bool) -> tuple[list[str], list[list[Any]]]:
    if hasattr(data, "columns") and hasattr(data, "itertuples"):          # a DataFrame
        header = [str(c) for c in data.columns]
        rows = [list(row) for row in data.itertuples(index=False, name=None)]
        if index:
            header = [str(data.index.name or "")] + header
            rows = [[label] + row for label, row in zip(data.index, rows)]
        return header, rows
    records = list(data)
    if records and isinstance(records[0], dict):
        header = list(columns) if columns is not None else list(
            dict.fromkeys(key for record in records for key in record))
        return header, [[record.get(key) for key in header] for record in records]
    if columns is None:
        raise ValueError("markdown_table: give `columns` for rows that are not dicts")
    header, rows = list(columns), [list(row) for row in records]
    if any(len(row) != len(header) for row in rows):
        raise ValueError("markdown_table: every row needs one value per column")
    return header, rows


def _rule(align: str | None, width: int) -> str:
    """The header rule of a column `width` characters wide between its pipes."""
    if align == "left":
        return ":" + "-" * (width - 1)
    if align == "right":
        return "-" * (width - 1) + ":"
    return "-" * width


def markdown_table(data: Any, columns: Sequence[str] | None = None, *, digits: int = 3,
                   index: bool = False, missing: str = "-",
                   as_text: Callable[[Any], str] | None = None,
                   escape: Callable[[str], str] | None = md_escape,
                   align: str | Sequence[str | None] = "numbers", padded: bool = False,
                   end: str = "\n") -> str:
    """A pipe table of a pandas DataFrame, a list of dicts or a list of rows (with `columns`).

    By default floats get `digits` decimals, missing values (None, NaN, pandas' NA) `missing`,
    every cell is escaped (`|`, `*`, `<`, ...) so that it shows as written, and columns of
    numbers are right-aligned. The other layouts in use:

    - `as_text`: how a value becomes its cell's text instead (e.g. `str`, for cells formatted
      by the caller);
    - `escape`: applied to the header and every cell's text (`escape_pipes`; None: as is);
    - `align`: "numbers" (right-align the columns of numbers), "left" (mark every column
      left-aligned, `:---`) or one of None / "left" / "right" per column;
    - `padded`: every column as wide as its widest cell and at least two wider than its
      name, cells padded with spaces to it (right-aligned ones on the left), the layout of
      pandas' `to_markdown`;
    - `end`: what follows the last row.
    """
    header, rows = _header_and_rows(data, columns, index)
    if as_text is None:
        cells = [[format_value(value, digits, missing) for value in row] for row in rows]
    else:
        cells = [[as_text(value) for value in row] for row in rows]
    if align == "numbers":
        aligns = ["right" if is_numeric_column(cells[i][j] for i, row in enumerate(rows)
                                               if not is_missing(row[j]) and not is_bool(row[j]))
                  else None for j in range(len(header))]
    elif isinstance(align, str):
        aligns = [align] * len(header)
    else:
        aligns = list(align)
    if escape is not None:
        header = [escape(h) for h in header]
        cells = [[escape(cell) for cell in row] for row in cells]
    if padded:
        # pandas' to_markdown layout (the comparison tables' files keep it) in a few lines, so
        # that one writer makes every table and tabulate is no longer needed for it.
        widths = [max([len(h) + 2] + [len(row[j]) for row in cells])
                  for j, h in enumerate(header)]
        justify = [str.rjust if a == "right" else str.ljust for a in aligns]
        header = [justify[j](h, widths[j]) for j, h in enumerate(header)]
        cells = [[justify[j](cell, widths[j]) for j, cell in enumerate(row)] for row in cells]
        rules = [_rule(a, width + 2) for a, width in zip(aligns, widths)]
    else:
        rules = [_rule(a, 3 if a is None else 4) for a in aligns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + end
