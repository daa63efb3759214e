"""Shared fixtures: real nnU-Net folders, a pretrained source run and a transferred target.

The end-to-end fixtures drive the real command-line tools in subprocesses on tiny synthetic
volumes with tiny budgets, once per test session.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

from nnunet_transfer.data.synthetic import LOW_QUALITY_DOMAIN, write_synthetic_dataset
from nnunet_transfer.training.run_folder import RunFolder

BIN = os.path.dirname(sys.executable)
SOURCE_ID, TARGET_ID, SAME_LABELS_TARGET_ID = 801, 802, 803
SMALL_PLANS = "nnUNetPlansSmallCPU"
TRANSFERRED_PLANS = f"{SMALL_PLANS}_from{SOURCE_ID}"
# Tiny budget: enough steps that every trainable tensor moves, little enough for CI.
BUDGET = {"NNUNET_TRANSFER_EPOCHS": "2", "NNUNET_TRANSFER_ITERS": "3",
          "NNUNET_TRANSFER_VAL_ITERS": "1", "NNUNET_TRANSFER_SNAPSHOT_EVERY": "1",
          "NNUNET_TRANSFER_SEED": "3"}
# Runs launched two at a time get one thread each: two runs with nnU-Net's one thread per core
# oversubscribe the cores, and OpenMP's waiting threads then slow everything down many times.
ONE_THREAD = {"NNUNET_TRANSFER_CPU_THREADS": "1", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# Modules whose tests use the nnU-Net workspace but train a matrix of their own: they get a
# workspace (and source pretraining) of their own in another worker, so that the matrix and the
# other end-to-end tests run side by side instead of one after the other.
OWN_WORKSPACE = {"test_architectures_end_to_end"}


@pytest.hookimpl(tryfirst=True)   # before xdist reads the groups (its hook runs in the workers)
def pytest_collection_modifyitems(config, items):
    """Keep what shares fixtures in one pytest-xdist worker (`make test` runs `-n auto --dist
    loadgroup`): the tests of the shared nnU-Net workspace in one group, so the session's source
    pretraining and strategy runs are built once per group; any other module as its own group,
    so its module fixtures are built once. The other cores take the other groups meanwhile."""
    for item in items:
        module = item.module.__name__
        if "workspace" not in item.fixturenames:
            group = module
        elif module in OWN_WORKSPACE:
            group = f"nnunet_workspace_{module}"
        else:
            group = "nnunet_workspace"
        item.add_marker(pytest.mark.xdist_group(group))


def tool(name: str) -> str:
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name) or name


@dataclass
class Workspace:
    root: str
    env: dict

    @property
    def raw(self) -> str:
        return self.env["nnUNet_raw"]

    @property
    def preprocessed(self) -> str:
        return self.env["nnUNet_preprocessed"]

    @property
    def results(self) -> str:
        return self.env["nnUNet_results"]

    def run(self, *command: str, ok: bool = True, extra_env: dict | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess:
        command = (tool(command[0]), *command[1:])
        result = subprocess.run(command, env={**self.env, **(extra_env or {})}, cwd=self.root,
                                capture_output=True, text=True, timeout=timeout)
        if ok and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
        return result

    def run_folder(self, dataset: str, trainer: str, plans: str, fold: str = "0",
                   configuration: str = "3d_fullres") -> str:
        return RunFolder.in_results(self.results, dataset, trainer, plans, configuration,
                                    fold).path


def _env(root: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNUNET_TRANSFER_")}
    env.update({
        "nnUNet_raw": os.path.join(root, "raw"),
        "nnUNet_preprocessed": os.path.join(root, "preprocessed"),
        "nnUNet_results": os.path.join(root, "results"),
        "nnUNet_compile": "f",
        "nnUNet_def_n_proc": "1",
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "2"),
    })
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(env[key], exist_ok=True)
    return env


def write_split(preprocessed_dataset: str, validation_cases: int = 1) -> None:
    """One fold with a single validation case: nnU-Net's final validation stays short."""
    cases = sorted(f[:-len(".nii.gz")] for f in os.listdir(
        os.path.join(preprocessed_dataset, "gt_segmentations")))
    split = [{"train": cases[validation_cases:], "val": cases[:validation_cases]}]
    with open(os.path.join(preprocessed_dataset, "splits_final.json"), "w") as f:
        json.dump(split, f)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    root = str(tmp_path_factory.mktemp("nnunet"))
    ws = Workspace(root, _env(root))
    exports = shlex.split(ws.run("nnunet-transfer", "env").stdout)
    ws.env["nnUNet_extTrainer"] = exports[1].split("=", 1)[1]
    return ws


@pytest.fixture(scope="session")
def source(workspace) -> dict:
    """A planned source dataset, small CPU plans and a Scratch run on it (the pretraining)."""
    write_synthetic_dataset(workspace.raw, SOURCE_ID, "SynthSource", num_training=5, seed=1)
    name = f"Dataset{SOURCE_ID}_SynthSource"
    workspace.run("nnUNetv2_plan_and_preprocess", "-d", str(SOURCE_ID), "-c", "3d_fullres",
                  "-np", "1", "--verify_dataset_integrity")
    workspace.run("nnunet-transfer", "small-plans", "-d", str(SOURCE_ID))
    write_split(os.path.join(workspace.preprocessed, name))
    workspace.run("nnUNetv2_train", str(SOURCE_ID), "3d_fullres", "0", "-p", SMALL_PLANS,
                  "-tr", "nnUNetTrainer_Scratch", "-device", "cpu",
                  extra_env={**BUDGET, "nnUNet_n_proc_DA": "0"})
    folder = workspace.run_folder(name, "nnUNetTrainer_Scratch", SMALL_PLANS)
    return {"name": name, "folder": folder,
            "checkpoint": os.path.join(folder, "checkpoint_final.pth")}


def _transferred_target(workspace, dataset_id: int, name: str, with_core: bool) -> dict:
    write_synthetic_dataset(workspace.raw, dataset_id, name, num_training=4, num_test=2,
                            domain=LOW_QUALITY_DOMAIN, with_core=with_core, seed=dataset_id)
    result = workspace.run("nnunet-transfer", "plans-transfer", "--source", str(SOURCE_ID),
                           "--target", str(dataset_id), "-p", SMALL_PLANS, "-np", "1")
    full_name = f"Dataset{dataset_id:03d}_{name}"
    write_split(os.path.join(workspace.preprocessed, full_name))
    return {"id": dataset_id, "name": full_name, "plans": TRANSFERRED_PLANS,
            "labels": 3 if with_core else 2, "stdout": result.stdout}


@pytest.fixture(scope="session")
def target(workspace, source) -> dict:
    """A low-quality target with an extra label, preprocessed with the source's plans."""
    return _transferred_target(workspace, TARGET_ID, "SynthTarget", with_core=True)


@pytest.fixture(scope="session")
def same_labels_target(workspace, source) -> dict:
    """A low-quality target with the source's labels (its output layers can be transferred)."""
    return _transferred_target(workspace, SAME_LABELS_TARGET_ID, "SynthSameLabels",
                               with_core=False)


# A frozen head must come from the source, so that strategy runs on a target with its labels.
NEEDS_SOURCE_LABELS = {"FrozenDecoderAndHead"}


def _train(workspace, source, target, strategy) -> dict:
    from nnunet_transfer.training.strategies import Pretrained
    args = ["nnUNetv2_train", str(target["id"]), "3d_fullres", "0", "-p", target["plans"],
            "-tr", strategy.trainer_name, "-device", "cpu"]
    if strategy.pretrained is Pretrained.REQUIRED:
        args += ["-pretrained_weights", source["checkpoint"]]
    train = workspace.run(*args, extra_env={**BUDGET, **ONE_THREAD, "nnUNet_n_proc_DA": "0"})
    return {"train": train, "target": target,
            "folder": workspace.run_folder(target["name"], strategy.trainer_name,
                                           target["plans"])}


def _predict(workspace, target, strategy) -> str:
    out = os.path.join(workspace.root, "predictions", strategy.name)
    workspace.run("nnUNetv2_predict", "-i",
                  os.path.join(workspace.raw, target["name"], "imagesTs"), "-o", out,
                  "-d", str(target["id"]), "-c", "3d_fullres", "-f", "0", "-p", target["plans"],
                  "-tr", strategy.trainer_name, "-device", "cpu", "-npp", "1", "-nps", "1")
    return out


@pytest.fixture(scope="session")
def strategy_runs(workspace, source, target, same_labels_target) -> dict:
    """Every strategy trained on a target (two trainings at a time, one thread each: a tiny
    run is mostly start-up and nnU-Net's final validation) and predicted on its test images
    (one at a time: nnUNetv2_predict takes every core)."""
    from concurrent.futures import ThreadPoolExecutor
    from nnunet_transfer.training.strategies import ONE_PHASE_STRATEGIES
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {s: pool.submit(
            _train, workspace, source,
            same_labels_target if s.name in NEEDS_SOURCE_LABELS else target, s)
            for s in ONE_PHASE_STRATEGIES}
        runs = {s.name: future.result() for s, future in futures.items()}
    for strategy in ONE_PHASE_STRATEGIES:
        run = runs[strategy.name]
        run["predictions"] = _predict(workspace, run["target"], strategy)
    return runs
