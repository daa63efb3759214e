"""Files written so that a reader never sees them half-written, even after a crash.

Kept free of torch so that the data and evaluation commands import quickly."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `path` through a temporary file in the same folder and an atomic rename."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with written_whole(path) as partial, open(partial, "wb") as f:
        f.write(data)


def atomic_write_json(path: str, content: dict) -> None:
    atomic_write_bytes(path, (json.dumps(content, indent=2, default=str) + "\n").encode())


@contextmanager
def written_whole(path: str) -> Iterator[str]:
    """A temporary name beside `path` for a writer that takes a file name (nnU-Net's
    save_checkpoint); renamed to `path` if the writer wrote it, removed if the writer failed.
    A process killed mid-write leaves the previous `path` whole. The name is this process's
    and thread's own, so concurrent writers of one path never share a temporary file."""
    folder, name = os.path.split(path)
    partial = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        yield partial
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    if os.path.exists(partial):
        os.replace(partial, path)
