#!/usr/bin/env python
"""Wall time of the full analysis of 20 runs at smoke scale, through the real commands.

Sets up (or reuses) a working folder with a synthetic source and target dataset, nnU-Net's
small CPU plans, one pretraining run on the source, and 20 runs on the target trained with the
real `nnUNetv2_train`: `--per-group` (10) nnUNetTrainer_Scratch and as many
nnUNetTrainer_FineTune from the one pretrained source, one fold each (all folds share the same
training cases; NNUNET_TRANSFER_SEED = fold), two at a time with one thread each. Runs already
finished in the folder are kept, so a second call only times the analyses.

Then times, one after the other, in fresh processes:
  analyze similarity  --group Scratch <10 runs> --group FineTune <10 runs>  (all 190 pairs)
  analyze reuse       --transfer <FineTune runs> --scratch <Scratch runs>
  analyze evolution   <20 runs>      (every snapshot vs the convergence snapshot)
  analyze weights     <20 runs>
  analyze convergence <20 runs>
with the commands' defaults (6 default layers, 16 blocks, 1000 voxels per block, PWCCA, SVCCA
and CKA, 3 null networks) and prints a Markdown table of wall times.

    python scripts/benchmark_analysis.py [--workdir DIR] [--per-group 10] [--epochs 4]
        [--iters 3] [--threads 1] [--skip-training]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnunet_transfer.discovery import console_script  # noqa: E402  (after the path above)

SOURCE_ID, TARGET_ID = 911, 912
SOURCE, TARGET = f"Dataset{SOURCE_ID}_BenchSource", f"Dataset{TARGET_ID}_BenchTarget"
PLANS = "nnUNetPlansSmallCPU"
TARGET_PLANS = f"{PLANS}_from{SOURCE_ID}"
SHAPE = (40, 40, 40)      # larger than the 32^3 patch of the small plans: blocks vary
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NNUNET_TRANSFER_CPU_THREADS": "1"}


class Workdir:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NNUNET_TRANSFER_")}
        for key, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                         ("nnUNet_results", "results")):
            self.env[key] = os.path.join(self.root, sub)
            os.makedirs(self.env[key], exist_ok=True)
        self.env.update({"nnUNet_compile": "f", "nnUNet_def_n_proc": "1"})
        exports = shlex.split(self.run("nnunet-transfer", "env").stdout)
        self.env["nnUNet_extTrainer"] = exports[1].split("=", 1)[1]

    def run(self, *command: str, extra: dict | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([console_script(command[0]), *command[1:]],
                                env={**self.env, **(extra or {})}, cwd=self.root,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
        return result

    def fold_folder(self, dataset: str, trainer: str, plans: str, fold: int | str) -> str:
        return os.path.join(self.env["nnUNet_results"], dataset,
                            f"{trainer}__{plans}__3d_fullres", f"fold_{fold}")


def prepare_data(work: Workdir, per_group: int) -> None:
    from nnunet_transfer.data.synthetic import LOW_QUALITY_DOMAIN, write_synthetic_dataset

    source_pre = os.path.join(work.env["nnUNet_preprocessed"], SOURCE)
    if not os.path.isfile(os.path.join(source_pre, "splits_final.json")):
        write_synthetic_dataset(work.env["nnUNet_raw"], SOURCE_ID, "BenchSource",
                                num_training=6, shape=SHAPE, seed=1)
        work.run("nnUNetv2_plan_and_preprocess", "-d", str(SOURCE_ID), "-c", "3d_fullres",
                 "-np", "1")
        work.run("nnunet-transfer", "small-plans", "-d", str(SOURCE_ID))
        cases = sorted(f[:-7] for f in os.listdir(os.path.join(source_pre, "gt_segmentations")))
        write_json(os.path.join(source_pre, "splits_final.json"),
                   [{"train": cases[1:], "val": cases[:1]}])
    target_pre = os.path.join(work.env["nnUNet_preprocessed"], TARGET)
    if not os.path.isfile(os.path.join(target_pre, "splits_final.json")):
        write_synthetic_dataset(work.env["nnUNet_raw"], TARGET_ID, "BenchTarget",
                                num_training=8, shape=SHAPE, domain=LOW_QUALITY_DOMAIN,
                                with_core=True, seed=TARGET_ID)
        work.run("nnunet-transfer", "plans-transfer", "--source", str(SOURCE_ID), "--target",
                 str(TARGET_ID), "-p", PLANS, "-np", "1")
        cases = sorted(f[:-7] for f in os.listdir(os.path.join(target_pre, "gt_segmentations")))
        # 2 held-out test cases (the blocks of the analysis), 2 validation, 4 training cases;
        # the same in every fold: the runs of a group differ by their seed only.
        write_json(os.path.join(target_pre, "test_cases.json"), {"test": cases[-2:]})
        write_json(os.path.join(target_pre, "splits_final.json"),
                   [{"train": cases[:4], "val": cases[4:6]}] * per_group)


def write_json(path: str, content) -> None:
    with open(path, "w") as f:
        json.dump(content, f, indent=1)


def train(work: Workdir, dataset_id: int, plans: str, trainer: str, fold: int, budget: dict,
          pretrained: str | None = None) -> float:
    dataset = SOURCE if dataset_id == SOURCE_ID else TARGET
    folder = work.fold_folder(dataset, trainer, plans, fold)
    if os.path.isfile(os.path.join(folder, "checkpoint_final.pth")):
        return 0.0
    command = ["nnUNetv2_train", str(dataset_id), "3d_fullres", str(fold), "-p", plans,
               "-tr", trainer, "-device", "cpu"]
    if pretrained:
        command += ["-pretrained_weights", pretrained]
    start = time.perf_counter()
    work.run(*command, extra={**budget, **ONE_THREAD, "NNUNET_TRANSFER_SEED": str(fold),
                              "nnUNet_n_proc_DA": "0"})
    return time.perf_counter() - start


def train_all(work: Workdir, per_group: int, epochs: int, iters: int) -> dict[str, list[str]]:
    budget = {"NNUNET_TRANSFER_EPOCHS": str(epochs), "NNUNET_TRANSFER_ITERS": str(iters),
              "NNUNET_TRANSFER_VAL_ITERS": "1", "NNUNET_TRANSFER_SNAPSHOT_EVERY": "1"}
    source_budget = {**budget, "NNUNET_TRANSFER_EPOCHS": str(2 * epochs)}
    start = time.perf_counter()
    train(work, SOURCE_ID, PLANS, "nnUNetTrainer_Scratch", 0, source_budget)
    pretrained = os.path.join(work.fold_folder(SOURCE, "nnUNetTrainer_Scratch", PLANS, 0),
                              "checkpoint_final.pth")
    jobs = [(trainer, fold) for fold in range(per_group)
            for trainer in ("nnUNetTrainer_Scratch", "nnUNetTrainer_FineTune")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: train(
            work, TARGET_ID, TARGET_PLANS, job[0], job[1], budget,
            pretrained if job[0].endswith("FineTune") else None), jobs))
    print(f"training (what was missing): {time.perf_counter() - start:.0f} s", flush=True)
    return {name: [work.fold_folder(TARGET, f"nnUNetTrainer_{name}", TARGET_PLANS, fold)
                   for fold in range(per_group)] for name in ("Scratch", "FineTune")}


def timed(work: Workdir, threads: int, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = work.run("nnunet-transfer", *args,
                      extra={**ONE_THREAD, "NNUNET_TRANSFER_CPU_THREADS": str(threads),
                             "OMP_NUM_THREADS": str(threads)})
    return time.perf_counter() - start, result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/nnunet_transfer_benchmark_analysis",
                        help="working folder; finished runs in it are reused")
    parser.add_argument("--per-group", type=int, default=10, help="runs per strategy (10)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per target run (4)")
    parser.add_argument("--iters", type=int, default=3, help="iterations per epoch (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the analyses")
    parser.add_argument("--skip-training", action="store_true",
                        help="only time the analyses (the runs must exist)")
    args = parser.parse_args()

    work = Workdir(args.workdir)
    if not args.skip_training:
        prepare_data(work, args.per_group)
    runs = train_all(work, args.per_group, args.epochs, args.iters) if not args.skip_training \
        else {name: [work.fold_folder(TARGET, f"nnUNetTrainer_{name}", TARGET_PLANS, fold)
                     for fold in range(args.per_group)] for name in ("Scratch", "FineTune")}
    every = [*runs["Scratch"], *runs["FineTune"]]
    snapshots = sum(len(os.listdir(os.path.join(f, "transfer", "snapshots"))) for f in every)
    out = os.path.join(work.root, "analysis")
    n = len(every)
    analyses = [
        ("startup (`analyze convergence --help`)", "-", ["analyze", "convergence", "--help"]),
        ("similarity", f"{n} final + 3 null networks, {n * (n - 1) // 2} + 3 pairs x 6 layers",
         ["analyze", "similarity", "-o", os.path.join(out, "similarity"),
          "--group", "Scratch", *runs["Scratch"], "--group", "FineTune", *runs["FineTune"]]),
        ("reuse", f"{2 * n} (epoch 0 and final) + 3 null networks, {n} + 3 pairs x 6 layers",
         ["analyze", "reuse", "-o", os.path.join(out, "reuse"),
          "--transfer", *runs["FineTune"], "--scratch", *runs["Scratch"]]),
        ("evolution", f"{snapshots} snapshots + 3 null networks, {snapshots - n} + 3 pairs x "
                      "6 layers, a pass per run",
         ["analyze", "evolution", "-o", os.path.join(out, "evolution"), *every]),
        ("weights", f"{n} runs x 2 snapshots, {2 * n + 1} figures",
         ["analyze", "weights", "-o", os.path.join(out, "weights"), *every]),
        ("convergence", f"{n} epoch logs", ["analyze", "convergence", "-o",
                                             os.path.join(out, "convergence"), *every]),
    ]
    print(f"\n{n} runs ({args.per_group} Scratch, {args.per_group} FineTune), {snapshots} "
          f"snapshots; {os.cpu_count()} CPUs, {args.threads} torch thread(s) per analysis; "
          "command defaults (16 blocks of 32^3, <= 1000 voxels per block and layer, PWCCA + "
          "SVCCA + CKA)\n")
    print("| analysis | what | wall time (s) |")
    print("|---|---|---:|")
    total = 0.0
    for name, what, command in analyses:
        seconds, stderr = timed(work, args.threads, *command)
        total += seconds if not name.startswith("startup") else 0.0
        print(f"| {name} | {what} | {seconds:.1f} |", flush=True)
        warnings = [line for line in stderr.splitlines() if "warning" in line]
        if warnings:
            print(f"<!-- {name}: {len(warnings)} warning line(s), e.g. {warnings[0][:160]} -->")
    print(f"| all five analyses | | {total:.1f} |")
    print(f"\noutputs in {out}")


if __name__ == "__main__":
    main()
