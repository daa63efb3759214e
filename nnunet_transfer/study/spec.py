"""What a study is, as `study_file.load_study` reads it from its file: `StudySpec` and its
parts (the datasets, the models it starts from, the executor, the training budget).

A spec holds objects, not names to look up again: its strategies are the `Strategy` objects of
`training.strategies`, its budget is made of the trainer's own `Budget` (the study file keeps
its keys `iterations` / `val_iterations`; in the code they are the knobs `iters` / `val_iters`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from nnunet_transfer.analysis.options import AnalysisSettings
from nnunet_transfer.planning.nnssl_plans import NnsslArchitecture
from nnunet_transfer.training.budget import Budget
from nnunet_transfer.training.run_folder import CHECKPOINT_BEST, CHECKPOINT_FINAL
from nnunet_transfer.training.strategies import Strategy

UNET = "unet"
ALL = "all"
DATASET_KINDS = ("synthetic", "msd", "subset", "degrade", "pool", "existing")
# how a study runs its jobs: here, through SLURM, or through submitit on this machine
EXECUTOR_KINDS = ("local", "slurm", "submitit-local")
DEVICES = ("auto", "cpu", "cuda")
# the checkpoints a finished run keeps
CHECKPOINTS = (CHECKPOINT_FINAL, CHECKPOINT_BEST)
# The knobs a study sets for every training: lr, load and head are left to the trainer, the CPU
# threads are the executor's share of the machine (executors.sharing).
STUDY_KNOBS = ("epochs", "iters", "val_iters", "snapshot_every", "seed")


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    id: int
    name: str
    kind: str
    options: dict

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.id:03d}_{self.name}"

    @property
    def inputs(self) -> tuple[str, ...]:
        """Keys of the datasets this one is made from."""
        if self.kind in ("subset", "degrade"):
            keys = [self.options[self.kind]]
            if self.options.get("exclude"):
                keys.append(self.options["exclude"])
            return tuple(keys)
        if self.kind == "pool":
            return tuple(self.options["pool"])
        return ()


@dataclass(frozen=True)
class ModelSpec:
    """A model the study fine-tunes from (`models: {KEY: {path: PATH}}`), as it was read when
    the study file was checked (`model_sources.read_model`).

    Attributes:
        key: its key in the study file, named in `source:` like a dataset's.
        path: the absolute path as given (what `-pretrained_weights` gets): a v2 model, fold
            folder or checkpoint file, a v1 model folder or `.model`, an nnssl checkpoint.
        format: the checkpoint's format (checkpoints.content FORMAT_*).
        checkpoint: the absolute path of the checkpoint file that is loaded.
        files: the files a run reads from it (the checkpoint and the plans / dataset json
            beside it), whose sha256 the study records when it starts.
        configuration: the model's own configuration, which the target is preprocessed for
            (None for an nnssl encoder: it carries no nnU-Net plans; the target is planned
            with the study's `plans:`).
        plans_name: the identifier of the model's plans (None without plans).
        plans_digest: sha256 of its plans as they reach the target (without their names), so
            that models with the same plans share one preprocessing.
        labels: the model's label names (None when unknown).
        encoder_only: it holds an encoder only (decoder and head start fresh).
        nnssl: for an nnssl encoder, the network it was pretrained in, which its runs train
            under the target's own plans (`planning.nnssl_plans`); None for other models.
    """

    key: str
    path: str
    format: str
    checkpoint: str
    files: tuple[str, ...]
    configuration: str | None
    plans_name: str | None
    plans_digest: str | None
    labels: tuple[str, ...] | None
    encoder_only: bool
    nnssl: NnsslArchitecture | None = None


@dataclass(frozen=True)
class StudyBudget:
    """The trainings' knobs: `target` for the runs on the target (each with its own seed),
    `source` for the pretrainings (seed 0, no snapshots but the first and the final ones)."""

    target: Budget
    source: Budget

    @classmethod
    def of(cls, epochs: int = 8, iters: int = 25, val_iters: int = 2, snapshot_every: int = 1,
           source_epochs: int = 16, source_iters: int | None = None) -> "StudyBudget":
        """The budget of a study file (its defaults); the sources train `iters` per epoch unless
        `source_iters` says otherwise."""
        return cls(target=Budget(epochs=epochs, iters=iters, val_iters=val_iters,
                                 snapshot_every=snapshot_every),
                   source=Budget(epochs=source_epochs, iters=source_iters or iters,
                                 val_iters=val_iters, snapshot_every=0, seed=0))

    def run_environment(self, seed: int) -> dict[str, str]:
        """The knob variables of a run on the target initialised with `seed`."""
        return replace(self.target, seed=seed).environment(STUDY_KNOBS)

    def pretraining_environment(self) -> dict[str, str]:
        """The knob variables of a pretraining on a source."""
        return self.source.environment(STUDY_KNOBS)


@dataclass(frozen=True)
class PredictionSpec:
    """nnUNetv2_predict's settings for the test cases, with nnU-Net's defaults: mirroring
    test-time augmentation on, sliding-window step 0.5 of the patch, the final checkpoint."""

    step_size: float = 0.5
    disable_tta: bool = False
    checkpoint: str = CHECKPOINTS[0]

    def arguments(self) -> list[str]:
        """nnUNetv2_predict's options for these settings (written out even where they are
        nnU-Net's defaults, so that a job's log says how it predicted)."""
        return ["-step_size", str(self.step_size), "-chk", self.checkpoint] + (
            ["--disable_tta"] if self.disable_tta else [])


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str = "local"
    jobs: int | None = None       # None: the executor's default (executors.kinds.jobs_in_flight)
    slurm: dict = field(default_factory=dict)
    attempts: int = 3             # a job SLURM (or a crash) ended this often stays failed


@dataclass(frozen=True)
class StudySpec:
    path: str
    name: str
    workdir: str
    nnunet: dict                      # raw, preprocessed, results: absolute folders
    device: str
    executor: ExecutorSpec
    datasets: dict                    # key -> DatasetSpec
    sources: tuple[str, ...]
    target: str
    test_cases: int
    test_seed: int
    validation_cases: int | None      # at most this many validation cases per fold
    generalization: str | None
    plans: str
    configuration: str
    small_plans: dict | None
    sizes: tuple                      # ints and/or "all"
    seeds: tuple[int, ...]
    strategies: tuple[Strategy, ...]
    architectures: tuple[str, ...]    # "unet" and/or names of architectures.registry
    budget: StudyBudget
    analyses: tuple[str, ...]
    analysis: AnalysisSettings        # what the study file's `analysis` sets, device "auto"
    prediction: PredictionSpec = PredictionSpec()
    models: dict = field(default_factory=dict)   # key -> ModelSpec (sources that are models)
    defaults: tuple[str, ...] = ()    # what the study chose where the file is silent (check)

    def is_model(self, source: str) -> bool:
        """Whether the source is a model (else a dataset the study pretrains on)."""
        return source in self.models

    def source_kind(self, source: str) -> str:
        """A source's kind in words: the dataset's or the model's format."""
        if self.is_model(source):
            return self.models[source].format
        return f"dataset {self.datasets[source].folder_name}, pretrained in the study"

    @property
    def state_folder(self) -> str:
        return os.path.join(self.workdir, "study")
