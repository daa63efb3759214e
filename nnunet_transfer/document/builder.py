"""A report: one self-contained HTML page and the same content as Markdown.

`write_report(folder, title, sections)` writes `<folder>/report.html` and `<folder>/report.md`
(each atomically) from a tree of `Section`s. It knows nothing about studies: the caller (e.g.
the study's results) decides what goes in; this module lays it out.

What goes into a section and how it comes out:

- `title`: plain text (escaped in both outputs). Sections are numbered (1, 1.2, ...) and listed
  in a table of contents that links to them (`id="s1-2-<title slug>"`, the same anchors in the
  Markdown through `<a id>` lines). The table of contents is folded, so that the first section
  starts on the first screen.
- `markdown`: CommonMark with pipe tables (as pandas / tabulate / `markdown_table` write them),
  turned into HTML by markdown-it-py with raw HTML disabled, so that any `<`, `&` or tag in it is
  shown as text. Table columns whose cells are all numbers (e.g. `0.934 ± 0.012*`) are
  right-aligned unless the table sets an alignment. An image written in it (`![](fig.png)`) is
  inlined like a figure, or replaced by a notice when it cannot be.
- `figures`: (image path, caption). The file is inlined in the HTML as a base64 data URI
  (PNG; JPEG, GIF, WebP and SVG are recognised too) and linked by its path in the Markdown.
- `gallery`: (summary, figures): more figures of the same kind (e.g. one per run), folded under
  the summary (`<details>`), so that the section shows its comparative figure and the page
  stays short; the Markdown lists them the same way, folded, each linked by its path.
- `tables`: (CSV path, caption). A data file is a download link; its first `PREVIEW_ROWS` rows
  are folded under it (`<details>`; every cell escaped, numeric columns right-aligned); the
  Markdown links the file and folds the same rows as a pipe table.
- `status`: Markdown text shown as a notice at the top of the section (e.g. failed runs).
- `details`: (summary, Markdown) blocks shown folded at the end of the section (commands, long
  tables); `figures_first` puts the figures before the text (a results section); `key` is the
  section's anchor instead of the numbered one, for links that must not depend on the order.
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
import os
import re
from dataclasses import dataclass
from typing import Sequence

from nnunet_transfer.atomic_files import atomic_write_bytes
from nnunet_transfer.document.attachments import load_image, read_csv_preview
from nnunet_transfer.document.html_page import MarkdownRenderer, html_page, html_table
from nnunet_transfer.document.markdown import (
    markdown_table, md_code, md_escape, md_link_target, quote_block)

HTML_FILE, MD_FILE = "report.html", "report.md"
PREVIEW_ROWS = 50                 # rows of a CSV shown in the report
INLINE_CSV_LIMIT = 2_000_000      # bytes; a larger CSV is linked by path, not embedded


@dataclass
class Section:
    """A numbered section of the report (see the module docstring for what each field holds)."""

    title: str
    markdown: str = ""
    figures: Sequence[tuple[str, str]] = ()
    tables: Sequence[tuple[str, str]] = ()
    subsections: Sequence["Section"] = ()
    status: str | None = None
    key: str | None = None            # the anchor (`id`), instead of one from number and title
    details: Sequence[tuple[str, str]] = ()   # (summary, Markdown) shown collapsed, last
    figures_first: bool = False       # figures before the Markdown text (a results section)
    gallery: tuple[str, Sequence[tuple[str, str]]] | None = None   # (summary, figures), folded


class _Builder:
    """The HTML and Markdown of the page body, built side by side."""

    def __init__(self, folder: str):
        self.folder = folder
        self.render = MarkdownRenderer(folder)
        self.html: list[str] = []
        self.md: list[str] = []
        self.figure_count = 0
        self.table_count = 0

    def _resolve(self, path: str) -> str:
        return os.path.join(self.folder, os.fspath(path))

    def _relative(self, path: str) -> str:
        return md_link_target(os.path.relpath(self._resolve(path), self.folder))

    # -- notices
    def _missing(self, kind: str, path: str, why: str, caption: str) -> None:
        caption = " ".join(caption.split())
        self.html.append(f'<p class="notice missing"><span class="label">{html.escape(kind)} '
                         f"not shown:</span> <code>{html.escape(os.fspath(path))}</code> "
                         f"({html.escape(why)})."
                         + (f' <span class="meta">Caption: {self.render.inline(caption)}</span>'
                            if caption else "") + "</p>")
        self.md.append(f"> **{kind} not shown:** {md_code(os.fspath(path))} ({md_escape(why)})."
                       + (f" Caption: {caption}" if caption else "") + "\n")

    # -- items
    def figure(self, item) -> None:
        path, caption = _pair(item, "figure")
        uri, why = load_image(self._resolve(path))
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

    def gallery(self, summary: str, figures: Sequence) -> None:
        """`figures` folded under `summary`: closed until the reader asks for them."""
        if not figures:
            return
        summary_text = " ".join(str(summary).split())
        self.html.append(f'<details class="gallery"><summary>'
                         f"{self.render.inline(summary_text)}</summary>")
        self.md.append(f"<details><summary>{html.escape(summary_text)}</summary>\n")
        for item in figures:
            self.figure(item)
        self.html.append("</details>")
        self.md.append("</details>\n")

    def table(self, item) -> None:
        path, caption = _pair(item, "table")
        resolved = self._resolve(path)
        if not os.path.isfile(resolved):
            self._missing("Table", path, "file not found", caption)
            return
        try:
            table = read_csv_preview(resolved, PREVIEW_ROWS)
        except (OSError, ValueError, csv.Error) as error:
            why = error.strerror if isinstance(error, OSError) else str(error)
            self._missing("Table", path, f"unreadable ({why})", caption)
            return
        self.table_count += 1
        label = f"Table {self.table_count}."
        name = os.path.basename(resolved)
        relative = self._relative(path)
        shown = (f"{table.n_rows} row{'' if table.n_rows == 1 else 's'}"
                 if table.n_rows <= PREVIEW_ROWS
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
        # a data file is a link; its preview stays folded until asked for
        preview = f"the {shown}" if table.n_rows <= PREVIEW_ROWS else shown
        self.html.append(f'<details class="preview"><summary>show {preview}</summary>'
                         + html_table(table.header, table.rows) + "</details>")
        self.md.append(" ".join([f"*{label}*", *caption.split(),
                                 f"([{md_escape(name)}]({relative}); {shown})"]) + "\n")
        width = max([len(table.header)] + [len(row) for row in table.rows])
        if width:
            self.md.append(f"<details><summary>show {preview}</summary>\n\n" + markdown_table(
                [row + [""] * (width - len(row)) for row in table.rows],
                columns=table.header + [""] * (width - len(table.header)))
                + "\n</details>\n")

    def details(self, item) -> None:
        summary, markdown = item
        summary_text = " ".join(str(summary).split())
        self.html.append(f"<details><summary>{self.render.inline(summary_text)}</summary>"
                         f"{self.render.block(markdown)}</details>")
        self.md.append(f"<details><summary>{html.escape(summary_text)}</summary>\n\n"
                       f"{markdown.strip()}\n\n</details>\n")

    # -- sections
    def section(self, section: Section, number: str, depth: int) -> None:
        anchor = section.key or _anchor(number, section.title)
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
            self.md.append(quote_block(f"**Note:** {status}") + "\n")
        if section.figures_first:
            for item in section.figures:
                self.figure(item)
        if section.markdown and section.markdown.strip():
            self.html.append(self.render.block(section.markdown))
            self.md.append(section.markdown.strip() + "\n")
        if not section.figures_first:
            for item in section.figures:
                self.figure(item)
        if section.gallery:
            self.gallery(*section.gallery)
        for item in section.tables:
            self.table(item)
        for item in section.details:
            self.details(item)
        if not (status or (section.markdown or "").strip() or section.figures
                or section.gallery or section.tables or section.subsections
                or section.details):
            self.html.append('<p class="notice empty">Nothing to show yet.</p>')
            self.md.append("*Nothing to show yet.*\n")
        for k, sub in enumerate(section.subsections, 1):
            self.section(sub, f"{number}.{k}", depth + 1)
        self.html.append("</section>")


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    return slug or "section"


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
        anchor = section.key or _anchor(number, section.title)
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
        # folded, so that the first results stay on the first screen
        builder.html.append(f'<nav class="toc" aria-label="Contents"><details>'
                            f'<summary class="toc-title">Contents</summary>{toc_html}'
                            "</details></nav>")
        builder.md.append("**Contents**\n\n" + toc_md)
        for k, section in enumerate(sections, 1):
            builder.section(section, str(k), 1)
    else:
        builder.html.append('<p class="notice empty">No results to report yet.</p>')
        builder.md.append("*No results to report yet.*\n")
    if generated_by and generated_by.strip():
        builder.html.append(f"<footer>{render.inline(generated_by)}</footer>")
        builder.md.append("---\n\n" + " ".join(generated_by.split()) + "\n")

    page = html_page(title_text, builder.html)
    html_path = os.path.join(folder, HTML_FILE)
    md_path = os.path.join(folder, MD_FILE)
    # atomic_write_bytes leaves its temporary file's mode (0600); a report is for reading, so
    # it gets the mode a new file would get (0666 less the umask)
    umask = _umask()
    for path, data in ((html_path, page), (md_path, "\n".join(builder.md))):
        atomic_write_bytes(path, data.encode("utf-8"))
        os.chmod(path, 0o666 & ~umask)
    return html_path, md_path
