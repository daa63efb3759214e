"""Shared fixtures: real nnU-Net folders, a pretrained source run and a transferred target.

The end-to-end fixtures drive the real command-line tools in subprocesses on tiny synthetic
volumes with tiny budgets, once per test session.
"""

from __future__ import annotations

import os
import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from threadpoolctl import threadpool_limits

from nnunet_transfer.data.synthetic import LOW_QUALITY_DOMAIN, write_synthetic_dataset
from nnunet_transfer.training.strategies import ONE_PHASE_STRATEGIES, Pretrained

from support.browser import CHROMIUM_NAMES
from support.plain_model import train_plain_model
from support.nnunet_workspace import (BUDGET, ONE_THREAD, SMALL_PLANS, SOURCE_ID,
                                      SAME_LABELS_TARGET_ID, TARGET_ID, TRANSFERRED_PLANS,
                                      Workspace, workspace_env, write_split)


# Modules whose tests use the nnU-Net workspace but train models of their own: they get a
# workspace (and source pretraining) of their own in another worker, so that the matrix and the
# other end-to-end tests run side by side instead of one after the other.
OWN_WORKSPACE = {"test_architectures_end_to_end", "test_rank_sources"}

# The kinds of test, by what they use, so that a new test is marked by what it does (markers
# registered in pyproject.toml; `pytest -m "not e2e"` runs the unit tests alone):
# - e2e: drives nnU-Net's commands, trains or runs a study in subprocesses (minutes). A test is
#   e2e when it uses the nnU-Net workspace (every fixture that trains builds on it) or sits in a
#   module named *_end_to_end; one that runs nnU-Net's commands in a folder of its own says so
#   itself (@pytest.mark.e2e);
# - slurm: needs the real one-node SLURM cluster (the `cluster` fixture); also e2e;
# - browser: looks at a page in headless Chromium (the `chromium` fixture).
END_TO_END_FIXTURES = {"workspace"}
SLURM_FIXTURES = {"cluster"}
BROWSER_FIXTURES = {"chromium"}


def _kinds(item) -> list[str]:
    fixtures = set(item.fixturenames)
    slurm = bool(fixtures & SLURM_FIXTURES)
    end_to_end = (slurm or bool(fixtures & END_TO_END_FIXTURES)
                  or item.module.__name__.endswith("_end_to_end"))
    return ([kind for kind, applies in (("e2e", end_to_end), ("slurm", slurm),
                                        ("browser", bool(fixtures & BROWSER_FIXTURES)))
             if applies])


def pytest_configure(config):
    """Each pytest-xdist worker gets its share of the cores for the computing it does itself
    (torch's and the BLAS threads), as the study's jobs do: two workers with a thread per core
    each oversubscribe the machine, and the many small in-process networks of the unit tests
    then ran 2.2x slower (`-m "not e2e"` on 2 cores: 3:58 against 1:49). The commands the
    tests start get nnU-Net's defaults or what the test gives them, as before."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        torch.set_num_threads(threads)
        threadpool_limits(limits=threads)


@pytest.hookimpl(tryfirst=True)   # before xdist reads the groups (its hook runs in the workers)
def pytest_collection_modifyitems(config, items):
    """Mark each test with its kinds (above), before `-m` deselects by them. Keep what shares
    fixtures in one pytest-xdist worker (`make test` runs `-n auto --dist loadgroup`): the tests
    of the shared nnU-Net workspace in one group, so the session's source pretraining and
    strategy runs are built once per group; any other module as its own group, so its module
    fixtures are built once. The other cores take the other groups meanwhile."""
    for item in items:
        for kind in _kinds(item):
            item.add_marker(kind)
        module = item.module.__name__
        if "workspace" not in item.fixturenames:
            group = module
        elif module in OWN_WORKSPACE:
            group = f"nnunet_workspace_{module}"
        else:
            group = "nnunet_workspace"
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser the report checks use: $CHROMIUM, else the first Chromium on PATH;
    without one the test is skipped, saying how to get it (.ci/run installs it)."""
    for name in (os.environ.get("CHROMIUM"), *CHROMIUM_NAMES):
        path = name and shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run "
                "installs it): the report is not looked at in a browser")


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    root = str(tmp_path_factory.mktemp("nnunet"))
    ws = Workspace(root, workspace_env(root))
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


@pytest.fixture(scope="session")
def plain_model(workspace, source, tmp_path_factory) -> str:
    """A model folder trained by (a shortened) plain nnUNetTrainer on the source dataset under
    plans of its own (other features and stages than the shared source run's)."""
    return train_plain_model(workspace, SOURCE_ID, source["name"],
                             str(tmp_path_factory.mktemp("plain_trainer")))


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
                  "-tr", strategy.trainer_name, "-device", "cpu", "-npp", "1", "-nps", "1",
                  extra_env=ONE_THREAD)
    return out


@pytest.fixture(scope="session")
def strategy_runs(workspace, source, target, same_labels_target) -> dict:
    """Every strategy trained on a target, then predicted on its test images: two processes
    at a time, one thread each (a tiny run or prediction is mostly start-up, nnU-Net's final
    validation and its spawned export workers, not arithmetic)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {s: pool.submit(
            _train, workspace, source,
            same_labels_target if s.name in NEEDS_SOURCE_LABELS else target, s)
            for s in ONE_PHASE_STRATEGIES}
        runs = {s.name: future.result() for s, future in futures.items()}
        predictions = {s: pool.submit(_predict, workspace, runs[s.name]["target"], s)
                       for s in ONE_PHASE_STRATEGIES}
        for strategy, future in predictions.items():
            runs[strategy.name]["predictions"] = future.result()
    return runs
