"""Git LFS pointers where a model's files should be: how public weights most often arrive broken.

A repository cloned without Git LFS (or a "raw" link to such a file) holds, in place of each
large file, a small text file (`version https://git-lfs.github.com/spec/v1`, `oid sha256:...`,
`size N`). Read as a checkpoint or pickle it fails on its first byte; read here, the refusal
says what it is and how to fetch the real file.
"""

from __future__ import annotations

import os

from nnunet_transfer.errors import UserError

_SIGNATURE = b"version https://git-lfs.github.com/spec/"
_MAX_POINTER_BYTES = 1024  # the spec keeps pointers under this


def lfs_pointer_fields(path: str) -> dict[str, str] | None:
    """The key / value lines of the Git LFS pointer at `path` (version, oid, size), or None when
    the file is not one."""
    try:
        if os.path.getsize(path) > _MAX_POINTER_BYTES:
            return None
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        return None
    if not text.startswith(_SIGNATURE):
        return None
    fields = {}
    for line in text.decode("utf-8", errors="replace").splitlines():
        key, _, value = line.partition(" ")
        if key:
            fields[key] = value.strip()
    return fields


def refuse_lfs_pointer(path: str) -> None:
    """Raise UserError when the file at `path` is a Git LFS pointer, saying so and how to fetch
    the file it stands for; return quietly otherwise."""
    fields = lfs_pointer_fields(path)
    if fields is None:
        return
    size = fields.get("size", "")
    standing_for = (f"a {int(size):,}-byte file" if size.isdigit() else "a file stored in LFS")
    oid = fields.get("oid", "")
    raise UserError(
        f"{path} is a Git LFS pointer ({os.path.getsize(path)} bytes of text standing for "
        f"{standing_for}{', ' + oid[:19] + '...' if oid else ''}), not the file itself: it was "
        "cloned or downloaded without Git LFS. Fetch the real file with `git lfs pull` in the "
        "repository it came from (`git lfs install` first if Git LFS is new there), or download "
        "the file itself (the hosting site's download link, not the raw pointer), then run "
        "this again.")
