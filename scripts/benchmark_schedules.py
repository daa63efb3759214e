#!/usr/bin/env python
"""Training-step time, peak memory and trainable parameters of every strategy, phase by phase,
relative to Scratch, measured side by side in one run on CPU.

The network, patch, batch, loss and step are those of scripts/benchmark_strategies.py (nnU-Net's
U-Net for a Hippocampus-like plan, PlainConvUNet 32-256, patch 40x56x40, batch 2); each phase is
set up as the trainer sets it up (adapters, optimizer groups with their learning-rate
multipliers, frozen modules in eval mode: selection.set_up_phase). Each measurement runs in a
fresh process, so that its peak resident memory is its own (peak RSS minus RSS just before the
first step); the (strategy, phase) pairs are interleaved over rounds and the medians compared.
Besides wall time, the process's CPU time per step is reported: on a machine shared with other
work it is the steadier of the two.

Targets (the issue's): a LoRA step <= 0.80x a FineTune step, with <= 5 % of FineTune's trainable
parameters; a phase of a schedule that freezes something costs what the one-phase strategy with
the same trainable parameters costs, within 10 %.

    python scripts/benchmark_schedules.py                     # every strategy, 3 rounds
    python scripts/benchmark_schedules.py --strategies Scratch FineTune LoRA --rounds 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys

from benchmark_strategies import BATCH, PATCH, build_network, print_table, rss_bytes
from benchmarking.step_cost import phases_of

NOMINAL_EPOCHS = 100  # the run length the schedules' fractions are resolved against


def strategy_named(name: str):
    from nnunet_transfer.training.strategies import STRATEGIES
    return next(s for s in STRATEGIES if s.name == name)


def child(strategy_name: str, phase_name: str, args) -> dict:
    import torch
    from benchmarking.step_cost import time_training_steps

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    network = build_network(args.features)
    phase = next(p for p in phases_of(strategy_named(strategy_name), network, NOMINAL_EPOCHS)
                 if p.name == phase_name)
    baseline = []
    times = time_training_steps(network, batch=BATCH if args.patch is None else 1,
                                patch=tuple(args.patch or PATCH), steps=args.steps,
                                warmup=args.warmup, time_encoder_forward=False, phase=phase,
                                before_steps=lambda: baseline.append(rss_bytes()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    trainable = sorted(n for n, p in network.named_parameters() if p.requires_grad)
    return {"times": times.steps, "cpu": times.cpu, "peak_mb": (peak - baseline[0]) / 2 ** 20,
            "trainable": sum(p.numel() for p in network.parameters() if p.requires_grad),
            # the same set of trainable parameters: the same step, whatever the strategy
            "signature": hashlib.sha1("\n".join(trainable).encode()).hexdigest(),
            "adapters": any("parametrizations" in n for n in trainable)}


def units(names: list[str], features: int) -> list[tuple[str, str, int, int]]:
    """(strategy, phase, first epoch, last epoch + 1) of every phase to measure."""
    network = build_network(features)
    return [(name, phase.name, phase.start, phase.end) for name in names
            for phase in phases_of(strategy_named(name), network, NOMINAL_EPOCHS)]


def measure(todo, args) -> dict:
    passed = ["--features", str(args.features), "--steps", str(args.steps), "--warmup",
              str(args.warmup), "--threads", str(args.threads)]
    if args.patch:
        passed += ["--patch", *map(str, args.patch)]
    results = {(s, p): {"times": [], "cpu": [], "peaks": []} for s, p, _, _ in todo}
    for r in range(args.rounds):
        for strategy, phase, _, _ in todo:
            out = subprocess.run([sys.executable, __file__, "--child", strategy, phase, *passed],
                                 capture_output=True, text=True, check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            result = results[(strategy, phase)]
            result["times"] += m["times"]
            result["cpu"] += m["cpu"]
            result["peaks"].append(m["peak_mb"])
            result.update(trainable=m["trainable"], signature=m["signature"],
                          adapters=m["adapters"])
            print(f"  round {r + 1}/{args.rounds} {strategy}/{phase}: median step "
                  f"{statistics.median(m['times']):.3f} s (CPU {statistics.median(m['cpu']):.3f}"
                  f" s), peak +{m['peak_mb']:.0f} MiB", flush=True)
    return results


def equivalents(results: dict) -> dict:
    """(strategy, phase) of a schedule -> the one-phase strategy training the same parameters."""
    from nnunet_transfer.training.strategies import ONE_PHASE_STRATEGIES
    one_phase = {s.name for s in ONE_PHASE_STRATEGIES}
    by_signature = {m["signature"]: s for (s, _), m in results.items() if s in one_phase}
    return {key: by_signature[m["signature"]] for key, m in results.items()
            if key[0] not in one_phase and m["signature"] in by_signature}


def report(todo, results: dict) -> None:
    stats = {key: {"step": statistics.median(m["times"]), "cpu": statistics.median(m["cpu"]),
                   "peak": statistics.median(m["peaks"]), "trainable": m["trainable"]}
             for key, m in results.items()}
    scratch = next(v for (s, _), v in stats.items() if s == "Scratch")
    same = equivalents(results)
    rows = []
    for strategy, phase, start, end in todo:
        v = stats[(strategy, phase)]
        eq = same.get((strategy, phase))
        versus = "" if eq is None else (
            f"{eq}: {v['step'] / stats[(eq, 'train')]['step']:.2f}x "
            f"(CPU {v['cpu'] / stats[(eq, 'train')]['cpu']:.2f}x)")
        rows.append([strategy, phase, f"{start}-{end - 1}", f"{v['trainable']:,}",
                     f"{v['trainable'] / scratch['trainable']:.4f}x", f"{v['step']:.3f}",
                     f"{v['step'] / scratch['step']:.2f}x", f"{v['cpu']:.3f}",
                     f"{v['cpu'] / scratch['cpu']:.2f}x", f"{v['peak']:.0f}",
                     f"{v['peak'] / scratch['peak']:.2f}x", versus])
    print()
    print_table(["strategy", "phase", f"epochs of {NOMINAL_EPOCHS}", "trainable parameters",
                 "vs Scratch", "median step (s)", "vs Scratch", "median CPU s / step",
                 "vs Scratch", "peak step memory (MiB)", "vs Scratch",
                 "same trainable set as (step, CPU ratio)"], "lllrrrrrrrrl", rows)
    lora, fine = stats.get(("LoRA", "train")), stats.get(("FineTune", "train"))
    if lora and fine:
        print(f"\nLoRA / FineTune: step {lora['step'] / fine['step']:.2f}x (CPU "
              f"{lora['cpu'] / fine['cpu']:.2f}x; target <= 0.80x), trainable parameters "
              f"{100 * lora['trainable'] / fine['trainable']:.2f} % (target <= 5 %), "
              f"peak memory {lora['peak'] / fine['peak']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--strategies", nargs="+", help="strategy names (default: all); "
                        "Scratch is always measured, as the reference")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    parser.add_argument("--features", type=int, default=32,
                        help="features of the first stage (default 32, nnU-Net's)")
    parser.add_argument("--patch", type=int, nargs=3,
                        help="another patch, batch 1 (for a quick check of the script)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return
    from nnunet_transfer.training.strategies import STRATEGIES
    names = args.strategies or [s.name for s in STRATEGIES]
    unknown = sorted(set(names) - {s.name for s in STRATEGIES})
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {[s.name for s in STRATEGIES]}")
    names = ["Scratch"] + [n for n in names if n != "Scratch"]
    todo = units(names, args.features)
    print(f"Step cost per strategy and phase: PlainConvUNet {args.features}-{8 * args.features}, "
          f"patch {tuple(args.patch or PATCH)}, batch {1 if args.patch else BATCH}, "
          f"{args.threads} thread(s), {args.rounds} rounds x {args.steps} steps, "
          f"{len(todo)} phases", flush=True)
    report(todo, measure(todo, args))


if __name__ == "__main__":
    main()
