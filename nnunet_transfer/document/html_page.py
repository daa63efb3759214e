"""The HTML side of a document: Markdown rendered by markdown-it-py (raw HTML shown as text,
images inlined, columns of numbers right-aligned), CSV previews as HTML tables, and the page
around them (inline CSS, a Content-Security-Policy that lets it load nothing but its own data
URIs, no JavaScript).
"""

from __future__ import annotations

import html
import os
from urllib.parse import unquote, urlsplit

from markdown_it import MarkdownIt

from nnunet_transfer.document.attachments import load_image
from nnunet_transfer.document.cells import is_numeric_column


class MarkdownRenderer:
    """markdown-it-py, CommonMark + pipe tables + strikethrough, raw HTML shown as text; an
    image is inlined from its file (relative to `folder`) or replaced by a notice."""

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
            uri, why = load_image(os.path.join(self.folder, unquote(parts.path)))
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
            if is_numeric_column(body):
                for token, _ in cells:
                    if not token.attrGet("style"):
                        token.attrSet("class", "num")
        i = j + 1


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """A table of plain text (every cell escaped, short rows filled, numbers right-aligned)."""
    width = max([len(header)] + [len(row) for row in rows])
    header = header + [""] * (width - len(header))
    rows = [row + [""] * (width - len(row)) for row in rows]
    numeric = [is_numeric_column(row[j] for row in rows) for j in range(width)]
    cls = [' class="num"' if num else "" for num in numeric]
    out = ['<div class="table-wrap"><table>', "<thead><tr>"]
    out += [f"<th{cls[j]}>{html.escape(h)}</th>" for j, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td{cls[j]}>{html.escape(c)}</td>"
                                    for j, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


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
  padding: .4rem 1.2rem; margin: .8rem 0 1rem; }
nav.toc .toc-title { font-weight: 600; margin: 0 0 .3rem; }
nav.toc ol { list-style: none; margin: 0; padding-left: 1.2rem; }
nav.toc details > ol { padding-left: 0; }
nav.toc a { text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
details { margin: .5rem 0; }
details > summary { cursor: pointer; color: #0969da; }
details.preview > summary, nav.toc summary { font-size: .9rem; }
details.gallery { border-left: 3px solid #d1d9e0; padding-left: .8rem; }
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


def html_page(title_text: str, body: list[str]) -> str:
    """The whole page: head (CSP, CSS), the title as its heading, then `body`'s parts."""
    return "\n".join([
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
        *body,
        "</main>",
        "</body>",
        "</html>",
        "",
    ])
