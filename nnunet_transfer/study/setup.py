"""The steps before any training: make the datasets, check every (source, strategy) pair against
the labels the datasets turned out to have, plan and preprocess the dataset sources, move each
source's plans to the target (a model source's own plans, as `plans-transfer --source-model`
does; models with the same plans share one preprocessing; an nnssl encoder's runs get the
target's own plans, planned as a dataset source's are, with the encoder's network), write the
few-shot splits and the held-out test folder.

The datasets and the splits are made by calling the data functions; planning runs nnU-Net's
preprocessing with the study's nnU-Net folders, so it runs as commands in a subprocess (nnU-Net's
own, and the package's planning commands, which read those folders from the environment).
What a step says goes to study/setup/<step>.log; a step leaves a marker
study/setup/<step>.done when it succeeded, so a re-run skips it. The steps are idempotent too
(conversions rewrite only what changed; splits refuse to change silently), so a step
interrupted half-way is simply redone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from nnunet_transfer.atomic_files import atomic_write_json
from nnunet_transfer.data.raw_dataset import read_dataset_json
from nnunet_transfer.discovery import console_script, ext_trainer_value
from nnunet_transfer.errors import UserError
from nnunet_transfer.planning.nnssl_plans import nnssl_plans
from nnunet_transfer.planning.plans_files import read_json
from nnunet_transfer.study.executors.kinds import jobs_in_flight
from nnunet_transfer.study.grid import (
    UNSEEN_PREFIX, StudyLayout, plans_of_source, preprocessing_source, study_ns,
    transferred_plans)
from nnunet_transfer.study.source_pairs import pair_refusal, raw_labels
from nnunet_transfer.study.spec import UNET, DatasetSpec, StudySpec


def nnunet_environment(spec: StudySpec) -> dict[str, str]:
    """The environment of every command of the study: nnU-Net's folders, our trainers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNUNET_TRANSFER_")}
    env.update(nnUNet_raw=spec.nnunet["raw"], nnUNet_preprocessed=spec.nnunet["preprocessed"],
               nnUNet_results=spec.nnunet["results"],
               nnUNet_extTrainer=ext_trainer_value(os.environ.get("nnUNet_extTrainer")))
    env.setdefault("nnUNet_compile", "f" if spec.device != "cuda" else "t")
    # nnU-Net's final validation and preprocessing start nnUNet_def_n_proc processes (8 by
    # default) per job: with several jobs on a machine that oversubscribes it many times over.
    env.setdefault("nnUNet_def_n_proc", str(cores_per_job(spec)))
    return env


def cores_per_job(spec: StudySpec) -> int:
    if spec.executor.kind == "slurm":
        return int(spec.executor.slurm.get("cpus_per_task", 1))
    return max(1, len(os.sched_getaffinity(0)) // jobs_in_flight(spec.executor.kind,
                                                                   spec.executor.jobs))


def run_logged(argv: list[str], env: dict[str, str], log: str) -> None:
    """Run a command with its output in `log`; UserError with the log's tail when it fails."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "a") as out:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        result = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        with open(log, errors="replace") as f:
            tail = f.read()[-2500:]
        raise UserError(f"{os.path.basename(argv[0])} failed (exit {result.returncode}); its log "
                        f"is {log}; its end:\n{tail}")


@dataclass
class SetupStep:
    name: str
    action: Callable[[], None]


class StudySetup:
    def __init__(self, spec: StudySpec, processes: int | None = None):
        self.spec, self.layout = spec, StudyLayout(spec)
        self.env = nnunet_environment(spec)
        # the steps run one at a time, so preprocessing may use every core
        self.processes = processes or len(os.sched_getaffinity(0))

    # -- helpers ------------------------------------------------------------------------------
    def raw_folder(self, key: str) -> str:
        return os.path.join(self.spec.nnunet["raw"], self.spec.datasets[key].folder_name)

    def preprocessed_folder(self, key: str) -> str:
        return os.path.join(self.spec.nnunet["preprocessed"], self.spec.datasets[key].folder_name)

    def command(self, step: str, *argv: str) -> None:
        run_logged([console_script(argv[0]), *argv[1:]], self.env,
                   self.layout.path("setup", f"{step}.log"))

    def marker(self, step: str) -> str:
        return self.layout.path("setup", f"{step}.done")

    def log(self, step: str, text: str) -> None:
        with open(self.layout.path("setup", f"{step}.log"), "a") as log:
            log.write(text + "\n")

    # -- the steps ------------------------------------------------------------------------------
    def steps(self) -> list[SetupStep]:
        spec = self.spec
        steps = [SetupStep(f"dataset_{key}", lambda key=key: self.make_dataset(spec.datasets[key]))
                 for key in self._dataset_order()]
        steps.append(SetupStep("check_sources", self.check_sources))
        # the dataset sources are planned by nnU-Net; so is the target where an nnssl encoder
        # (which brings no plans) trains under the target's own plans
        planned = [s for s in spec.sources if not spec.is_model(s)] + (
            [spec.target] if any(spec.models[s].nnssl for s in spec.sources
                                 if spec.is_model(s)) else [])
        steps += [SetupStep(f"plan_{key}", lambda key=key: self.plan_dataset(key))
                  for key in planned]
        steps.append(SetupStep("splits", self.write_splits))
        for source in spec.sources:
            steps.append(SetupStep(f"transfer_plans_{source}",
                                   lambda s=source: self.transfer_plans(s)))
        steps.append(SetupStep("test_folder", self.write_test_folder))
        return steps

    def run(self, say: Callable[[str], None] = print) -> None:
        os.makedirs(self.layout.path("setup"), exist_ok=True)
        for step in self.steps():
            if os.path.isfile(self.marker(step.name)):
                continue
            say(f"setup: {step.name}")
            step.action()
            atomic_write_json(self.marker(step.name), {"step": step.name})

    def _dataset_order(self) -> list[str]:
        """Datasets in an order where each comes after the ones it is made from."""
        order: list[str] = []

        def visit(key: str) -> None:
            if key in order:
                return
            for other in self.spec.datasets[key].inputs:
                visit(other)
            order.append(key)

        needed = [*(s for s in self.spec.sources if not self.spec.is_model(s)), self.spec.target,
                  *([self.spec.generalization] if self.spec.generalization else [])]
        for key in needed:
            visit(key)
        return order

    def make_dataset(self, dataset: DatasetSpec) -> None:
        step, raw = f"dataset_{dataset.key}", self.spec.nnunet["raw"]
        os.makedirs(raw, exist_ok=True)
        options = dataset.options
        if dataset.kind == "synthetic":
            from nnunet_transfer.data.synthetic import (
                LOW_QUALITY_DOMAIN, SOURCE_DOMAIN, write_synthetic_dataset)
            syn = options["synthetic"]
            self.log(step, write_synthetic_dataset(
                raw, dataset.id, dataset.name, num_training=syn["cases"],
                num_test=syn["test_cases"], shape=tuple(syn["shape"]),
                domain=LOW_QUALITY_DOMAIN if syn["low_quality"] else SOURCE_DOMAIN,
                with_core=bool(syn["core"]), seed=syn["seed"]))
        elif dataset.kind == "msd":
            from nnunet_transfer.data.msd import convert_msd
            if not os.path.isdir(options["msd"]):
                raise UserError(f"dataset {dataset.key!r}: the MSD task folder {options['msd']} "
                                "does not exist (it should hold imagesTr/ and labelsTr/)")
            self.log(step, convert_msd(options["msd"], self._new_raw_folder(dataset)).summary())
        elif dataset.kind == "degrade":
            from nnunet_transfer.data.domain_shift import degrade_dataset
            self.log(step, degrade_dataset(self.raw_folder(options["degrade"]),
                                           self._new_raw_folder(dataset),
                                           seed=options["seed"]).summary())
        elif dataset.kind == "subset":
            self.write_subset(dataset)
        elif dataset.kind == "pool":
            from nnunet_transfer.data.pooling import pool_datasets
            labels = read_dataset_json(self.raw_folder(options["pool"][0]))["labels"]
            pooling = {"labels": labels, "datasets": [
                {"dataset": self.raw_folder(k), "prefix": k} for k in options["pool"]]}
            self.log(step, pool_datasets(pooling, raw, self._new_raw_folder(dataset),
                                         f"{self.spec.path}: dataset {dataset.key!r}").summary())
        elif not os.path.isfile(os.path.join(self.raw_folder(dataset.key), "dataset.json")):
            raise UserError(f"dataset {dataset.key!r} is marked existing but "
                            f"{self.raw_folder(dataset.key)} has no dataset.json; convert it "
                            "first or describe how to make it in the study file")

    def _new_raw_folder(self, dataset: DatasetSpec) -> str:
        """The raw folder of a dataset the study makes (refused where its id is taken)."""
        from nnunet_transfer.data.raw_dataset import dataset_folder
        return dataset_folder(self.spec.nnunet["raw"], dataset.id, dataset.name)

    def write_subset(self, dataset: DatasetSpec) -> None:
        """Some training cases of another dataset, checked and written like a conversion."""
        import numpy as np
        from nnunet_transfer.data.convert import ConversionSettings, convert_cases
        from nnunet_transfer.data.sources import FoundCases, find_raw_dataset_cases
        options = dataset.options
        source = self.raw_folder(options["subset"])
        discovery, dataset_json, sites = find_raw_dataset_cases(source)
        cases = discovery.cases
        if options.get("exclude"):
            excluded = {c.case for c in find_raw_dataset_cases(
                self.raw_folder(options["exclude"]))[0].cases}
            cases = [c for c in cases if c.case not in excluded]
        if options.get("count"):
            if options["count"] > len(cases):
                raise UserError(f"dataset {dataset.key!r}: count {options['count']} but "
                                f"{options['subset']!r} has {len(cases)} case(s) to draw from")
            chosen = np.random.default_rng(options["seed"]).choice(
                len(cases), options["count"], replace=False)
            cases = [cases[i] for i in sorted(chosen)]
        for case in cases:
            case.site = sites.get(case.case)
        settings = ConversionSettings.from_dataset_json(dataset_json)
        out = os.path.join(self.spec.nnunet["raw"], dataset.folder_name)
        report = convert_cases(FoundCases(cases, [], [], source), out, settings,
                               dataset.folder_name, source,
                               description=f"{len(cases)} cases of {os.path.basename(source)}")
        self.log(f"dataset_{dataset.key}", report.summary())

    def plan_dataset(self, key: str) -> None:
        """nnU-Net's plans and preprocessing of a dataset with the study's `plans:` (and its
        small plans and extra architectures)."""
        spec, step = self.spec, f"plan_{key}"
        dataset_id = str(spec.datasets[key].id)
        self.command(step, "nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c",
                     spec.configuration, "-np", str(self.processes), "--verify_dataset_integrity")
        plans = spec.plans
        if spec.small_plans:
            small = spec.small_plans
            plans = plans_of_source(spec)
            self.command(step, "nnunet-transfer", "small-plans", "-d", dataset_id, "-p",
                         spec.plans, "--name", plans, "-c", spec.configuration,
                         *(["--patch", *map(str, small["patch"])] if small["patch"] else []),
                         "--features", str(small["features"]), "--max-features",
                         str(small["max_features"]), "--batch", str(small["batch"]),
                         "--stages", str(small["stages"]))
        extra = [a for a in spec.architectures if a != UNET]
        if extra:
            self.command(step, "nnunet-transfer", "add-architectures", "-d", dataset_id, "-p",
                         plans, "-c", spec.configuration, "--only", ",".join(extra))

    def write_splits(self) -> None:
        spec = self.spec
        target = self.raw_folder(spec.target)
        out = self.preprocessed_folder(spec.target)
        from nnunet_transfer.data.splits import few_shot_splits
        splits = few_shot_splits(target, out, study_ns(spec, self.pool_size()), list(spec.seeds),
                                 test_count=spec.test_cases, test_seed=spec.test_seed,
                                 max_val=spec.validation_cases or None)
        self.log("splits", splits.summary())

    def pool_size(self) -> int:
        """Training cases of the target that are not held out for testing."""
        from nnunet_transfer.data.splits import dataset_cases
        cases = dataset_cases(self.raw_folder(self.spec.target))
        if self.spec.test_cases > len(cases) - 2:
            raise UserError(f"test_cases {self.spec.test_cases}: the target has {len(cases)} "
                            "case(s); at least 2 must stay for training and validation")
        return len(cases) - self.spec.test_cases

    def check_sources(self) -> None:
        """Every pair whose strategy keeps the source's head, against the labels the datasets
        have now that they exist (the study file's check knew them only where it could)."""
        spec = self.spec
        target = raw_labels(self.raw_folder(spec.target))
        problems = []
        for source in spec.sources:
            labels = (spec.models[source].labels if spec.is_model(source)
                      else raw_labels(self.raw_folder(source)))
            for strategy in spec.strategies:
                refusal = pair_refusal(source, strategy, None, labels, target)
                if refusal:
                    problems.append(refusal.message())
        if problems:
            raise UserError(f"{spec.path}: " + "\n  ".join(
                ["the datasets made have labels that some pairs cannot train on; remove these "
                 "strategies (nothing was trained):", *problems]))

    def transfer_plans(self, source: str) -> None:
        spec, step = self.spec, f"transfer_plans_{source}"
        target = str(spec.datasets[spec.target].id)
        if not spec.is_model(source):
            self.command(step, "nnunet-transfer", "plans-transfer", "--source",
                         str(spec.datasets[source].id), "--target", target,
                         "-p", plans_of_source(spec), "-c", spec.configuration, "-np",
                         str(self.processes))
            return
        model = spec.models[source]
        if model.nnssl:
            self._nnssl_plans(source)
            return
        first = preprocessing_source(spec, source)
        if first == source:
            self.command(step, "nnunet-transfer", "plans-transfer", "--source-model", model.path,
                         "--target", target, "--target-plans", transferred_plans(spec, source),
                         "-c", model.configuration, "-np", str(self.processes))
            return
        # The same plans as an earlier model's: its preprocessed data (the data_identifier
        # stays that model's), under an identifier of this source's own.
        folder = self.preprocessed_folder(spec.target)
        plans = read_json(os.path.join(folder, transferred_plans(spec, first) + ".json"),
                          f"the plans of source {first!r} on the target")
        plans["plans_name"] = transferred_plans(spec, source)
        plans["transferred_from"] = {**plans.get("transferred_from", {}), "model": model.path,
                                     "data_of": first}
        atomic_write_json(os.path.join(folder, plans["plans_name"] + ".json"), plans)
        self.log(step, f"same plans as source {first!r}: its preprocessed data is used")

    def _nnssl_plans(self, source: str) -> None:
        """The target's own plans (step plan_<target>) with the nnssl encoder's network, on the
        target's preprocessed data."""
        spec, folder = self.spec, self.preprocessed_folder(self.spec.target)
        own = read_json(os.path.join(folder, plans_of_source(spec) + ".json"),
                        "the target's own plans")
        model = spec.models[source]
        plans = nnssl_plans(own, spec.configuration, model.nnssl,
                            transferred_plans(spec, source), model.path)
        atomic_write_json(os.path.join(folder, plans["plans_name"] + ".json"), plans)
        self.log(f"transfer_plans_{source}", "; ".join(plans["transferred_from"]["notes"]))

    def write_test_folder(self) -> None:
        """The images every run predicts, in one folder for one nnUNetv2_predict call: the
        target's held-out test cases, and the unseen set's cases prefixed `unseen_` (their
        names may repeat the target's); each set's labels in a folder of its own, so that the
        evaluation of a set scores its cases only. Hard links where the file system allows."""
        from nnunet_transfer.data.splits import TEST_NAME, read_case_list
        test = read_case_list(os.path.join(self.preprocessed_folder(self.spec.target), TEST_NAME))
        target = self.raw_folder(self.spec.target)
        self._link_cases(target, "imagesTr", "labelsTr", set(test), "",
                         self.layout.test_labels)
        shutil.copyfile(os.path.join(target, "dataset.json"), self.layout.test_dataset_json)
        if self.spec.generalization:
            unseen = self.raw_folder(self.spec.generalization)
            images, labels = next(
                ((i, lab) for i, lab in (("imagesTs", "labelsTs"), ("imagesTr", "labelsTr"))
                 if os.path.isdir(os.path.join(unseen, lab)) and
                 os.listdir(os.path.join(unseen, lab))), (None, None))
            if images is None:
                raise UserError(f"the generalization dataset {unseen} has no labelsTs or "
                                "labelsTr with cases")
            self._link_cases(unseen, images, labels, None, UNSEEN_PREFIX,
                             self.layout.generalization_labels)

    def _link_cases(self, dataset: str, images: str, labels: str, cases: set[str] | None,
                    prefix: str, labels_out: str) -> None:
        ending = read_dataset_json(dataset)["file_ending"]
        for sub, out, is_image in ((images, self.layout.test_images, True),
                                   (labels, labels_out, False)):
            os.makedirs(out, exist_ok=True)
            for name in sorted(os.listdir(os.path.join(dataset, sub))):
                if not name.endswith(ending):
                    continue
                case = name[:-len(ending)]
                case = case.rsplit("_", 1)[0] if is_image else case
                if cases is None or case in cases:
                    _link_or_copy(os.path.join(dataset, sub, name),
                                  os.path.join(out, prefix + name))


def _link_or_copy(source: str, destination: str) -> None:
    if os.path.exists(destination):
        return
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)
