"""Writing an nnU-Net raw dataset case by case: atomic files, re-runs that redo only what changed.

Every volume is written into a hidden temporary folder next to its destination and moved into
place with os.replace, so a reader (or a crash) never sees half a file. NIfTI files cannot be
written under a temporary *name* (ITK picks the format and compression from the ending, and
nnU-Net lists every file ending in .nii.gz, hidden or not), hence the hidden temporary folder:
nnU-Net lists files only, and the folder is on the same file system, so os.replace is atomic.

The manifest (raw_dataset.MANIFEST_NAME) records per case its source files (size and
modification time in ns, as make and rsync judge freshness), a digest of the settings that
shaped it, and its output files with their sizes. A case is redone when any of these changed or
an output is missing. A case is entered in the manifest as pending before its first file is
written, so files of an interrupted run are known to be ours; files the manifest does not know
are never touched, and their presence stops the conversion (they would be counted as cases).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time

import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_transfer.atomic_files import atomic_write_json
from nnunet_transfer.data.raw_dataset import FILE_ENDING, MANIFEST_NAME, SITES_NAME, \
    SPLIT_FOLDERS
from nnunet_transfer.errors import UserError

_PARTIAL = ".partial-"
MANIFEST_SAVE_INTERVAL_S = 2.0


def settings_digest(settings: dict) -> str:
    """A short digest of everything (besides the source files) that shapes a case's output."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_stamp(paths: list[str], settings: str) -> dict:
    stamp = {}
    for path in paths:
        stat = os.stat(path)
        stamp[os.path.abspath(path)] = [stat.st_size, stat.st_mtime_ns]
    return {"sources": stamp, "settings": settings}


class RawDatasetWriter:
    """One nnU-Net raw dataset folder being (re)written; see the module docstring."""

    def __init__(self, folder: str):
        self.folder = folder
        self.manifest_path = os.path.join(folder, MANIFEST_NAME)
        self.cases: dict[str, dict] = self._read_manifest()
        self._remove_partials()
        self._refuse_foreign_files()
        self._partial_folders: dict[str, str] = {}   # destination folder -> its temporary one
        self._last_save = 0.0

    # -- which cases need work -------------------------------------------------------------
    @staticmethod
    def key(split: str, case: str) -> str:
        return f"{split}/{case}"

    def is_current(self, split: str, case: str, stamp: dict) -> bool:
        entry = self.cases.get(self.key(split, case))
        if not entry or not entry.get("complete") or entry.get("stamp") != stamp:
            return False
        return all(os.path.isfile(os.path.join(self.folder, f)) and
                   os.path.getsize(os.path.join(self.folder, f)) == size
                   for f, size in entry["sizes"].items())

    def mark_pending(self, keys: list[tuple[str, str, int]]) -> None:
        """Enter cases (split, case, number of channels) as pending before writing them."""
        for split, case, channels in keys:
            entry = self.cases.setdefault(self.key(split, case), {})
            entry["files"] = sorted(set(entry.get("files", [])) |
                                    set(self.output_files(split, case, channels)))
            entry["complete"] = False
        self._save_manifest()

    def output_files(self, split: str, case: str, channels: int) -> list[str]:
        images, labels = SPLIT_FOLDERS[split]
        files = [f"{images}/{case}_{c:04d}{FILE_ENDING}" for c in range(channels)]
        return files + ([f"{labels}/{case}{FILE_ENDING}"] if labels else [])

    # -- writing ------------------------------------------------------------------------------
    def write_case(self, split: str, case: str, channels: list, label, stamp: dict) -> None:
        """Write one case and record it. Each channel and the label is a SimpleITK image or the
        path of a file already in the dataset's format (.nii.gz), which is copied as it is."""
        files = self.output_files(split, case, len(channels))
        for relative, content in zip(files, [*channels, label]):
            self._atomic_volume(content, os.path.join(self.folder, relative))
        entry = self.cases.setdefault(self.key(split, case), {})
        stale = set(entry.get("files", [])) - set(files)   # e.g. a channel fewer than before
        for relative in stale:
            _remove(os.path.join(self.folder, relative))
        entry.update(files=files, complete=True, stamp=stamp,
                     sizes={f: os.path.getsize(os.path.join(self.folder, f)) for f in files})
        # Completions are saved every few seconds, not per case: rewriting the whole manifest
        # per case grows quadratically with the number of cases. A completion lost in a crash
        # only leaves that case pending, and a pending case is redone by the next run.
        if time.monotonic() - self._last_save > MANIFEST_SAVE_INTERVAL_S:
            self._save_manifest()

    def remove_all_but(self, keep: set[str]) -> list[str]:
        """Delete the files of recorded cases not in `keep` (keys); return the cases removed."""
        removed = []
        for key in sorted(set(self.cases) - keep):
            for relative in self.cases[key].get("files", []):
                _remove(os.path.join(self.folder, relative))
            del self.cases[key]
            removed.append(key)
        if removed:
            self._save_manifest()
        return removed

    def close(self) -> None:
        """Save the manifest and remove the temporary folders (also after an error)."""
        self._save_manifest()
        for partial in self._partial_folders.values():
            shutil.rmtree(partial, ignore_errors=True)
        self._partial_folders.clear()

    def finish(self, channel_names: dict[int, str], labels: dict[str, int],
               sites: dict[str, str], name: str, **dataset_json_fields) -> None:
        """Write dataset.json (nnU-Net's generate_dataset_json) and sites.json."""
        self._save_manifest()
        num_training = sum(1 for key, entry in self.cases.items()
                           if key.startswith("Tr/") and entry.get("complete"))
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=_PARTIAL) as tmp:
            generate_dataset_json(tmp, dict(channel_names), dict(labels), num_training,
                                  FILE_ENDING, dataset_name=name,
                                  converted_by="nnunet-transfer", **dataset_json_fields)
            os.replace(os.path.join(tmp, "dataset.json"),
                       os.path.join(self.folder, "dataset.json"))
        atomic_write_json(os.path.join(self.folder, SITES_NAME), dict(sorted(sites.items())))

    # -- internals -----------------------------------------------------------------------------
    def _read_manifest(self) -> dict:
        if not os.path.isfile(self.manifest_path):
            return {}
        try:
            with open(self.manifest_path) as f:
                return json.load(f)["cases"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"cannot read {self.manifest_path} ({error}); it records which files "
                            "of this dataset were converted. Delete the dataset folder to convert "
                            "anew, or choose another --id") from None

    def _save_manifest(self) -> None:
        atomic_write_json(self.manifest_path, {"version": 1, "cases": self.cases})
        self._last_save = time.monotonic()

    def _atomic_volume(self, content, destination: str) -> None:
        """Write a SimpleITK image, or copy a file, to `destination` atomically."""
        folder = os.path.dirname(destination)
        if folder not in self._partial_folders:
            os.makedirs(folder, exist_ok=True)
            self._partial_folders[folder] = tempfile.mkdtemp(dir=folder, prefix=_PARTIAL)
        partial = os.path.join(self._partial_folders[folder], os.path.basename(destination))
        try:
            if isinstance(content, str):
                shutil.copyfile(content, partial)
            else:
                sitk.WriteImage(content, partial, useCompression=True)
            os.replace(partial, destination)
        finally:
            _remove(partial)

    def _remove_partials(self) -> None:
        for sub in ("", *(f for pair in SPLIT_FOLDERS.values() for f in pair if f)):
            folder = os.path.join(self.folder, sub)
            if os.path.isdir(folder):
                for entry in os.listdir(folder):
                    if entry.startswith(_PARTIAL):
                        shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)

    def _refuse_foreign_files(self) -> None:
        ours = {f for entry in self.cases.values() for f in entry.get("files", [])}
        foreign = []
        for sub in sorted({f for pair in SPLIT_FOLDERS.values() for f in pair if f}):
            folder = os.path.join(self.folder, sub)
            if os.path.isdir(folder):
                foreign += [f"{sub}/{n}" for n in sorted(os.listdir(folder))
                            if os.path.isfile(os.path.join(folder, n)) and f"{sub}/{n}" not in ours]
        if foreign:
            raise UserError(
                f"{self.folder} holds {len(foreign)} file(s) that nnunet-transfer did not write "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); they would be "
                "mixed into the dataset. Choose another --id, or move them away")


def _remove(path: str) -> None:
    if os.path.isfile(path):
        os.remove(path)
