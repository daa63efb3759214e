#!/usr/bin/env python
"""Training-step time and peak memory of each strategy relative to Scratch, and the cost of
our bookkeeping relative to nnU-Net's plain trainer, measured side by side in one run on CPU.

Part A, step cost: nnU-Net's U-Net for a Hippocampus-like plan (PlainConvUNet 32-64-128-256,
patch 40x56x40, batch 2, deep supervision, nnU-Net's Dice+CE loss, SGD with nesterov and
gradient clipping as in nnUNetTrainer.train_step), frozen exactly as the trainers freeze it
(nnunet_transfer.training.freezing). Each measurement runs in a fresh process so that its peak
resident memory is its own; strategies are interleaved over rounds and the medians compared.
Peak memory is the process's peak RSS minus its RSS just before the first step (network,
batch and optimizer already allocated), i.e. what one training step adds.

Part B, bookkeeping: real `nnUNetv2_train` runs of nnUNetTrainer and nnUNetTrainer_Scratch
(alternating) on a synthetic Hippocampus-sized dataset with nnU-Net's own plan, snapshots every
epoch (the worst case). Reported: the median epoch-start-to-epoch-start interval of each, and
the time Scratch itself measured inside its bookkeeping hooks as a share of its training time.

    python scripts/benchmark_strategies.py               # everything (about 20 minutes)
    python scripts/benchmark_strategies.py --skip-bookkeeping --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile

PATCH = (40, 56, 40)
BATCH = 2


def build_network(base_features: int = 32):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn
    n = 4
    return PlainConvUNet(
        1, n, [base_features * 2 ** i for i in range(n)], nn.Conv3d, [[3, 3, 3]] * n,
        [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), [2] * n, 3, [2] * (n - 1), conv_bias=True,
        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(strategy_name: str, steps: int, warmup: int) -> dict:
    import torch
    from benchmarking.step_cost import time_training_steps
    from nnunet_transfer.training.strategies import ONE_PHASE_STRATEGIES, Pretrained

    strategy = next(s for s in ONE_PHASE_STRATEGIES if s.name == strategy_name)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    baseline = []
    times = time_training_steps(build_network(), strategy.frozen_parts,
                                random_init=strategy.pretrained is Pretrained.REFUSED,
                                batch=BATCH, patch=PATCH, steps=steps, warmup=warmup,
                                time_encoder_forward=False,
                                before_steps=lambda: baseline.append(rss_bytes()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"times": times.steps, "peak_mb": (peak - baseline[0]) / 2 ** 20}


def measure_steps(rounds: int, steps: int, warmup: int) -> dict:
    from nnunet_transfer.training.strategies import ONE_PHASE_STRATEGIES
    names = [s.name for s in ONE_PHASE_STRATEGIES]
    results = {n: {"times": [], "peaks": []} for n in names}
    for r in range(rounds):
        for name in names:
            out = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(steps),
                                  "--warmup", str(warmup)], capture_output=True, text=True,
                                 check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            results[name]["times"] += m["times"]
            results[name]["peaks"].append(m["peak_mb"])
            print(f"  round {r + 1}/{rounds} {name:<22} median step "
                  f"{statistics.median(m['times']):.3f} s, peak +{m['peak_mb']:.0f} MiB", flush=True)
    return results


def measure_bookkeeping(epochs: int, iters: int, repeats: int) -> dict:
    from nnunet_transfer.data.synthetic import write_synthetic_dataset
    root = tempfile.mkdtemp(prefix="bench_bookkeeping_")
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "nnUNet_raw": f"{root}/raw", "nnUNet_preprocessed": f"{root}/pre",
           "nnUNet_results": f"{root}/res", "nnUNet_compile": "f", "nnUNet_def_n_proc": "1",
           "NNUNET_TRANSFER_SNAPSHOT_EVERY": "1", "NNUNET_TRANSFER_SEED": "0"}
    exports = subprocess.run([f"{bindir}/nnunet-transfer", "env"], capture_output=True, text=True,
                             env=env, check=True).stdout
    env["nnUNet_extTrainer"] = shlex.split(exports)[1].split("=", 1)[1]
    write_synthetic_dataset(env["nnUNet_raw"], 990, "BenchHippo", num_training=4,
                            shape=(36, 50, 35), seed=0)
    subprocess.run([f"{bindir}/nnUNetv2_plan_and_preprocess", "-d", "990", "-c", "3d_fullres",
                    "-np", "1"], env=env, check=True, capture_output=True)
    plans = json.load(open(f"{root}/pre/Dataset990_BenchHippo/nnUNetPlans.json"))
    plans["configurations"]["3d_fullres"]["batch_size"] = BATCH
    json.dump(plans, open(f"{root}/pre/Dataset990_BenchHippo/nnUNetPlans.json", "w"))
    # nnU-Net's plain trainer reads no knobs: a subclass with the same budget, nothing else.
    trainer_dir = os.path.join(root, "plain_trainer")
    os.makedirs(trainer_dir)
    with open(os.path.join(trainer_dir, "bench_plain_trainer.py"), "w") as f:
        f.write("import torch\n"
                "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n\n"
                "class nnUNetTrainer_BenchPlain(nnUNetTrainer):\n"
                "    def __init__(self, plans, configuration, fold, dataset_json,\n"
                "                 device=torch.device('cuda')):\n"
                "        super().__init__(plans, configuration, fold, dataset_json, device)\n"
                f"        self.num_epochs, self.num_iterations_per_epoch = {epochs}, {iters}\n"
                "        self.num_val_iterations_per_epoch = 2\n")
    env["nnUNet_extTrainer"] += os.pathsep + trainer_dir
    env.update(NNUNET_TRANSFER_EPOCHS=str(epochs), NNUNET_TRANSFER_ITERS=str(iters),
               NNUNET_TRANSFER_VAL_ITERS="2", nnUNet_n_proc_DA="0")
    intervals = {"nnUNetTrainer_BenchPlain": [], "nnUNetTrainer_Scratch": []}
    shares = []
    cases = [f"benchhippo_tr{i:03d}" for i in range(4)]
    splits = [{"train": [c for c in cases if c != cases[r % 4]], "val": [cases[r % 4]]}
              for r in range(repeats)]
    json.dump(splits, open(f"{root}/pre/Dataset990_BenchHippo/splits_final.json", "w"))
    import torch
    for r in range(repeats):
        for trainer in intervals:
            fold = str(r)
            subprocess.run([f"{bindir}/nnUNetv2_train", "990", "3d_fullres", fold, "-tr", trainer,
                            "-device", "cpu"], env=env, check=True, capture_output=True)
            out = f"{root}/res/Dataset990_BenchHippo/{trainer}__nnUNetPlans__3d_fullres/fold_{fold}"
            logging = torch.load(f"{out}/checkpoint_final.pth", map_location="cpu",
                                 weights_only=False)["logging"]
            starts = logging["epoch_start_timestamps"]
            # Start to start: everything an epoch costs, bookkeeping after nnU-Net's hooks included.
            intervals[trainer] += [b - a for a, b in zip(starts[1:], starts[2:])]
            if trainer == "nnUNetTrainer_Scratch":
                settings = json.load(open(f"{out}/transfer/settings.json"))
                shares.append(settings["bookkeeping_time_s"] / settings["cumulative_time_s"])
            print(f"  repeat {r + 1}/{repeats} {trainer}: epoch intervals "
                  f"{[round(b - a, 2) for a, b in zip(starts[1:], starts[2:])]}", flush=True)
    return {"intervals": intervals, "shares": shares,
            "patch": plans["configurations"]["3d_fullres"]["patch_size"]}


def print_table(header: list[str], align: str, rows: list[list[str]]) -> None:
    """A Markdown table on stdout; `align` has an "l" or "r" per column."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-bookkeeping", action="store_true")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.warmup)))
        return

    print(f"Part A: step time and peak memory, PlainConvUNet 32-256, patch {PATCH}, batch {BATCH}, "
          f"{args.rounds} rounds x {args.steps} steps", flush=True)
    steps = measure_steps(args.rounds, args.steps, args.warmup)
    medians = {name: (statistics.median(m["times"]), statistics.median(m["peaks"]))
               for name, m in steps.items()}
    base_t, base_m = medians["Scratch"]
    targets = {"FrozenRandomEncoder": ("<= 0.75", "<= 0.80"), "FrozenEncoder": ("<= 0.75", "<= 0.80"),
               "FrozenDecoder": ("<= 0.82", "")}
    rows = []
    for name, (t, p) in medians.items():
        tt, tm = targets.get(name, ("", ""))
        rows.append([name, f"{t:.3f}", f"{t / base_t:.3f}x", tt, f"{p:.0f}", f"{p / base_m:.3f}x",
                     tm])
    print()
    print_table(["strategy", "median step (s)", "step vs Scratch", "target",
                 "peak step memory (MiB)", "memory vs Scratch", "target"], "lrrlrrl", rows)

    if args.skip_bookkeeping:
        return
    print(f"\nPart B: bookkeeping, real nnUNetv2_train, {args.epochs} epochs x {args.iters} "
          f"iterations, snapshots every epoch, {args.repeats} runs each", flush=True)
    b = measure_bookkeeping(args.epochs, args.iters, args.repeats)
    plain = statistics.median(b["intervals"]["nnUNetTrainer_BenchPlain"])
    ours = statistics.median(b["intervals"]["nnUNetTrainer_Scratch"])
    print(f"\nnnU-Net plan patch {b['patch']}, batch {BATCH}")
    print_table(["trainer", "median epoch interval (s)"], "lr",
                [["nnUNetTrainer (plain)", f"{plain:.2f}"], ["nnUNetTrainer_Scratch", f"{ours:.2f}"]])
    print(f"side by side: Scratch / plain = {ours / plain:.3f}x")
    print(f"time inside our bookkeeping, measured by the trainer: "
          f"{100 * statistics.median(b['shares']):.2f} % of the run's epoch time (training and "
          "validation; target <= 2 %)")


if __name__ == "__main__":
    main()
