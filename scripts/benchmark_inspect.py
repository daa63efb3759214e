#!/usr/bin/env python
"""How long `nnunet-transfer inspect` takes on a 30M-parameter nnU-Net v2 model folder, against
the command's start-up alone (`nnunet-transfer --help`).

The model folder is made up here, as nnU-Net exports one (plans.json, dataset.json,
fold_0/checkpoint_final.pth): nnU-Net's default 3d_fullres U-Net (PlainConvUNet, features
32-320 over six stages, patch 128^3, three labels), 31.2M parameters. Each command runs as its
own process, alternating, `--runs` times; the medians of wall time and of the process's CPU
time (user + system: the steadier figure on a machine shared with other work) are printed,
with inspect's time beyond start-up and the ratio of the two. Goal (issue 21): inspect under
2 s beyond start-up.

    python scripts/benchmark_inspect.py             # 3 runs each
    python scripts/benchmark_inspect.py --runs 5 --keep /tmp/model30m
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the test helpers that write model folders

FEATURES = [32, 64, 128, 256, 320, 320]
PATCH = [128, 128, 128]
DATASET_JSON = {"labels": {"background": 0, "liver": 1, "tumour": 2},
                "channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": 100}


def make_model_folder(root: str) -> tuple[str, int]:
    """The made-up model folder under `root`, and its number of parameters."""
    from support.checkpoint_files import plain_arch_kwargs, v2_plans, write_v2_model
    from nnunet_transfer.checkpoints.reader import Checkpoint

    plans = v2_plans(plain_arch_kwargs(FEATURES), PATCH)
    network = Checkpoint.of({"network_weights": {}, "init_args": {
        "plans": plans, "configuration": "3d_fullres", "dataset_json": DATASET_JSON}}
    ).network(load_weights=False)
    parameters = sum(p.numel() for p in network.parameters())
    return write_v2_model(root, plans, DATASET_JSON, network.state_dict()), parameters


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `command` (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", default=None,
                        help="make the model folder here and keep it (default: a temporary one)")
    args = parser.parse_args()
    tool = os.path.join(os.path.dirname(sys.executable), "nnunet-transfer")
    with tempfile.TemporaryDirectory() as temporary:
        folder, parameters = make_model_folder(args.keep or temporary)
        commands = {"start-up (--help)": [tool, "--help"], "inspect": [tool, "inspect", folder]}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(timed(command))
    medians = {name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
               for name, runs in times.items()}
    print(f"model folder: {folder} ({parameters:,} parameters); medians of {args.runs} runs")
    print(f"| {'command':<20} | wall s | CPU s |")
    print(f"|{'-' * 22}|--------|-------|")
    for name, (wall, cpu) in medians.items():
        print(f"| {name:<20} | {wall:6.2f} | {cpu:5.2f} |")
    (start_wall, start_cpu), (inspect_wall, inspect_cpu) = medians.values()
    print(f"inspect beyond start-up: {inspect_wall - start_wall:.2f} s wall, "
          f"{inspect_cpu - start_cpu:.2f} s CPU (goal: under 2 s); "
          f"inspect / start-up: {inspect_wall / start_wall:.2f}x wall, "
          f"{inspect_cpu / start_cpu:.2f}x CPU")


if __name__ == "__main__":
    main()
