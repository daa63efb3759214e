"""The grid of a study: which networks are pretrained, which runs are trained, predicted and
analysed, and where each one's files are.

Every name here is a pure function of the study file, so a re-run finds the same runs, folds
and folders, and nothing finished is redone.

Run identity in nnU-Net's results folder: the target dataset, the trainer (= strategy), the
plans (the target preprocessed with one source's plans: a dataset source's planned in the study,
a model source's own; models whose plans are the same share one preprocessed folder, each with
its own plans identifier), the configuration (= architecture) and
the fold. Each (n, seed) of the few-shot splits is its own fold (splits.few_shot_folds: n outer,
seed inner), so no two runs of the grid share a folder. The seed is also the run's
initialisation seed (NNUNET_TRANSFER_SEED).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nnunet_transfer.study.spec import ALL, UNET, StudySpec
from nnunet_transfer.training.run_folder import RunFolder, RunId
from nnunet_transfer.training.strategies import SCRATCH, Strategy

PRETRAIN_TRAINER = SCRATCH.trainer_name   # the sources are trained from scratch
UNSEEN_PREFIX = "unseen_"   # the unseen test set's cases among the images every run predicts
TEST, GENERALIZATION = "test", "generalization"


def plans_of_source(spec: StudySpec) -> str:
    """The plans identifier the sources are trained with (the small CPU variant when asked)."""
    return "nnUNetPlansStudy" if spec.small_plans else spec.plans


def transferred_plans(spec: StudySpec, source_key: str) -> str:
    """The target's plans made from a source's: a dataset source's as planning.transfer_plans
    names them (<plans>_from<id>), a model's <its plans>_from_<key> (a key, unlike an id, may
    hold letters, so the two never meet); an nnssl encoder's <the study's plans>_from_<key>,
    the target's own plans with the encoder's network (`planning.nnssl_plans`)."""
    if spec.is_model(source_key):
        model = spec.models[source_key]
        plans = plans_of_source(spec) if model.nnssl else model.plans_name or "plans"
        return f"{plans}_from_{source_key}"
    return f"{plans_of_source(spec)}_from{spec.datasets[source_key].id:03d}"


def preprocessing_source(spec: StudySpec, source_key: str) -> str:
    """The source whose preprocessed target data this source's runs read: the first model
    source with the same plans and configuration (so they are preprocessed once); itself for
    every other source."""
    model = spec.models.get(source_key)
    if model is None or model.plans_digest is None:   # a dataset, or a model without plans
        return source_key
    return next(s for s in spec.sources if spec.is_model(s)
                and spec.models[s].plans_digest == model.plans_digest)


def configuration_of(spec: StudySpec, source: str, architecture: str) -> str:
    """The configuration a source's runs train: a model's own, else the study's (with the
    architecture's suffix; an nnssl encoder's runs train the study's configuration, its network
    replaced)."""
    if spec.is_model(source) and not spec.models[source].nnssl:
        return spec.models[source].configuration
    if architecture == UNET:
        return spec.configuration
    from nnunet_transfer.planning.architecture_configurations import \
        architecture_configuration_name
    return architecture_configuration_name(spec.configuration, architecture)


def resolve_size(size, pool_size: int) -> int:
    """A size of the study file as a number of training cases; `all` is the whole pool but one
    case, which stays for nnU-Net's validation."""
    return pool_size - 1 if size == ALL else int(size)


@dataclass(frozen=True)
class Pretraining:
    source: str
    architecture: str

    @property
    def key(self) -> str:
        return f"pretrain__{self.source}__{self.architecture}"


@dataclass(frozen=True)
class Run:
    source: str
    architecture: str
    strategy: Strategy
    size: object         # as in the study file: a number or "all"
    n: int               # training cases
    seed: int
    fold: int

    @property
    def key(self) -> str:
        return (f"{self.strategy.name}__n{self.n}__seed{self.seed}__{self.architecture}__"
                f"{self.source}")

    @property
    def id(self) -> RunId:
        return RunId(self.strategy.name, self.n, self.seed)

    @property
    def label(self) -> str:
        """STRATEGY:N:SEED, the run label of `nnunet-transfer compare`."""
        return str(self.id)

    @property
    def cell(self) -> tuple[str, str, int]:
        """The runs that are tabulated and analysed together: same source, architecture, n."""
        return (self.source, self.architecture, self.n)

    # the keys of its jobs
    @property
    def train_key(self) -> str:
        return f"train__{self.key}"

    @property
    def predict_key(self) -> str:
        return f"predict__{self.key}"


def analysis_key(kind: str, cell: tuple) -> str:
    """The key of the job of one analysis kind on a cell."""
    source, architecture, n = cell
    return f"analyze_{kind}__{source}__{architecture}__n{n}"


def cells(runs: list[Run]) -> list[tuple]:
    """The cells of these runs, in the runs' order."""
    return list(dict.fromkeys(run.cell for run in runs))


# The job that ranks the sources (`nnunet-transfer rank-sources`) before the trainings.
RANKING_KEY = "rank__sources"


def unranked_sources(spec: StudySpec) -> dict[str, str]:
    """The sources `rank-sources` cannot score, with why: an nnssl encoder has no decoder whose
    features it scores and no plans of its own to compare."""
    return {source: "an nnssl encoder: rank-sources scores a source's decoder features, and it "
                    "has no decoder (nor plans of its own)"
            for source in spec.sources if spec.is_model(source) and spec.models[source].nnssl}


def ranked_sources(spec: StudySpec) -> tuple[str, ...]:
    """The sources the ranking scores: every source but the `unranked_sources`."""
    left_out = unranked_sources(spec)
    return tuple(s for s in spec.sources if s not in left_out)


def ranks_sources(spec: StudySpec) -> bool:
    """Whether the study ranks its sources: where there are two or more it can score and a
    strategy that loads one (the report then tests the ranking against the fine-tuned one)."""
    return len(ranked_sources(spec)) >= 2 and any(s.needs_pretrained for s in spec.strategies)


def ranking_architecture(spec: StudySpec) -> str:
    """The architecture whose source networks are ranked: the study's first (model sources
    bring their own network, which is `unet`)."""
    return spec.architectures[0]


def job_keys(spec: StudySpec, pretrainings: list[Pretraining], runs: list[Run]) -> list[str]:
    """The keys of every job of the study, in `jobs.StudyJobs.all`'s order."""
    return [*(p.key for p in pretrainings), *((RANKING_KEY,) if ranks_sources(spec) else ()),
            *(key for run in runs for key in (run.train_key, run.predict_key)),
            *(analysis_key(kind, cell) for cell in cells(runs) for kind in spec.analyses)]


class StudyLayout:
    """Where the study's files are."""

    def __init__(self, spec: StudySpec):
        self.spec = spec
        self.root = spec.state_folder

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def state_file(self) -> str:
        return self.path("state.json")

    @property
    def models_record(self) -> str:
        """The sha256 of every model source's files, as they were when the study started."""
        return self.path("models.json")

    @property
    def test_images(self) -> str:
        return self.path("test", "imagesTs")

    @property
    def test_labels(self) -> str:
        return self.path("test", "labelsTs")

    @property
    def test_dataset_json(self) -> str:
        return self.path("test", "dataset.json")

    @property
    def ranking_csv(self) -> str:
        """`rank-sources`' table of the study's sources (source, rank, score, ...)."""
        return self.path("ranking", "sources.csv")

    @property
    def ranking_excluded_cases(self) -> str:
        """The held-out test cases, one per line, that `rank-sources` is told never to read."""
        return self.path("ranking", "test_cases.txt")

    @property
    def generalization_labels(self) -> str:
        return self.path("test", "labelsUnseen")

    def labels(self, test_set: str) -> str:
        return self.test_labels if test_set == TEST else self.generalization_labels

    def job_folder(self, key: str) -> str:
        return self.path("jobs", key)

    def predictions(self, run: Run) -> str:
        return self.path("predictions", run.key)

    def evaluation(self, run: Run, test_set: str = "test") -> str:
        return self.path("evaluations", test_set, run.key)

    def cell_folder(self, kind: str, cell: tuple) -> str:
        source, architecture, n = cell
        return self.path(kind, f"{source}__{architecture}__n{n}")

    # the run folders are nnU-Net's, named by `RunFolder`
    def pretrained_folder(self, pretraining: Pretraining) -> RunFolder:
        source = self.spec.datasets[pretraining.source]
        return RunFolder.in_results(
            self.spec.nnunet["results"], source.folder_name, PRETRAIN_TRAINER,
            plans_of_source(self.spec),
            configuration_of(self.spec, pretraining.source, pretraining.architecture), "all")

    def source_weights(self, source: str, architecture: str) -> str:
        """What a run from `source` loads (its -pretrained_weights): a dataset source's
        pretraining's final checkpoint, a model source's path as the study file gives it."""
        if self.spec.is_model(source):
            return self.spec.models[source].path
        return self.pretrained_folder(Pretraining(source, architecture)).final_checkpoint

    def run_folder(self, run: Run) -> RunFolder:
        target = self.spec.datasets[self.spec.target]
        return RunFolder.in_results(
            self.spec.nnunet["results"], target.folder_name, run.strategy.trainer_name,
            transferred_plans(self.spec, run.source),
            configuration_of(self.spec, run.source, run.architecture), run.fold)


def expand(spec: StudySpec, pool_size: int) -> tuple[list[Pretraining], list[Run]]:
    """The pretrainings and runs of the study, given the size of the target's training pool
    (its training cases minus the held-out test cases)."""
    ns, seeds = study_ns(spec, pool_size), sorted(spec.seeds)
    fold_of = {(n, seed): index for index, (n, seed) in
               enumerate((n, seed) for n in ns for seed in seeds)}
    pretrainings: list[Pretraining] = []
    runs: dict[str, Run] = {}
    for source in spec.sources:
        for architecture in spec.architectures:
            if not spec.is_model(source) and any(s.needs_pretrained for s in spec.strategies):
                pretrainings.append(Pretraining(source, architecture))
            for size in spec.sizes:
                n = resolve_size(size, pool_size)
                for strategy in spec.strategies:
                    for seed in seeds:
                        run = Run(source, architecture, strategy, size, n, seed,
                                  fold_of[(n, seed)])
                        runs.setdefault(run.key, run)   # e.g. sizes [5, all] with 6 cases
    return pretrainings, list(runs.values())


def study_ns(spec: StudySpec, pool_size: int) -> list[int]:
    return sorted({resolve_size(size, pool_size) for size in spec.sizes})
