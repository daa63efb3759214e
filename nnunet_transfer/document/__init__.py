"""The document builder: Markdown and self-contained HTML pages, and the one Markdown table
writer. Ground floor: it imports nothing of nnunet_transfer but `atomic_files`, and knows
nothing about studies, analyses or evaluations; the study report, the analysis summaries and
the comparison tables are all written with it.

- `cells`: a value as a table cell's text; whether a column holds numbers.
- `markdown`: escaping plain text for Markdown, and `markdown_table`.
- `attachments`: images as data URIs, CSV previews.
- `html_page`: Markdown -> HTML (markdown-it-py), HTML tables, the page's CSS and CSP.
- `builder`: `Section` and `write_report` (report.html and report.md, with a table of contents,
  figures and CSV tables).
"""

from nnunet_transfer.document.builder import Section, write_report
from nnunet_transfer.document.markdown import escape_pipes, markdown_table, md_escape

__all__ = ["Section", "escape_pipes", "markdown_table", "md_escape", "write_report"]
