"""The nnU-Net workspace of the end-to-end tests: its three folders, the ids and plans of the
shared source and targets, the tiny training budget, and running nnU-Net's and our commands in
it as subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

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


def workspace_env(root: str) -> dict:
    """nnU-Net's three folders under `root`, no budget variables of the caller, no compile."""
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
