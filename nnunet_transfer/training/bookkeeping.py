"""What a run leaves for the analysis: epoch-0 weights, snapshots, a per-epoch log, settings,
read and written here, in the files `run_folder.RunFolder` names (`<fold folder>/transfer/`).

A snapshot (`transfer/snapshots/epoch_NNNN.pth`, network weights after NNNN epochs, 0 = the
start of the run) has nnU-Net's checkpoint layout without optimizer state, so
`nnUNetv2_predict -chk transfer/snapshots/epoch_0010.pth` works; epochs.csv has a row per
finished epoch (see EPOCH_COLUMNS).
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import platform
from importlib import metadata

import torch

from nnunet_transfer.atomic_files import atomic_write_bytes, atomic_write_json
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.run_folder import RunFolder

EPOCH_COLUMNS = (
    "epoch",               # 0-based index of the finished epoch
    "iterations",          # training iterations done so far, this epoch included
    "train_loss",
    "val_loss",
    "pseudo_dice",         # nnU-Net's mean foreground pseudo-Dice on the validation batches
    "ema_pseudo_dice",     # nnU-Net's exponential moving average of it
    "learning_rate",
    "phase",               # the name of the strategy's phase the epoch trained in
    "train_time_s",        # wall time of this epoch's training iterations
    "epoch_time_s",        # wall time of the whole epoch, validation included
    "cumulative_train_time_s",
    "cumulative_time_s",
)

PACKAGES = ("nnunet-transfer", "nnunetv2", "dynamic-network-architectures", "torch",
            "numpy", "batchgenerators", "batchgeneratorsv2", "SimpleITK")


def atomic_torch_save(path: str, content: dict) -> None:
    buffer = io.BytesIO()
    torch.save(content, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_run_checkpoint(path: str, device) -> dict:
    """The run's own nnU-Net checkpoint, for `--c` (nnU-Net's pickles, read as nnU-Net reads
    them); one that cannot be read is a UserError naming it and the way on."""
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except (EOFError, RuntimeError, pickle.UnpicklingError) as error:
        raise UserError(
            f"{path} cannot be read ({type(error).__name__}: {error}); it was probably cut "
            f"off while being written. Move it aside to continue (--c) from the run's other "
            f"checkpoint (checkpoint_latest.pth or checkpoint_best.pth), or start the run "
            f"anew without --c.") from None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class RunRecord:
    """The files of one run's bookkeeping, in `<fold folder>/transfer/`."""

    def __init__(self, fold_folder: str):
        self.files = RunFolder(fold_folder)
        self.folder = self.files.transfer_folder
        self.settings_path = self.files.settings_path
        self.epochs_path = self.files.epochs_path
        self.snapshot_folder = self.files.snapshot_folder

    def snapshot_path(self, epochs_done: int) -> str:
        return self.files.snapshot_path(epochs_done)

    def clear_snapshots(self) -> None:
        if os.path.isdir(self.snapshot_folder):
            for name in os.listdir(self.snapshot_folder):
                if name.startswith("epoch_") and name.endswith(".pth"):
                    os.remove(os.path.join(self.snapshot_folder, name))

    def save_snapshot(self, epochs_done: int, checkpoint: dict) -> str:
        path = self.snapshot_path(epochs_done)
        atomic_torch_save(path, checkpoint)
        return path

    def read_settings(self) -> dict:
        try:
            with open(self.settings_path) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"cannot read {self.settings_path} ({error}); a continued run needs "
                            "the settings its first start wrote. Restore the file or start the "
                            "run anew (without --c).") from None

    def write_settings(self, settings: dict) -> None:
        atomic_write_json(self.settings_path, settings)

    def read_epochs(self) -> list[dict[str, str]]:
        if not os.path.isfile(self.epochs_path):
            return []
        with open(self.epochs_path, newline="") as f:
            return list(csv.DictReader(f))

    def keep_epochs_before(self, epoch: int) -> list[dict[str, str]]:
        """Drop rows of epochs that a resumed run will train again; return the rows kept."""
        kept = [row for row in self.read_epochs() if int(row["epoch"]) < epoch]
        self._write_epochs(kept)
        return kept

    def append_epoch(self, row: dict) -> None:
        self._write_epochs([*self.read_epochs(), {k: row[k] for k in EPOCH_COLUMNS}])

    def _write_epochs(self, rows: list[dict]) -> None:
        # Rewritten whole and atomically: a run killed mid-write leaves the previous log intact.
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=EPOCH_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.epochs_path, text.getvalue().encode())
