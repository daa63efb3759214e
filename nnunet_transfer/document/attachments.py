"""The files a document shows: images read as data URIs, CSV files read for their preview.

Both say why a file cannot be shown (missing, empty, not an image) instead of failing, so that
a document about unfinished work still gets written.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import re
from dataclasses import dataclass


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


def load_image(path: str) -> tuple[str | None, str]:
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


@dataclass
class CsvPreview:
    header: list[str]
    rows: list[list[str]]      # the preview rows
    n_rows: int                # all data rows
    data: bytes                # the whole file


def read_csv_preview(path: str, preview_rows: int) -> CsvPreview:
    """The header and first `preview_rows` rows of a CSV file; ValueError when it is empty."""
    with open(path, "rb") as f:
        data = f.read()
    text = data.decode("utf-8-sig", errors="replace")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise ValueError("empty file")
    header, body = rows[0], rows[1:]
    return CsvPreview(header, body[:preview_rows], len(body), data)
