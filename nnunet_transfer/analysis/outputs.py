"""What every `analyze` command writes: <kind>.csv (and <kind>_*.csv), <kind>*.png and <kind>.md,
each file written atomically into the output folder; and the notes and warnings that reach the
user both on stderr and in the Markdown summary.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from nnunet_transfer import document
from nnunet_transfer.atomic_files import atomic_write_bytes
from nnunet_transfer.errors import UserError


def prepare_output_folder(folder: str) -> str:
    """Create `folder` if needed; UserError when it is a file (checked before any work)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"the output folder {folder} is a file; give a folder (-o)")
    os.makedirs(folder, exist_ok=True)
    return folder


class Notes:
    """Notes and warnings of one analysis, in first-seen order, repeats counted.

    Warnings raised by the library inside `warnings_as_notes` (low datapoints per channel,
    dropped constant channels, rank deficiency, ...) become notes prefixed with the context they
    arose in, e.g. the layer.
    """

    def __init__(self) -> None:
        self._counts: Counter[tuple[str | None, str]] = Counter()

    def add(self, text: str, context: str | None = None) -> None:
        self._counts[(context, text)] += 1

    @contextlib.contextmanager
    def warnings_as_notes(self, context: str | None = None) -> Iterator[None]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for warning in caught:
            self.add(str(warning.message), context)

    def lines(self) -> list[str]:
        """Each distinct note once, '(N times)' for repeats. A context-free note whose text
        also arose with a context is listed with its context only."""
        with_context = {text for context, text in self._counts if context is not None}
        lines = []
        for (context, text), count in self._counts.items():
            if context is None and text in with_context:
                continue
            line = f"{context}: {text}" if context else text
            lines.append(line if count == 1 else f"{line} ({count} times)")
        return lines


@dataclass
class Output:
    """The results of one analysis, before writing.

    Attributes:
        title: heading of the Markdown summary.
        tables: {suffix: table}; "" is <kind>.csv, "summary" is <kind>_summary.csv.
        figures: {suffix: matplotlib Figure}; "" is <kind>.png.
        sections: Markdown blocks (text, tables) of the summary, in order.
    """

    title: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)


def integer_columns(table: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """`columns` as nullable integers: a column with a missing value (e.g. the epoch of a
    null-baseline row) would otherwise be written as floats (2.0)."""
    for column in columns:
        if column in table:
            table[column] = table[column].astype("Int64")
    return table


def _name(kind: str, suffix: str, ending: str) -> str:
    return f"{kind}{'_' + suffix if suffix else ''}.{ending}"


def figure_name(kind: str, suffix: str) -> str:
    """The file name of a kind's figure (`Output.figures` key `suffix`)."""
    return _name(kind, suffix, "png")


def save_figure(figure, path: str) -> None:
    """`figure` as a PNG at `path` (written atomically), as every figure of the package is."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def write_output(kind: str, folder: str, output: Output, notes: Notes, command: str,
                 stream=None) -> list[str]:
    """Write the tables, figures and summary of `output`; print the notes to stderr.

    Returns the paths written, the Markdown summary last.
    """
    stream = stream or sys.stderr
    prepare_output_folder(folder)
    paths = []
    for suffix, table in output.tables.items():
        path = os.path.join(folder, _name(kind, suffix, "csv"))
        atomic_write_bytes(path, table.to_csv(index=False).encode())
        paths.append(path)
    for suffix, figure in output.figures.items():
        path = os.path.join(folder, _name(kind, suffix, "png"))
        save_figure(figure, path)
        paths.append(path)
    note_lines = notes.lines()
    for line in note_lines:
        print(f"nnunet-transfer: warning: {line}", file=stream, flush=True)
    files = ", ".join(f"`{os.path.basename(p)}`" for p in paths)
    text = [f"# {output.title}", *output.sections, "## Notes and warnings",
            "\n".join(f"- {line}" for line in note_lines) if note_lines else "None.",
            "## How this was produced",
            f"`{command}` (nnunet-transfer {_version()}, "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}). Files: {files}."]
    path = os.path.join(folder, _name(kind, "", "md"))
    atomic_write_bytes(path, ("\n\n".join(text) + "\n").encode())
    paths.append(path)
    return paths


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("nnunet-transfer")
    except metadata.PackageNotFoundError:
        return "not installed"


def summary_table(rows: Sequence[Sequence[object]], header: Sequence[str],
                  align_right_from: int = 1) -> str:
    """An analysis summary's table, written by `document.markdown_table` (rows, then columns,
    as there): cells formatted by the caller, only `|` and line breaks escaped, columns from
    `align_right_from` on right-aligned."""
    align = [None if i < align_right_from else "right" for i in range(len(header))]
    return document.markdown_table(rows, header, as_text=str, escape=document.escape_pipes,
                                   align=align, end="")
