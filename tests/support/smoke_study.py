"""The smoke study of the end-to-end study tests: its file, the CLI and environment it runs
with, and reading its state while it runs."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time

STUDY = """\
    study: smoke
    workdir: .
    device: cpu
    executor: {{kind: {executor}, jobs: 2}}
    datasets:
      src: {{id: 811, name: SmokeSource, synthetic: {{cases: 5, shape: [24, 24, 24], seed: 1}}}}
      tgt: {{id: 812, name: SmokeTarget, synthetic: {{cases: 7, shape: [24, 24, 24],
             low_quality: true, seed: 2}}}}
      unseen: {{id: 813, name: SmokeUnseen, synthetic: {{cases: 2, test_cases: 2,
                shape: [24, 24, 24], low_quality: true, seed: 3}}}}
    source: src
    target: tgt
    test_cases: 3
    validation_cases: 1
    generalization: {generalization}
    plans: {{small: {{patch: [24, 24, 24], features: 4, max_features: 16, batch: 2, stages: 3}}}}
    sizes: [2]
    seeds: {seeds}
    strategies: {strategies}
    budget: {{epochs: {epochs}, iterations: 3, val_iterations: 1, snapshot_every: 1,
             source_epochs: 2}}
    analyses: {analyses}
    analysis: {{blocks: 2, voxels_per_block: 512}}
    prediction: {{step_size: 0.5, disable_tta: true}}
"""


def write_study(folder, **values) -> str:
    settings = dict(executor="local", generalization="unseen", seeds="[0, 1]",
                    strategies="[Scratch, FineTune]", epochs=3,
                    analyses="[convergence, evolution, similarity, reuse, weights]")
    settings.update(values)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "study.yaml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(STUDY.format(**settings)))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nnunet_transfer.cli", *args]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("nnUNet_", "NNUNET_TRANSFER_"))}
    env.update(nnUNet_compile="f", nnUNet_def_n_proc="1", OMP_NUM_THREADS="1")
    return env


def read_state(folder: str) -> dict:
    path = os.path.join(folder, "study", "state.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)["jobs"]


def wait_for(predicate, timeout: float, what: str, process=None):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the runner ended (exit {process.returncode}) before {what}")
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")
