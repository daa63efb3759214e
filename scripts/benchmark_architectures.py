#!/usr/bin/env python
"""Size and cost of each architecture at a Hippocampus-like plan, measured side by side on CPU.

Every network is built exactly as nnU-Net builds it from the configuration
`nnunet-transfer add-architectures` derives from this plan (nnU-Net's own PlainConvUNet row is
the plan itself): patch 40x56x40, strides 1-2-2-2, 3x3x3 kernels, 1 input channel, 3 classes,
instance norm, batch 2. Reported per architecture:

- parameters, and the share in the encoder (the part the frozen-encoder strategies freeze);
- forward FLOPs of one batch (torch.utils.flop_counter, multiply-add = 2 FLOPs) and the
  encoder's share;
- median training-step time (nnU-Net's loss, SGD, gradient clipping:
  benchmarking/step_cost.py) trained from scratch and with the encoder frozen at its random init (FrozenRandomEncoder), and
  their ratio. Karimi et al. measured 0.63 s vs 1.08 s (0.58x) on their network;
- the encoder's share of the Scratch step time: its forward (timed by forward hooks) plus
  the work a frozen encoder skips (Scratch step minus FrozenRandomEncoder step: the encoder's
  backward, weight gradients and update).

Each measurement runs in a fresh process; Scratch and FrozenRandomEncoder alternate over
rounds; medians compared.

    python scripts/benchmark_architectures.py --rounds 3
    python scripts/benchmark_architectures.py --rounds 3 --update-docs   # docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PATCH = [40, 56, 40]
BATCH = 2
STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
NNUNET_UNET = "nnunet_unet"
# where --update-docs writes the table (scripts/write_reference_tables.py writes every table)
BENCHMARKS_PAGE, TABLE_NAME = "docs/benchmarks.md", "architectures-benchmark"


def plan_arch_kwargs() -> dict:
    """arch_kwargs of the plan's 3d_fullres configuration, as nnU-Net 2.8 writes them."""
    n = len(STRIDES)
    return {
        "n_stages": n, "features_per_stage": [32, 64, 128, 256],
        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n,
        "strides": STRIDES, "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def build(name: str):
    """The network and whether nnU-Net's trainers would train it with deep supervision."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunet_transfer.architectures.registry import build_network, network_class, template
    if name == NNUNET_UNET:
        network = get_network_from_plans(
            "dynamic_network_architectures.architectures.unet.PlainConvUNet", plan_arch_kwargs(),
            ["conv_op", "norm_op", "dropout_op", "nonlin"], 1, 3, deep_supervision=True)
        return network
    supervised = network_class(template(name)["network_class_name"]).has_deep_supervision
    return build_network(name, plan_arch_kwargs(), PATCH, 1, 3, deep_supervision=supervised)


def static_figures(name: str) -> dict:
    """Parameters and forward FLOPs, in total and in the encoder."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from nnunet_transfer.architectures import partition
    network = build(name)
    parts = partition(network)
    total = sum(p.numel() for p in network.parameters())
    encoder = sum(p.numel() for p in parts.parameters("encoder"))
    counter = FlopCounterMode(display=False, depth=None)
    with counter, torch.no_grad():
        network(torch.randn(BATCH, 1, *PATCH))
    counts = {key: sum(per_op.values()) for key, per_op in counter.get_flop_counts().items()}
    # A module reachable under two names (nnU-Net's decoder.encoder) is counted under one.
    aliases: dict[int, list[str]] = {}
    for alias, module in network.named_modules(remove_duplicate=False):
        aliases.setdefault(id(module), []).append(f"{type(network).__name__}.{alias}")
    encoder_flops = sum(max(counts.get(a, 0) for a in aliases[id(m)])
                        for m in parts.modules["encoder"])
    return {"parameters": total, "encoder_parameters": encoder,
            "flops": counter.get_total_flops(), "encoder_flops": encoder_flops}


def child(name: str, frozen: bool, steps: int, warmup: int) -> dict:
    import torch
    from benchmarking.step_cost import time_training_steps
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    times = time_training_steps(build(name), {"encoder"} if frozen else set(),
                                random_init=True, batch=BATCH, patch=PATCH, steps=steps,
                                warmup=warmup)
    return {"steps": times.steps, "encoder_forward": times.encoder_forward}


def measure(names: list[str], rounds: int, steps: int, warmup: int) -> dict:
    results = {n: {"scratch": [], "frozen": [], "encoder_forward": []} for n in names}
    for r in range(rounds):
        for name in names:
            for frozen in (False, True):
                command = [sys.executable, __file__, "--child", name, "--steps", str(steps),
                           "--warmup", str(warmup)] + (["--frozen"] if frozen else [])
                out = subprocess.run(command, capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"{name}: measurement failed\n{out.stderr[-3000:]}")
                m = json.loads(out.stdout.strip().splitlines()[-1])
                results[name]["frozen" if frozen else "scratch"] += m["steps"]
                if not frozen:
                    results[name]["encoder_forward"] += m["encoder_forward"]
                print(f"  round {r + 1}/{rounds} {name:<12} "
                      f"{'FrozenRandomEncoder' if frozen else 'Scratch':<20} median step "
                      f"{statistics.median(m['steps']):.3f} s", flush=True)
    return results


def table(names: list[str], static: dict, timed: dict) -> str:
    lines = ["| architecture | parameters | in encoder | forward GFLOPs | in encoder | "
             "Scratch step (s) | FrozenRandomEncoder step (s) | FRE / Scratch | "
             "encoder share of step time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        s, t = static[name], timed[name]
        scratch, frozen = statistics.median(t["scratch"]), statistics.median(t["frozen"])
        encoder_time = statistics.median(t["encoder_forward"]) + (scratch - frozen)
        label = "nnU-Net PlainConvUNet (reference)" if name == NNUNET_UNET else f"`{name}`"
        lines.append(
            f"| {label} | {s['parameters'] / 1e6:.2f} M | "
            f"{s['encoder_parameters'] / s['parameters']:.0%} | {s['flops'] / 1e9:.1f} | "
            f"{s['encoder_flops'] / s['flops']:.0%} | {scratch:.3f} | {frozen:.3f} | "
            f"{frozen / scratch:.2f}x | {encoder_time / scratch:.0%} |")
    return "\n".join(lines)


def main() -> None:
    from nnunet_transfer.architectures.registry import ARCHITECTURES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--frozen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", default=None, help="comma-separated architectures")
    parser.add_argument("--update-docs", action="store_true",
                        help=f"write the table into {BENCHMARKS_PAGE} between its markers")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.frozen, args.steps, args.warmup)))
        return
    names = args.only.split(",") if args.only else [NNUNET_UNET, *ARCHITECTURES]
    static = {name: static_figures(name) for name in names}
    threads = os.environ.get("BENCH_THREADS", "2")
    print(f"patch {PATCH}, batch {BATCH}, {threads} threads, {args.rounds} rounds x "
          f"{args.steps} steps", flush=True)
    timed = measure(names, args.rounds, args.steps, args.warmup)
    text = (f"Patch {'x'.join(map(str, PATCH))}, batch {BATCH}, 1 channel, 3 classes, "
            f"{threads} CPU threads, median of {args.rounds} rounds x {args.steps} steps "
            f"(`python scripts/benchmark_architectures.py --rounds {args.rounds}`).\n\n"
            + table(names, static, timed))
    print("\n" + text)
    if args.update_docs:
        from write_reference_tables import write_table   # this script's own folder
        write_table(BENCHMARKS_PAGE, TABLE_NAME, text)
        print(f"updated {BENCHMARKS_PAGE}")


if __name__ == "__main__":
    main()
