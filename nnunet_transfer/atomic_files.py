"""Files written so that a reader never sees them half-written, even after a crash.

Kept free of torch so that the data and evaluation commands import quickly."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `path` through a temporary file in the same folder and an atomic rename."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, content: dict) -> None:
    atomic_write_bytes(path, (json.dumps(content, indent=2, default=str) + "\n").encode())


@contextmanager
def written_whole(path: str) -> Iterator[str]:
    """A temporary name beside `path` for a writer that takes a file name (nnU-Net's
    save_checkpoint); renamed to `path` if the writer wrote it, removed if the writer failed.
    A process killed mid-write leaves the previous `path` whole."""
    folder, name = os.path.split(path)
    partial = os.path.join(folder, f".{name}.partial")
    try:
        yield partial
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    if os.path.exists(partial):
        os.replace(partial, path)
