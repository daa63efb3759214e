"""Which run (`RunId`), and where a run's files are (`RunFolder`), each declared once.

A run is named by its strategy, its number of training cases n and its seed, written
`STRATEGY:N:SEED` (n and seed may be left out where they are not known): the label of
`nnunet-transfer compare`, of a study's runs and of its analyses. Where the run lives is
nnU-Net's: `<results>/<dataset>/<trainer>__<plans>__<configuration>/fold_<fold>/`, holding
nnU-Net's checkpoints, and our trainers' bookkeeping in `transfer/` (`bookkeeping.RunRecord`
reads and writes it):

    transfer/settings.json          effective settings, pretrained source, parameter counts
    transfer/epochs.csv             one row per finished epoch
    transfer/snapshots/epoch_NNNN.pth   network weights after NNNN epochs

Nothing heavy is imported here: the study and the command line use it too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from nnunet_transfer.errors import UserError

CHECKPOINT_FINAL = "checkpoint_final.pth"
CHECKPOINT_BEST = "checkpoint_best.pth"
CHECKPOINT_LATEST = "checkpoint_latest.pth"   # nnU-Net deletes it at a run's end
FOLD_PREFIX = "fold_"
TRAINER_PREFIX = "nnUNetTrainer_"
SNAPSHOT_NAME = re.compile(r"^epoch_(\d{4,})\.pth$")


@dataclass(frozen=True)
class RunId:
    """Which run: its strategy, training cases and seed (None where not given)."""

    strategy: str
    n: int | None = None
    seed: int | None = None

    def __str__(self) -> str:
        return ":".join([self.strategy] + [str(v) for v in (self.n, self.seed) if v is not None])

    @property
    def folder_name(self) -> str:
        """A file-system friendly name: FineTune_n5_seed0."""
        return "_".join([self.strategy] + ([f"n{self.n}"] if self.n is not None else [])
                        + ([f"seed{self.seed}"] if self.seed is not None else []))

    @classmethod
    def parse(cls, text: str) -> "RunId":
        """`strategy`, `strategy:n` or `strategy:n:seed` (n, seed whole numbers; strategy not
        empty)."""
        match = re.fullmatch(r"([A-Za-z0-9_.+-]+)(?::(\d+))?(?::(\d+))?", text)
        if match is None or (match.group(3) is not None and match.group(2) is None):
            raise UserError(f"run label {text!r}: give STRATEGY, STRATEGY:N or STRATEGY:N:SEED "
                            "(letters, digits, _ . + - in the strategy; whole numbers N and "
                            "SEED)")
        return cls(match.group(1), *(int(g) if g is not None else None
                                     for g in match.group(2, 3)))


def _under(folder: str, name: str) -> property:
    """A path property: `name` in the folder that property (or attribute) `folder` holds."""
    return property(lambda self: os.path.join(getattr(self, folder), name),
                    doc=f"{name} in the run's {folder.removesuffix('_folder')} folder")


@dataclass(frozen=True)
class RunFolder:
    """The files of one run, in its nnU-Net fold folder `path`."""

    path: str

    @classmethod
    def in_results(cls, results: str, dataset_folder_name: str, trainer: str, plans: str,
                   configuration: str, fold) -> "RunFolder":
        """The fold folder nnU-Net trains this trainer, plans, configuration and fold into."""
        return cls(os.path.join(results, dataset_folder_name,
                                f"{trainer}__{plans}__{configuration}", f"{FOLD_PREFIX}{fold}"))

    # -- nnU-Net's files --------------------------------------------------------------------
    def checkpoint(self, name: str = CHECKPOINT_FINAL) -> str:
        return os.path.join(self.path, name)

    @property
    def final_checkpoint(self) -> str:
        return self.checkpoint(CHECKPOINT_FINAL)

    @property
    def interrupted(self) -> bool:
        """Whether an attempt left a checkpoint to continue from (`nnUNetv2_train --c`)."""
        return any(os.path.isfile(self.checkpoint(name))
                   for name in (CHECKPOINT_LATEST, CHECKPOINT_BEST))

    @property
    def fold(self) -> str:
        """The fold, as the folder's name says."""
        return os.path.basename(os.path.normpath(self.path)).removeprefix(FOLD_PREFIX)

    @property
    def trainer(self) -> str:
        """The strategy of the trainer the folder's parent names (or that parent's name)."""
        model_folder = os.path.basename(os.path.dirname(os.path.normpath(self.path)))
        return model_folder.split("__")[0].removeprefix(TRAINER_PREFIX) or model_folder

    @staticmethod
    def fold_folders(model_folder: str) -> list[str]:
        """The names of the fold folders in a model folder."""
        return sorted(name for name in os.listdir(model_folder) if name.startswith(FOLD_PREFIX)
                      and os.path.isdir(os.path.join(model_folder, name)))

    # -- our trainers' bookkeeping ----------------------------------------------------------
    transfer_folder = _under("path", "transfer")
    settings_path = _under("transfer_folder", "settings.json")
    epochs_path = _under("transfer_folder", "epochs.csv")
    snapshot_folder = _under("transfer_folder", "snapshots")

    def snapshot_path(self, epochs_done: int) -> str:
        return os.path.join(self.snapshot_folder, f"epoch_{epochs_done:04d}.pth")

    def snapshot_paths(self) -> dict[int, str]:
        """{epochs done: path} of the snapshots kept, sorted by epoch."""
        folder = self.snapshot_folder
        names = os.listdir(folder) if os.path.isdir(folder) else []
        return dict(sorted((int(m.group(1)), os.path.join(folder, name))
                           for name in names if (m := SNAPSHOT_NAME.match(name))))
