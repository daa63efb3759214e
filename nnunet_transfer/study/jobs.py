"""The jobs of a study: the commands that pretrain, rank the sources, train, predict and
analyse, what each needs before it can start, and how to tell that its outputs are complete.

Every job is a real command line (nnUNetv2_train, nnunet-transfer rank-sources,
nnUNetv2_predict, nnunet-transfer analyze),
so any executor runs it, here or on a cluster. The evaluation of a prediction folder is quick
and runs inside the runner once the prediction succeeded (`after`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from nnunet_transfer.atomic_files import atomic_write_bytes
from nnunet_transfer.analysis.kinds import ANALYSIS_KINDS, CellRun, StudyCell
from nnunet_transfer.data.splits import TEST_NAME, read_case_list
from nnunet_transfer.discovery import console_script
from nnunet_transfer.study.executors.base import CommandJob
from nnunet_transfer.study.grid import (
    GENERALIZATION, PRETRAIN_TRAINER, RANKING_KEY, TEST, Pretraining, Run, StudyLayout,
    analysis_key, cells, configuration_of, expand, plans_of_source, ranked_sources,
    ranking_architecture, ranks_sources, transferred_plans)
from nnunet_transfer.study.setup import StudySetup
from nnunet_transfer.study.spec import StudySpec
from nnunet_transfer.study.state import SUCCEEDED, StudyState
from nnunet_transfer.training.run_folder import RunFolder


@dataclass
class StudyJob:
    key: str
    kind: str                                  # pretrain, rank, train, predict, analyze
    command: Callable[[int], CommandJob | str]  # attempt -> the command, or why it is skipped
    missing: Callable[[], str | None]          # what is missing of its outputs (None: complete)
    needs: tuple[str, ...] = ()                # jobs that must succeed first
    waits_for: tuple[str, ...] = ()            # jobs that must have ended, whatever the outcome
    after: Callable[[], None] | None = None    # in the runner, once the command succeeded
    runs: tuple[Run, ...] = ()                 # the runs it concerns (status and report)


class StudyJobs:
    def __init__(self, spec: StudySpec, setup: StudySetup, state: StudyState, device: str):
        self.spec, self.setup, self.state, self.device = spec, setup, state, device
        self.layout = StudyLayout(spec)
        self.pretrainings, self.runs = expand(spec, setup.pool_size())

    def all(self) -> list[StudyJob]:
        jobs = [self.pretrain_job(p) for p in self.pretrainings]
        if ranks_sources(self.spec):
            jobs.append(self.ranking_job())
        for run in self.runs:   # the runner starts ready jobs in this order: a run's prediction
            jobs += [self.train_job(run), self.predict_job(run)]   # before later trainings
        for cell in cells(self.runs):
            jobs += [self.analysis_job(kind, cell) for kind in self.spec.analyses]
        return jobs

    # -- shared pieces ------------------------------------------------------------------------
    def _job(self, key: str, attempt: int, argv: list[str], env: dict[str, str],
             uses_accelerator: bool = True) -> CommandJob:
        folder = self.layout.job_folder(key)
        return CommandJob(key=key, argv=tuple(argv), env={**self.setup.env, **env},
                          log_path=os.path.join(folder, f"attempt{attempt}.log"),
                          exit_path=os.path.join(folder, f"attempt{attempt}.exit"),
                          uses_accelerator=uses_accelerator)

    def _training(self, key: str, dataset_id: int, configuration: str, fold, plans: str,
                  trainer: str, folder: RunFolder, env: dict[str, str], pretrained: str | None
                  ) -> Callable[[int], CommandJob]:
        def command(attempt: int) -> CommandJob:
            argv = [console_script("nnUNetv2_train"), str(dataset_id), configuration, str(fold),
                    "-p", plans, "-tr", trainer, "-device", self.device]
            if folder.interrupted:
                argv.append("--c")    # an interrupted attempt: continue it (keeps epoch 0)
            elif pretrained:
                argv += ["-pretrained_weights", pretrained]
            return self._job(key, attempt, argv, env)
        return command

    @staticmethod
    def _final_checkpoint(folder: RunFolder) -> Callable[[], str | None]:
        path = folder.final_checkpoint
        return lambda: None if os.path.isfile(path) else f"{path} is missing"

    # -- the jobs -----------------------------------------------------------------------------
    def pretrain_job(self, pretraining: Pretraining) -> StudyJob:
        spec = self.spec
        folder = self.layout.pretrained_folder(pretraining)
        env = spec.budget.pretraining_environment()
        command = self._training(pretraining.key, spec.datasets[pretraining.source].id,
                                 configuration_of(spec, pretraining.source,
                                                  pretraining.architecture), "all",
                                 plans_of_source(spec), PRETRAIN_TRAINER, folder, env, None)
        return StudyJob(pretraining.key, "pretrain", command, self._final_checkpoint(folder))

    def train_job(self, run: Run) -> StudyJob:
        spec = self.spec
        folder = self.layout.run_folder(run)
        needs, pretrained = (), None
        env = spec.budget.run_environment(run.seed)
        if run.strategy.needs_pretrained:
            pretrained = self.layout.source_weights(run.source, run.architecture)
            if not spec.is_model(run.source):
                needs = (Pretraining(run.source, run.architecture).key,)
            elif spec.models[run.source].encoder_only:
                env = {**env, "NNUNET_TRANSFER_LOAD": "encoder"}
        if run.strategy.file:   # nnUNetTrainer_Custom reads its strategy from there
            env = {**env, "NNUNET_TRANSFER_STRATEGY_FILE": run.strategy.file}
        key = run.train_key
        command = self._training(key, spec.datasets[spec.target].id,
                                 configuration_of(spec, run.source, run.architecture), run.fold,
                                 transferred_plans(spec, run.source),
                                 run.strategy.trainer_name, folder, env, pretrained)
        # the ranking is the choice made before fine-tuning: it runs first, and a failed one
        # stops nothing
        waits = (RANKING_KEY,) if ranks_sources(spec) else ()
        return StudyJob(key, "train", command, self._final_checkpoint(folder), needs=needs,
                        waits_for=waits, runs=(run,))

    def ranking_job(self) -> StudyJob:
        """`nnunet-transfer rank-sources` over every network it can score (`ranked_sources`),
        on the target's training pool only: the held-out test cases are written to a file the
        command never reads."""
        spec, layout = self.spec, self.layout
        architecture = ranking_architecture(spec)
        excluded = layout.ranking_excluded_cases

        def command(attempt: int) -> CommandJob:
            test = read_case_list(os.path.join(self.setup.preprocessed_folder(spec.target),
                                               TEST_NAME))
            atomic_write_bytes(excluded, "".join(f"{case}\n" for case in test).encode())
            argv = [console_script("nnunet-transfer"), "rank-sources", "--target",
                    str(spec.datasets[spec.target].id), "--csv", layout.ranking_csv,
                    "--exclude-cases", excluded, "-device", self.device,
                    *(f"{source}={layout.source_weights(source, architecture)}"
                      for source in ranked_sources(spec))]
            return self._job(RANKING_KEY, attempt, argv, {})

        def missing() -> str | None:
            path = layout.ranking_csv
            return None if os.path.isfile(path) else f"{path} is missing"

        needs = tuple(p.key for p in self.pretrainings if p.architecture == architecture)
        return StudyJob(RANKING_KEY, "rank", command, missing, needs=needs)

    def test_sets(self) -> tuple[str, ...]:
        return (TEST, GENERALIZATION) if self.spec.generalization else (TEST,)

    def predict_job(self, run: Run) -> StudyJob:
        """One nnUNetv2_predict per run over the held-out and the unseen test images (one
        start-up of nnU-Net instead of two); each set is evaluated against its own labels."""
        spec = self.spec
        key = run.predict_key
        out = self.layout.predictions(run)

        def command(attempt: int) -> CommandJob:
            argv = [console_script("nnUNetv2_predict"), "-i", self.layout.test_images, "-o", out,
                    "-d", str(spec.datasets[spec.target].id), "-c",
                    configuration_of(spec, run.source, run.architecture), "-f", str(run.fold),
                    "-p", transferred_plans(spec, run.source), "-tr", run.strategy.trainer_name,
                    "-device", self.device, "-npp", "1", "-nps", "1", "--continue_prediction",
                    *spec.prediction.arguments()]
            return self._job(key, attempt, argv, {})

        def evaluations() -> list[str]:
            return [os.path.join(self.layout.evaluation(run, test_set), "evaluation_per_case.csv")
                    for test_set in self.test_sets()]

        def missing() -> str | None:
            return next((f"{path} is missing" for path in evaluations()
                         if not os.path.isfile(path)), None)

        def evaluate() -> None:
            from nnunet_transfer.evaluation.evaluate import evaluate_folder
            from nnunet_transfer.evaluation.labels import labels_from_dataset_json
            labels = labels_from_dataset_json(self.layout.test_dataset_json)
            for test_set in self.test_sets():
                evaluate_folder(out, self.layout.labels(test_set),
                                self.layout.evaluation(run, test_set), labels, workers=1)

        return StudyJob(key, "predict", command, missing, needs=(run.train_key,),
                        after=evaluate, runs=(run,))

    def analysis_job(self, name: str, cell: tuple) -> StudyJob:
        kind = ANALYSIS_KINDS[name]
        runs = tuple(r for r in self.runs if r.cell == cell)
        key = analysis_key(name, cell)
        out = os.path.join(self.layout.cell_folder("analysis", cell), name)

        def command(attempt: int) -> CommandJob | str:
            finished = tuple(CellRun(r.id, self.layout.run_folder(r).path)
                             for r in runs if self.state.state(r.train_key) == SUCCEEDED)
            transfer = tuple(s.name for s in self.spec.strategies if s.needs_pretrained)
            args = kind.study_command(StudyCell(finished, min(r.seed for r in runs), transfer),
                                      replace(self.spec.analysis, device=self.device))
            if isinstance(args, str):
                return args
            argv = [console_script("nnunet-transfer"), "analyze", name, "-o", out, *args]
            return self._job(key, attempt, argv, {}, uses_accelerator=kind.uses_accelerator)

        def missing() -> str | None:
            path = os.path.join(out, f"{name}.md")
            return None if os.path.isfile(path) else f"{path} is missing"

        return StudyJob(key, "analyze", command, missing,
                        waits_for=tuple(r.train_key for r in runs), runs=runs)
