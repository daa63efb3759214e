"""The runs an analysis reads: RUN arguments, their snapshots and convergence, the networks
rebuilt from snapshots, untrained networks for the null baseline, and the cases blocks come from.

A RUN argument is `LABEL=FOLD_FOLDER` or just `FOLD_FOLDER`, FOLD_FOLDER being the nnU-Net fold
folder of a run of nnunet-transfer's trainers (it holds transfer/settings.json, transfer/epochs.csv
and transfer/snapshots/epoch_NNNN.pth). Without a label the run is called `<strategy>_fold<fold>`
(from its settings.json, else from the folder names; where two such names collide, the
configuration and then the dataset are added).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import nn

from nnunet_transfer.analysis.defaults import CONVERGENCE_TOLERANCE
from nnunet_transfer.analysis.blocks import preprocessed_folder
from nnunet_transfer.analysis.weights import (
    RUN_SNAPSHOT,
    Convergence,
    check_same_architecture,
    convergence_epoch,
    require_run_folder,
    run_snapshots,
    snapshot_path,
)
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.bookkeeping import RunRecord

NULL_PREFIX = "null-"


# -- runs --------------------------------------------------------------------------------------


@dataclass
class AnalysedRun:
    """One training run given to an analysis on the command line (a RUN argument).

    Attributes:
        label: the name used in tables and figures.
        folder: its nnU-Net fold folder.
        settings: transfer/settings.json ({} when unreadable).

    Its label is free text; which run it is, by the study's naming, is `run_folder.RunId`
    (the study labels its runs from one).
    """

    label: str
    folder: str
    settings: dict = field(repr=False)
    derived_label: bool = False

    @property
    def record(self) -> RunRecord:
        return RunRecord(self.folder)

    @property
    def strategy(self) -> str:
        return str(self.settings.get("strategy") or self.record.files.trainer)

    @property
    def fold(self) -> str:
        fold = self.settings.get("fold")
        return self.record.files.fold if fold is None else str(fold)

    @cached_property
    def snapshots(self) -> dict[int, str]:
        """{epochs done: snapshot path}, sorted; UserError when the run kept none."""
        return run_snapshots(self.folder)

    def snapshot(self, epochs_done: int) -> str:
        """The snapshot after exactly `epochs_done` epochs (UserError listing the kept ones)."""
        return snapshot_path(self.folder, epochs_done)

    @property
    def final_epoch(self) -> int:
        """Epochs done at the run's last snapshot (its final weights once it has finished)."""
        return max(self.snapshots)

    def snapshot_at_or_after(self, epochs_done: int) -> int:
        """The first kept snapshot epoch >= `epochs_done`."""
        later = [epoch for epoch in self.snapshots if epoch >= epochs_done]
        if not later:
            raise UserError(f"run {self.label} ({self.folder}) has no snapshot after "
                            f"{epochs_done} or more epochs; it has "
                            f"{', '.join(map(str, self.snapshots))}")
        return later[0]

    def convergence(self, tolerance: float, column: str) -> Convergence:
        return convergence_epoch(self.record.epochs_path, tolerance, column)

    def epoch_spec(self, text: str | int, tolerance: float = CONVERGENCE_TOLERANCE,
                   column: str = "pseudo_dice") -> int:
        """A snapshot epoch from `final`, `convergence` (the first snapshot at or after the
        convergence epoch) or a number of epochs done (which must have a snapshot)."""
        if text == "final":
            return self.final_epoch
        if text == "convergence":
            return self.snapshot_at_or_after(self.convergence(tolerance, column).epochs_done)
        try:
            epoch = int(text)
        except ValueError:
            raise UserError(f"snapshot {text!r}: give a number of epochs done, 'final' or "
                            "'convergence'") from None
        self.snapshot(epoch)
        return epoch

    def unfinished_note(self) -> str | None:
        """A note when the last snapshot is before the planned number of epochs."""
        planned = self.settings.get("num_epochs")
        if isinstance(planned, int) and self.final_epoch < planned:
            return (f"run {self.label}: the last snapshot is after {self.final_epoch} of "
                    f"{planned} planned epochs (unfinished run?); it is used as the final "
                    "weights")
        return None


def _read_settings(record: RunRecord) -> dict:
    try:
        with open(record.settings_path) as f:
            settings = json.load(f)
        return settings if isinstance(settings, dict) else {}
    except (OSError, ValueError):
        return {}


def parse_run(text: str) -> AnalysedRun:
    """An AnalysedRun from `LABEL=FOLD_FOLDER` or `FOLD_FOLDER`; UserError when the folder is not
    a run.

    A text that is itself an existing path is a folder even if it contains "=".
    """
    label, sep, folder = text.partition("=")
    if not sep or os.path.exists(text) or not label or "/" in label:
        label, folder = "", text
    if not folder:
        raise UserError(f"{text!r}: give FOLD_FOLDER or LABEL=FOLD_FOLDER")
    record = require_run_folder(folder)
    settings = _read_settings(record)
    run = AnalysedRun(label, os.path.normpath(folder), settings, derived_label=not label)
    if not label:
        run.label = f"{run.strategy}_fold{run.fold}"
    return run


def parse_runs(texts: Iterable[str]) -> list[AnalysedRun]:
    """Runs from RUN arguments; labels must be unique (two runs named alike are refused with
    the hint to label them), and so must the folders."""
    runs = [parse_run(text) for text in texts]
    if not runs:
        raise UserError("give at least one run (FOLD_FOLDER or LABEL=FOLD_FOLDER)")
    check_unique(runs)
    return runs


def _disambiguate(runs: Sequence[AnalysedRun]) -> None:
    """Derived labels that collide get the configuration, then the dataset too, e.g.
    Scratch_3d_fullres_weatheritt_fold0 next to Scratch_3d_fullres_fold0."""
    for fields in (("configuration",), ("dataset", "configuration")):
        counts = Counter(run.label for run in runs)
        for run in runs:
            extra = "_".join(str(v) for f in fields if (v := run.settings.get(f)))
            if run.derived_label and counts[run.label] > 1 and extra:
                run.label = f"{run.strategy}_{extra}_fold{run.fold}"


def check_unique(runs: Sequence[AnalysedRun]) -> None:
    """Refuse two runs with one label (after disambiguating derived labels) or one folder."""
    _disambiguate(runs)
    by_label: dict[str, AnalysedRun] = {}
    by_folder: dict[str, AnalysedRun] = {}
    for run in runs:
        if run.label.startswith(NULL_PREFIX):
            raise UserError(f"run label {run.label!r}: labels starting with {NULL_PREFIX!r} are "
                            "reserved for the untrained networks of the null baseline")
        if run.label in by_label:
            raise UserError(f"two runs are labelled {run.label!r} ({by_label[run.label].folder} "
                            f"and {run.folder}); label them, e.g. A={by_label[run.label].folder}")
        real = os.path.realpath(run.folder)
        if real in by_folder:
            raise UserError(f"the run {run.folder} is given twice (as {by_folder[real].label} "
                            f"and {run.label})")
        by_label[run.label], by_folder[real] = run, run


def slug(label: str) -> str:
    """A file-name friendly form of a label."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_") or "run"


# -- networks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """What the networks of an analysis must share for their activations to be compared.

    Attributes:
        dataset: dataset name of the plans (e.g. Dataset502_X).
        plans: plans identifier; configuration: configuration name.
        network_class: the network class name of the configuration.
        folder: the preprocessed data folder blocks are read from.
        patch_size: block size in voxels (3 axes), the configuration's patch size.
    """

    dataset: str
    plans: str
    configuration: str
    network_class: str
    folder: str
    patch_size: tuple[int, ...]

    @property
    def dataset_folder(self) -> str:
        """$nnUNet_preprocessed/<dataset>: where splits_final.json and test_cases.json live."""
        return os.path.dirname(self.folder)

    def describe(self) -> str:
        patch = "x".join(map(str, self.patch_size))
        return (f"{self.network_class}, configuration {self.configuration} of plans "
                f"{self.plans}, dataset {self.dataset}, patch {patch}")


def data_spec(checkpoint: Checkpoint) -> DataSpec:
    init_args = checkpoint.init_args
    if "plans" not in init_args or "configuration" not in init_args:
        raise UserError("the checkpoint has no init_args with plans and configuration; it was "
                        "not written by an nnU-Net trainer")
    folder, patch = preprocessed_folder(init_args["plans"], checkpoint.configuration)
    return DataSpec(checkpoint.dataset_name, checkpoint.plans_name, checkpoint.configuration,
                    checkpoint.architecture, folder, patch)


class NetworkSet:
    """Networks rebuilt from snapshots, all of one architecture and one data configuration.

    The first snapshot added fixes both; a later one of another architecture (tensor names or
    shapes) or trained on other preprocessed data or patch size is refused with a message naming
    both runs. Networks keep their weights on the CPU until the capture moves them.
    """

    def __init__(self) -> None:
        self.networks: dict[str, nn.Module] = {}
        self.owner: dict[str, str] = {}
        self.spec: DataSpec | None = None
        self._reference: tuple[str, Checkpoint] | None = None

    def add(self, name: str, path: str, owner: str) -> nn.Module:
        """Load the snapshot at `path` as network `name`; `owner` names it in messages."""
        checkpoint = Checkpoint.read(path, RUN_SNAPSHOT)
        described = f"run {owner} ({path})"
        if self._reference is None:
            self.spec = data_spec(checkpoint)
            self._reference = (described, checkpoint)
        else:
            reference_label, reference = self._reference
            check_same_architecture(reference, reference_label, checkpoint, described)
            spec = data_spec(checkpoint)
            if spec != self.spec:
                raise UserError(
                    f"{reference_label} and {described} were trained on different data or "
                    f"patches ({self.spec.describe()}, data {self.spec.folder}; vs "
                    f"{spec.describe()}, data {spec.folder}); activations are compared on the "
                    "same input blocks, so compare runs of one dataset and configuration")
        network = checkpoint.network()
        self.networks[name] = network
        self.owner[name] = owner
        return network

    def add_null(self, count: int, seed: int) -> list[str]:
        """`count` untrained networks of the same architecture, each initialised by nnU-Net's
        network constructor under its own torch seed (derived from `seed` and its index);
        returns their names, null-1 ... null-<count>."""
        if self._reference is None:
            raise UserError("add a run's snapshot before the null networks")
        names = []
        state = torch.random.get_rng_state()
        try:
            for index in range(1, count + 1):
                torch.manual_seed(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))
                name = f"{NULL_PREFIX}{index}"
                self.networks[name] = self._reference[1].network(load_weights=False)
                self.owner[name] = "null baseline"
                names.append(name)
        finally:
            torch.random.set_rng_state(state)
        return names

    def release(self, names: Iterable[str]) -> None:
        """Forget networks no longer needed (their memory is freed)."""
        for name in names:
            self.networks.pop(name, None)


# -- the cases blocks come from ----------------------------------------------------------------


def block_cases(runs: Sequence[AnalysedRun], spec: DataSpec, explicit: Sequence[str] | None
                ) -> tuple[list[str] | None, str]:
    """(case ids or None for all, a sentence saying which cases and why).

    Order of preference: the cases given (--cases); the held-out test cases of the preprocessed
    dataset's test_cases.json (`nnunet-transfer splits`); the validation cases shared by the
    folds of all runs in splits_final.json; all preprocessed cases.
    """
    from nnunet_transfer.data.splits import SPLITS_NAME, TEST_NAME, read_case_list

    if explicit:
        return sorted(set(explicit)), f"{len(set(explicit))} case(s) given with --cases"
    test_path = os.path.join(spec.dataset_folder, TEST_NAME)
    if os.path.isfile(test_path):
        cases = read_case_list(test_path)
        if cases:
            return cases, f"the {len(cases)} held-out test case(s) of {test_path}"
    splits_path = os.path.join(spec.dataset_folder, SPLITS_NAME)
    folds = {run.fold for run in runs}
    if os.path.isfile(splits_path) and all(fold.isdigit() for fold in folds):
        try:
            with open(splits_path) as f:
                splits = json.load(f)
            shared = set.intersection(*(set(splits[int(fold)]["val"]) for fold in folds))
        except (OSError, ValueError, IndexError, KeyError, TypeError):
            shared = set()
        if shared:
            fold_text = ", ".join(sorted(folds, key=int))
            return sorted(shared), (f"the {len(shared)} validation case(s) of fold(s) "
                                    f"{fold_text} in {splits_path} (no {TEST_NAME})")
    return None, (f"all preprocessed cases of {spec.folder} (no {TEST_NAME}, and no validation "
                  "cases shared by the runs' folds); some may be training cases of the runs")
