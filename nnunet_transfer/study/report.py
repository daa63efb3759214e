"""A study's report: one self-contained HTML page and the same content as Markdown.

`write_report(folder, title, sections)` writes `<folder>/report.html` and `<folder>/report.md`
(each atomically) from a tree of `Section`s. It knows nothing about studies: the runner decides
what goes in; this module lays it out.

What goes into a section and how it comes out:

- `title`: plain text (escaped in both outputs). Sections are numbered (1, 1.2, ...) and listed
  in a table of contents that links to them (`id="s1-2-<title slug>"`, the same anchors in the
  Markdown through `<a id>` lines).
- `markdown`: CommonMark with pipe tables (as pandas / tabulate / `markdown_table` write them),
  turned into HTML by markdown-it-py with raw HTML disabled, so that any `<`, `&` or tag in it is
  shown as text. Table columns whose cells are all numbers (e.g. `0.934 ± 0.012*`) are
  right-aligned unless the table sets an alignment. An image written in it (`![](fig.png)`) is
  inlined like a figure, or replaced by a notice when it cannot be.
- `figures`: (image path, caption). The file is inlined in the HTML as a base64 data URI
  (PNG; JPEG, GIF, WebP and SVG are recognised too) and linked by its path in the Markdown.
- `tables`: (CSV path, caption). The HTML shows the first `PREVIEW_ROWS` rows as a table (every
  cell escaped, numeric columns right-aligned) with a download link; the Markdown shows the same
  rows as a pipe table and links the file.
- `status`: Markdown text shown as a notice at the top of the section (e.g. failed runs).
- Captions, `status`, `summary` and `generated_by` are Markdown (rendered as in `markdown`).

Text that comes from files (CSV cells, paths) and titles is escaped in both outputs. The
Markdown fields are copied into report.md as written, so a viewer that renders raw HTML in
Markdown would render a tag written there, where the HTML page shows it as text: put plain
text (an error message, a name read from a file) into them through `md_escape`, and tables
through `markdown_table`, which escapes every cell.

Paths of figures and tables are taken relative to `folder` unless absolute (the Markdown links
them relative to `folder` either way). A file that is missing, empty or not what it should be is
shown as a notice naming it, not an error, so that a partly finished study still gets its
report.

The HTML page needs nothing else: CSS inline, images as data URIs, no JavaScript, and a
Content-Security-Policy that lets the browser load nothing but those data URIs (so any resource
that would have to be fetched is blocked, not fetched). CSV download links are data URIs too
(`download="<name>.csv"`), so the page alone, mailed or moved, still carries its tables; a CSV
larger than `INLINE_CSV_LIMIT` bytes is linked by its path relative to `folder` instead (the
page says so), to keep the page small. Links written in the Markdown text are kept as written.

Output is deterministic: the same inputs give the same bytes (no time stamp; put one into
`generated_by` if wanted).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import numbers
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence
from urllib.parse import quote, unquote, urlsplit

from markdown_it import MarkdownIt

from nnunet_transfer.atomic_files import atomic_write_bytes

HTML_FILE, MD_FILE = "report.html", "report.md"
PREVIEW_ROWS = 50                 # rows of a CSV shown in the report
INLINE_CSV_LIMIT = 2_000_000      # bytes; a larger CSV is linked by path, not embedded


@dataclass
class Section:
    title: str
    markdown: str = ""
    figures: Sequence[tuple[str, str]] = ()
    tables: Sequence[tuple[str, str]] = ()
    subsections: Sequence["Section"] = ()
    status: str | None = None


# --------------------------------------------------------------------------------------------
# Markdown text (for report.md)

_MD_SPECIAL = re.compile(r"[\\`*\[\]<>|&~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_escape(text: Any) -> str:
    """Plain text as Markdown that shows exactly that text, on one line.

    Backslash-escapes the characters that start inline markup (CommonMark allows a backslash
    before any ASCII punctuation); an underscore inside a word is left alone (it never starts
    emphasis there), so `nnUNetTrainer_FineTune` stays readable."""
    text = " ".join(str(text).split())
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def _md_code(text: str) -> str:
    """`text` as a Markdown code span (fence longer than any backtick run inside)."""
    text = " ".join(text.split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_link_target(path: str) -> str:
    """A relative path as a Markdown link destination (POSIX separators, %-encoded)."""
    return quote(path.replace(os.sep, "/"), safe="/._-~")


def _quote_block(markdown: str) -> str:
    return "\n".join("> " + line if line.strip() else ">" for line in markdown.splitlines())


# --------------------------------------------------------------------------------------------
# Tables

_NUMBER = re.compile(r"""[-+\u2212]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?%?""")
_NUMERIC_CELL = re.compile(rf"""\s*{_NUMBER.pattern}\s*(?:(?:±|\+-|\+/-)\s*{_NUMBER.pattern})?
                               \s*[*†]*\s*""", re.VERBOSE)
_PLACEHOLDERS = {"", "-", "\u2013", "\u2014", "nan", "NaN", "NA", "N/A", "n/a", "<NA>", "None",
                 "inf", "-inf", "+inf", "Infinity", "-Infinity"}


def _is_numeric_column(cells: Iterable[str]) -> bool:
    """True when every cell is a number (placeholders aside) and at least one is."""
    seen = False
    for cell in cells:
        cell = cell.strip()
        if cell in _PLACEHOLDERS:
            continue
        if not _NUMERIC_CELL.fullmatch(cell):
            return False
        seen = True
    return seen


def _is_missing(value: Any) -> bool:
    """None, NaN (float or numpy) or pandas' NA / NaT."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        try:
            return math.isnan(float(value))
        except (TypeError, ValueError):
            return False
    return False


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")


def _format_value(value: Any, digits: int, missing: str) -> str:
    if _is_missing(value):
        return missing
    if _is_bool(value):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.{digits}f}"
    return str(value)


def markdown_table(data: Any, columns: Sequence[str] | None = None, *, digits: int = 3,
                   index: bool = False, missing: str = "-") -> str:
    """A pipe table of a pandas DataFrame, a list of dicts or a list of rows (with `columns`).

    Floats get `digits` decimals, missing values (None, NaN, pandas' NA) `missing`; every cell
    is escaped (`|`, `*`, `<`, ...) so that it shows as written; columns of numbers are
    right-aligned. (`evaluation.stats.to_markdown` lays out the comparison tables; this is the
    generic table.)"""
    if hasattr(data, "columns") and hasattr(data, "itertuples"):          # a DataFrame
        header = [str(c) for c in data.columns]
        rows = [list(row) for row in data.itertuples(index=False, name=None)]
        if index:
            header = [str(data.index.name or "")] + header
            rows = [[label] + row for label, row in zip(data.index, rows)]
    else:
        records = list(data)
        if records and isinstance(records[0], dict):
            header = list(columns) if columns is not None else list(
                dict.fromkeys(key for record in records for key in record))
            rows = [[record.get(key) for key in header] for record in records]
        else:
            if columns is None:
                raise ValueError("markdown_table: give `columns` for rows that are not dicts")
            header, rows = list(columns), [list(row) for row in records]
            if any(len(row) != len(header) for row in rows):
                raise ValueError("markdown_table: every row needs one value per column")
    cells = [[_format_value(v, digits, missing) for v in row] for row in rows]
    numeric = [_is_numeric_column(cells[i][j] for i, row in enumerate(rows)
                                  if not _is_missing(row[j]) and not _is_bool(row[j]))
               for j in range(len(header))]
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


@dataclass
class _Csv:
    header: list[str]
    rows: list[list[str]]      # the preview rows
    n_rows: int                # all data rows
    data: bytes


def _read_csv(path: str) -> _Csv:
    with open(path, "rb") as f:
        data = f.read()
    text = data.decode("utf-8-sig", errors="replace")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise ValueError("empty file")
    header, body = rows[0], rows[1:]
    return _Csv(header, body[:PREVIEW_ROWS], len(body), data)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    width = max([len(header)] + [len(row) for row in rows])
    header = header + [""] * (width - len(header))
    rows = [row + [""] * (width - len(row)) for row in rows]
    numeric = [_is_numeric_column(row[j] for row in rows) for j in range(width)]
    cls = [' class="num"' if num else "" for num in numeric]
    out = ['<div class="table-wrap"><table>', "<thead><tr>"]
    out += [f"<th{cls[j]}>{html.escape(h)}</th>" for j, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td{cls[j]}>{html.escape(c)}</td>"
                                    for j, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Images

def _image_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if re.match(rb"\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*(<!DOCTYPE[^>]*>\s*)?<svg[\s>]",
                data[:4096], re.DOTALL):
        return "image/svg+xml"
    return None


def _load_image(path: str) -> tuple[str | None, str]:
    """(data URI, "") or (None, why it cannot be shown)."""
    if not os.path.isfile(path):
        return None, "file not found"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        return None, f"unreadable ({error.strerror or error})"
    if not data:
        return None, "empty file"
    mime = _image_type(data)
    if mime is None:
        return None, "not an image (PNG, JPEG, GIF, WebP or SVG)"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", ""


# --------------------------------------------------------------------------------------------
# Markdown -> HTML

def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    return slug or "section"


class _Renderer:
    """markdown-it-py, CommonMark + pipe tables + strikethrough, raw HTML shown as text."""

    def __init__(self, folder: str):
        self.folder = folder
        self.md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
        self.md.add_render_rule("table_open", lambda *a: '<div class="table-wrap"><table>\n')
        self.md.add_render_rule("table_close", lambda *a: "</table></div>\n")
        # (markdown-it binds a rule to the renderer as its first argument)
        self.md.add_render_rule("image", lambda renderer, *rest: self._image(renderer, *rest))

    def _image(self, renderer, tokens, idx, options, env):
        token = tokens[idx]
        src = token.attrGet("src") or ""
        alt = renderer.renderInlineAsText(token.children or [], options, env)
        parts = urlsplit(src)
        if src.startswith("data:image/"):
            return renderer.image(tokens, idx, options, env)
        if parts.scheme or parts.netloc or not parts.path:
            why = "not embedded (not a file next to the report)"
        else:
            uri, why = _load_image(os.path.join(self.folder, unquote(parts.path)))
            if uri is not None:
                return f'<img src="{uri}" alt="{html.escape(alt)}">'
        return (f'<span class="notice missing inline"><span class="label">Image not shown:</span> '
                f"<code>{html.escape(src)}</code> ({html.escape(why)}).</span>")

    def block(self, text: str) -> str:
        if not text or not text.strip():
            return ""
        tokens = self.md.parse(text)
        _align_numeric_columns(tokens)
        return self.md.renderer.render(tokens, self.md.options, {})

    def inline(self, text: str) -> str:
        return self.md.renderInline(" ".join((text or "").split()))

    def plain(self, text: str) -> str:
        """Inline Markdown as its plain text (for alt attributes)."""
        tokens = self.md.parseInline(" ".join((text or "").split()))
        children = tokens[0].children if tokens else []
        return self.md.renderer.renderInlineAsText(children or [], self.md.options, {})


def _align_numeric_columns(tokens) -> None:
    """Right-align (class "num") the columns of Markdown tables whose cells are all numbers,
    unless the table gives the column an alignment."""
    i = 0
    while i < len(tokens):
        if tokens[i].type != "table_open":
            i += 1
            continue
        columns: dict[int, list] = {}
        column = 0
        j = i
        while j < len(tokens) and tokens[j].type != "table_close":
            token = tokens[j]
            if token.type == "tr_open":
                column = 0
            elif token.type in ("th_open", "td_open"):
                nxt = tokens[j + 1] if j + 1 < len(tokens) else None
                text = nxt.content if nxt is not None and nxt.type == "inline" else ""
                columns.setdefault(column, []).append((token, text))
                column += 1
            j += 1
        for cells in columns.values():
            body = [text for token, text in cells if token.type == "td_open"]
            if _is_numeric_column(body):
                for token, _ in cells:
                    if not token.attrGet("style"):
                        token.attrSet("class", "num")
        i = j + 1


# --------------------------------------------------------------------------------------------
# The report

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: #1f2328;
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans",
        "Liberation Sans", Arial, sans-serif; }
main { max-width: 72rem; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
h1, h2, h3, h4, h5, h6 { line-height: 1.25; margin: 1.8rem 0 .7rem; }
h1 { font-size: 1.9rem; margin-top: .5rem; padding-bottom: .35rem;
  border-bottom: 2px solid #d1d9e0; }
h2 { font-size: 1.45rem; padding-bottom: .25rem; border-bottom: 1px solid #d1d9e0; }
h3 { font-size: 1.2rem; } h4 { font-size: 1.05rem; } h5, h6 { font-size: 1rem; }
.secnum { color: #59636e; font-weight: 400; margin-right: .2em; }
a { color: #0969da; }
p, ul, ol { margin: .6rem 0; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
  font-size: .88em; background: #f6f8fa; padding: .1em .3em; border-radius: 4px; }
pre { background: #f6f8fa; padding: .7rem 1rem; overflow-x: auto; border-radius: 6px; }
pre code { padding: 0; background: none; }
nav.toc { background: #f6f8fa; border: 1px solid #d1d9e0; border-radius: 6px;
  padding: .6rem 1.2rem .8rem; margin: 1.2rem 0 1.5rem; }
nav.toc .toc-title { font-weight: 600; margin: 0 0 .3rem; }
nav.toc ol { list-style: none; margin: 0; padding-left: 1.2rem; }
nav.toc > ol { padding-left: 0; }
nav.toc a { text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
.table-wrap { max-width: 100%; overflow-x: auto; margin: .6rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d1d9e0; padding: .28rem .65rem; text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; white-space: nowrap; }
td { max-width: 36rem; overflow-wrap: break-word; }
td:first-child { white-space: nowrap; }   /* row labels stay on one line; the table scrolls */
tbody tr:nth-child(even) { background: #fbfcfd; }
th.num, td.num { text-align: right; white-space: nowrap; }
.table-caption, figcaption { font-size: .92rem; color: #353c44; }
.table-caption { margin: 1.2rem 0 .2rem; }
.table-caption .meta { color: #59636e; }
figure { margin: 1.2rem 0; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { margin-top: .35rem; }
.label { font-weight: 600; }
.notice { display: block; border-left: 4px solid #9a6700; background: #fff8c5;
  padding: .5rem .85rem; margin: .8rem 0; border-radius: 0 4px 4px 0; }
.notice > p:first-child { margin-top: 0; } .notice > p:last-child { margin-bottom: 0; }
.notice.missing { border-left-color: #d1242f; background: #ffebe9; }
.notice.inline { display: inline; padding: .1rem .4rem; border-left-width: 3px; }
.notice.empty { border-left-color: #8c959f; background: #f6f8fa; color: #59636e; }
footer { margin-top: 3rem; padding-top: .6rem; border-top: 1px solid #d1d9e0;
  color: #59636e; font-size: .85rem; }
@media print {
  body { font-size: 10pt; }
  main { max-width: none; padding: 0; }
  a { color: inherit; text-decoration: none; }
  nav.toc { background: none; }
  .table-wrap { overflow: visible; }
  table { font-size: 8pt; }
  th, td { white-space: normal; }
  h1, h2, h3, h4, h5, h6 { break-after: avoid; }
  figure, tr, .notice { break-inside: avoid; }
  .notice { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
}
"""

# The page may load nothing but its own data: URIs (images) and inline CSS; no scripts.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class _Builder:
    def __init__(self, folder: str):
        self.folder = folder
        self.render = _Renderer(folder)
        self.html: list[str] = []
        self.md: list[str] = []
        self.figure_count = 0
        self.table_count = 0

    def _resolve(self, path: str) -> str:
        return os.path.join(self.folder, os.fspath(path))

    def _relative(self, path: str) -> str:
        return _md_link_target(os.path.relpath(self._resolve(path), self.folder))

    # -- notices
    def _missing(self, kind: str, path: str, why: str, caption: str) -> None:
        caption = " ".join(caption.split())
        self.html.append(f'<p class="notice missing"><span class="label">{html.escape(kind)} '
                         f"not shown:</span> <code>{html.escape(os.fspath(path))}</code> "
                         f"({html.escape(why)})."
                         + (f' <span class="meta">Caption: {self.render.inline(caption)}</span>'
                            if caption else "") + "</p>")
        self.md.append(f"> **{kind} not shown:** {_md_code(os.fspath(path))} ({md_escape(why)})."
                       + (f" Caption: {caption}" if caption else "") + "\n")

    # -- items
    def figure(self, item) -> None:
        path, caption = _pair(item, "figure")
        uri, why = _load_image(self._resolve(path))
        if uri is None:
            self._missing("Figure", path, why, caption)
            return
        self.figure_count += 1
        label = f"Figure {self.figure_count}."
        caption_html = self.render.inline(caption)
        alt = html.escape(self.render.plain(caption) or os.path.basename(path), quote=True)
        self.html.append(f'<figure id="figure-{self.figure_count}"><img src="{uri}" alt="{alt}">'
                         f'<figcaption><span class="label">{label}</span> {caption_html}'
                         "</figcaption></figure>")
        self.md.append(f"![{label}]({self._relative(path)})\n\n"
                       f"*{label}* {' '.join(caption.split())}".rstrip() + "\n")

    def table(self, item) -> None:
        path, caption = _pair(item, "table")
        resolved = self._resolve(path)
        if not os.path.isfile(resolved):
            self._missing("Table", path, "file not found", caption)
            return
        try:
            table = _read_csv(resolved)
        except (OSError, ValueError, csv.Error) as error:
            why = error.strerror if isinstance(error, OSError) else str(error)
            self._missing("Table", path, f"unreadable ({why})", caption)
            return
        self.table_count += 1
        label = f"Table {self.table_count}."
        name = os.path.basename(resolved)
        relative = self._relative(path)
        shown = (f"{table.n_rows} rows" if table.n_rows <= PREVIEW_ROWS
                 else f"first {PREVIEW_ROWS} of {table.n_rows} rows")
        if len(table.data) <= INLINE_CSV_LIMIT:
            href = "data:text/csv;charset=utf-8;base64," + base64.b64encode(table.data).decode()
            link = (f'<a href="{href}" download="{html.escape(name, quote=True)}">'
                    f"download {html.escape(name)}</a>")
        else:
            link = (f'<a href="{html.escape(relative, quote=True)}">{html.escape(name)}</a> '
                    f"(next to the report; {len(table.data) / 1e6:.1f} MB, not embedded)")
        caption_html = self.render.inline(caption)
        self.html.append(f'<p class="table-caption" id="table-{self.table_count}">'
                         f'<span class="label">{label}</span> {caption_html} '
                         f'<span class="meta">({shown}; {link})</span></p>')
        self.html.append(_html_table(table.header, table.rows))
        self.md.append(" ".join([f"*{label}*", *caption.split(),
                                 f"([{md_escape(name)}]({relative}); {shown})"]) + "\n")
        width = max([len(table.header)] + [len(row) for row in table.rows])
        if width:
            self.md.append(markdown_table(
                [row + [""] * (width - len(row)) for row in table.rows],
                columns=table.header + [""] * (width - len(table.header))))

    # -- sections
    def section(self, section: Section, number: str, depth: int) -> None:
        anchor = _anchor(number, section.title)
        level = min(depth + 1, 6)
        title_text = " ".join(str(section.title).split())
        self.html.append(f'<section id="{anchor}"><h{level}><span class="secnum">{number}</span> '
                         f"{html.escape(title_text)}</h{level}>")
        self.md.append(f'<a id="{anchor}"></a>\n\n{"#" * level} {number} '
                       f"{md_escape(title_text)}\n")
        status = (section.status or "").strip()
        if status:
            self.html.append(f'<div class="notice" role="note">'
                             f"{self.render.block(status)}</div>")
            self.md.append(_quote_block(f"**Note:** {status}") + "\n")
        if section.markdown and section.markdown.strip():
            self.html.append(self.render.block(section.markdown))
            self.md.append(section.markdown.strip() + "\n")
        for item in section.figures:
            self.figure(item)
        for item in section.tables:
            self.table(item)
        if not (status or (section.markdown or "").strip() or section.figures
                or section.tables or section.subsections):
            self.html.append('<p class="notice empty">Nothing to show yet.</p>')
            self.md.append("*Nothing to show yet.*\n")
        for k, sub in enumerate(section.subsections, 1):
            self.section(sub, f"{number}.{k}", depth + 1)
        self.html.append("</section>")


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (os.umask sets it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _pair(item, kind: str) -> tuple[str, str]:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item), ""
    try:
        path, caption = item
    except (TypeError, ValueError):
        raise TypeError(f"a {kind} is (path, caption), got {item!r}") from None
    return os.fspath(path), "" if caption is None else str(caption)


def _anchor(number: str, title: str) -> str:
    return f"s{number.replace('.', '-')}-{_slug(str(title))}"


def _toc(sections: Sequence[Section], prefix: str = "") -> tuple[str, str]:
    """(HTML nested list, Markdown nested list) of the sections."""
    html_items, md_items = [], []
    for k, section in enumerate(sections, 1):
        number = f"{prefix}{k}"
        title = " ".join(str(section.title).split())
        anchor = _anchor(number, section.title)
        sub_html, sub_md = _toc(section.subsections, number + ".")
        html_items.append(f'<li><a href="#{anchor}"><span class="secnum">{number}</span> '
                          f"{html.escape(title)}</a>{sub_html}</li>")
        md_items.append(f"- [{number} {md_escape(title)}](#{anchor})")
        md_items += ["  " + line for line in sub_md.splitlines()]
    if not html_items:
        return "", ""
    return "<ol>" + "".join(html_items) + "</ol>", "\n".join(md_items) + "\n"


def write_report(folder: str, title: str, sections: Sequence[Section], *, summary: str = "",
                 generated_by: str = "") -> tuple[str, str]:
    """Writes <folder>/report.html (one self-contained file: CSS inline, PNGs inlined as base64
    data URIs, CSV tables inlined; no external URL, no JavaScript needed) and <folder>/report.md
    (same content; figures linked by path relative to folder, CSVs linked). Returns (html_path,
    md_path). Atomic writes. See the module docstring for what each field becomes."""
    folder = os.fspath(folder)
    builder = _Builder(folder)
    render = builder.render
    title_text = " ".join(str(title).split())

    builder.md.append(f"# {md_escape(title_text)}\n")
    if summary and summary.strip():
        builder.html.append(f'<div class="summary">{render.block(summary)}</div>')
        builder.md.append(summary.strip() + "\n")
    sections = list(sections)
    if sections:
        toc_html, toc_md = _toc(sections)
        builder.html.append(f'<nav class="toc" aria-label="Contents"><p class="toc-title">'
                            f"Contents</p>{toc_html}</nav>")
        builder.md.append("**Contents**\n\n" + toc_md)
        for k, section in enumerate(sections, 1):
            builder.section(section, str(k), 1)
    else:
        builder.html.append('<p class="notice empty">No results to report yet.</p>')
        builder.md.append("*No results to report yet.*\n")
    if generated_by and generated_by.strip():
        builder.html.append(f"<footer>{render.inline(generated_by)}</footer>")
        builder.md.append("---\n\n" + " ".join(generated_by.split()) + "\n")

    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title_text)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{html.escape(title_text)}</h1>",
        *builder.html,
        "</main>",
        "</body>",
        "</html>",
        "",
    ])
    html_path = os.path.join(folder, HTML_FILE)
    md_path = os.path.join(folder, MD_FILE)
    # atomic_write_bytes leaves its temporary file's mode (0600); a report is for reading, so
    # it gets the mode a new file would get (0666 less the umask)
    umask = _umask()
    for path, data in ((html_path, page), (md_path, "\n".join(builder.md))):
        atomic_write_bytes(path, data.encode("utf-8"))
        os.chmod(path, 0o666 & ~umask)
    return html_path, md_path
