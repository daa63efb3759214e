#!/usr/bin/env python
"""What `rank-sources` costs against one fine-tuning run of the same target, on this machine.

Issue 21 asks the ranking to cost at most 10 % of one fine-tuning run. Both are measured here
side by side, as the user runs them (each its own process, default threads, CPU):

- set-up (not timed): two synthetic sources trained a few dozen steps (the tests' known answer:
  the same task, and an unrelated structure) and a target of `--cases` training cases, 32^3
  voxels, in a temporary nnU-Net workspace; the target preprocessed with the first source's
  plans (`plans-transfer --source-model`, what fine-tuning needs first);
- `rank-sources` over the two sources (`--runs` times);
- one fine-tuning run (`nnUNetv2_train ... -tr nnUNetTrainer_FineTune -pretrained_weights`) of
  `--epochs` epochs of `--iters` iterations (default 1 x 250: one epoch of nnU-Net's own
  per-epoch budget, the smallest run there is; nnU-Net's default is 1000 such epochs),
  start-up and nnU-Net's final validation included (`--finetune-runs` times).

It prints the medians (wall and the process's CPU time: the steadier figure on a shared
machine), the ratio ranking / fine-tuning run, and the ratio against nnU-Net's default budget
(1000 epochs, from the run's median epoch time).

    python scripts/benchmark_rank_sources.py                    # 3 rankings, 1 fine-tuning run
    python scripts/benchmark_rank_sources.py --runs 5 --epochs 2 --keep /tmp/bench_rank
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the test helpers that write the datasets

SMALL_PLANS = "nnUNetPlansSmallCPU"
NNUNET_EPOCHS = 1000
SOURCES = ((811, "BenchOrgan"), (812, "BenchVessel"))
TARGET = (813, "BenchTarget")
# the sources' training: a few dozen steps, as in tests/test_rank_sources.py
SOURCE_TRAINING = {"NNUNET_TRANSFER_EPOCHS": "4", "NNUNET_TRANSFER_ITERS": "10",
                   "NNUNET_TRANSFER_SEED": "3", "nnUNet_n_proc_DA": "0"}


def tool(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else name


def run(command: list[str], env: dict, extra: dict | None = None) -> float:
    """Run `command` (which must succeed); its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([tool(command[0]), *command[1:]], env={**env, **(extra or {})},
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n"
                         f"{result.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed(command: list[str], env: dict, extra: dict | None = None) -> tuple[float, float]:
    start = time.perf_counter()
    cpu = run(command, env, extra)
    return time.perf_counter() - start, cpu


def set_up(root: str, cases: int) -> tuple[dict, list[str], str]:
    """The workspace's environment, the two source model folders, the transferred plans."""
    from nnunet_transfer.data.synthetic import LOW_QUALITY_DOMAIN, write_synthetic_dataset
    from support.ranking_data import write_unrelated_dataset

    env = {k: v for k, v in os.environ.items() if not k.startswith("NNUNET_TRANSFER_")}
    for key in ("raw", "preprocessed", "results"):
        env[f"nnUNet_{key}"] = os.path.join(root, key)
        os.makedirs(env[f"nnUNet_{key}"], exist_ok=True)
    env.update({"nnUNet_compile": "f", "PYTHONPATH": ROOT})
    exports = shlex.split(subprocess.run([tool("nnunet-transfer"), "env"], env=env, check=True,
                                         capture_output=True, text=True).stdout)
    env["nnUNet_extTrainer"] = exports[1].split("=", 1)[1]
    raw = env["nnUNet_raw"]
    write_synthetic_dataset(raw, SOURCES[0][0], SOURCES[0][1], num_training=4, seed=11)
    write_unrelated_dataset(raw, SOURCES[1][0], SOURCES[1][1], num_training=4, seed=12)
    write_synthetic_dataset(raw, TARGET[0], TARGET[1], num_training=cases, num_test=1,
                            domain=LOW_QUALITY_DOMAIN, seed=13)
    models = []
    for dataset_id, name in SOURCES:
        run(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "3d_fullres",
             "-np", "1", "-npfp", "1"], env)
        run(["nnunet-transfer", "small-plans", "-d", str(dataset_id)], env)
        run(["nnUNetv2_train", str(dataset_id), "3d_fullres", "all", "-p", SMALL_PLANS,
             "-tr", "nnUNetTrainer_Scratch", "-device", "cpu"], env, SOURCE_TRAINING)
        models.append(os.path.join(env["nnUNet_results"], f"Dataset{dataset_id}_{name}",
                                   f"nnUNetTrainer_Scratch__{SMALL_PLANS}__3d_fullres"))
    run(["nnunet-transfer", "plans-transfer", "--source-model", models[0], "--target",
         str(TARGET[0]), "-np", "1"], env)
    plans = os.path.basename(glob.glob(os.path.join(
        env["nnUNet_preprocessed"], f"Dataset{TARGET[0]}_{TARGET[1]}", "*_from*.json"))[0])
    return env, models, plans[:-len(".json")]


def epoch_times(env: dict, plans: str) -> list[float]:
    """The epoch times the last fine-tuning run logged."""
    logs = sorted(glob.glob(os.path.join(
        env["nnUNet_results"], f"Dataset{TARGET[0]}_{TARGET[1]}",
        f"nnUNetTrainer_FineTune__{plans}__3d_fullres", "fold_0", "training_log_*.txt")))
    with open(logs[-1]) as f:
        return [float(t) for t in re.findall(r"Epoch time: ([0-9.]+) s", f.read())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rank-sources runs (default 3)")
    parser.add_argument("--finetune-runs", type=int, default=1,
                        help="fine-tuning runs (default 1)")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (default 1)")
    parser.add_argument("--iters", type=int, default=250,
                        help="iterations per epoch (default nnU-Net's 250)")
    parser.add_argument("--cases", type=int, default=10,
                        help="target training cases (default 10, rank-sources' --max-cases)")
    parser.add_argument("--keep", default=None, help="work here and keep it (default: a "
                                                     "temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = args.keep or temporary
        print(f"set-up in {root} (two sources trained, the target transferred) ...", flush=True)
        env, models, plans = set_up(root, args.cases)
        rank = ["nnunet-transfer", "rank-sources", "--target", str(TARGET[0]), "-device", "cpu",
                f"same={models[0]}", f"unrelated={models[1]}"]
        finetune = ["nnUNetv2_train", str(TARGET[0]), "3d_fullres", "0", "-p", plans,
                    "-tr", "nnUNetTrainer_FineTune", "-device", "cpu", "-pretrained_weights",
                    os.path.join(models[0], "fold_all", "checkpoint_final.pth")]
        budget = {"NNUNET_TRANSFER_EPOCHS": str(args.epochs),
                  "NNUNET_TRANSFER_ITERS": str(args.iters)}
        rankings = [timed(rank, env) for _ in range(args.runs)]
        runs, epochs = [], []
        for _ in range(args.finetune_runs):
            runs.append(timed(finetune, env, budget))
            epochs += epoch_times(env, plans)
    rank_wall = statistics.median(w for w, _ in rankings)
    rank_cpu = statistics.median(c for _, c in rankings)
    ft_wall = statistics.median(w for w, _ in runs)
    ft_cpu = statistics.median(c for _, c in runs)
    epoch = statistics.median(epochs)
    print(f"\ntarget: {args.cases} training cases of 32^3; 2 sources; fine-tuning: {args.epochs} "
          f"epoch(s) x {args.iters} iterations (medians of {args.runs} rankings, "
          f"{args.finetune_runs} fine-tuning run(s))")
    print(f"| {'command':<44} | wall s | CPU s |")
    print(f"|{'-' * 46}|--------|-------|")
    print(f"| {'rank-sources, 2 sources':<44} | {rank_wall:6.1f} | {rank_cpu:5.1f} |")
    label = f"nnUNetv2_train FineTune, {args.epochs} x {args.iters} iterations"
    print(f"| {label:<44} | {ft_wall:6.1f} | {ft_cpu:5.1f} |")
    print(f"ranking / fine-tuning run: {100 * rank_wall / ft_wall:.1f} % wall, "
          f"{100 * rank_cpu / ft_cpu:.1f} % CPU (goal: at most 10 %)")
    print(f"median epoch {epoch:.1f} s: nnU-Net's default run ({NNUNET_EPOCHS} epochs) about "
          f"{NNUNET_EPOCHS * epoch / 3600:.1f} h; the ranking is "
          f"{100 * rank_wall / (NNUNET_EPOCHS * epoch):.3f} % of it")


if __name__ == "__main__":
    main()
