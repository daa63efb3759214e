#!/usr/bin/env python
"""The GPU check: one short run on one GPU that prints one table.

At nnU-Net's own default 3d_fullres network and patch for MSD Hippocampus (nnU-Net 2.8.1's
planner on the 260 training cases: PlainConvUNet 32-64-128-256, 4 stages, 3x3x3 kernels,
strides 1-2-2-2, instance norm, leaky ReLU, patch 40x56x40, batch 9), it measures:

- the median training-step time and the peak GPU memory of every strategy relative to
  Scratch (each phase of a schedule on its own row), and of the `karimi` network
  (trained from scratch); torch.compile on for Scratch and one frozen strategy. The step is
  nnUNetTrainer.train_step's (`benchmarking/step_cost.py`): mixed precision, gradient scaler,
  Dice + CE with deep supervision, clipping at 12, SGD with nesterov over what trains;
- that the frozen parts are bit-identical after the steps (and that the rest moved);
- the analysis: PWCCA and linear CKA of 10 networks x 6 layers captured on the GPU against the
  same captured on the CPU (max difference, must be <= 1e-6), and from the same activations
  with the moments accumulated on the GPU against the CPU; the analysis time on the GPU.

It imports neither nnU-Net nor its data pipeline, so it runs on a bare machine with torch,
numpy and scipy plus the wheels `scripts/gpu_wheels.sh` collects (see CONTRIBUTING.md, GPU check):

    bash scripts/gpu_wheels.sh gpu_wheels     # here: the wheels, ~0.3 MB
    pip install --no-deps --no-index gpu_wheels/*.whl   # there, then:
    python scripts/gpu_check.py               # sized for < 4 min on one GPU (not yet run on one)
    python scripts/gpu_check.py --device cpu --smoke    # seconds: the suite's smoke test

Exit status 1 when a check fails (frozen parts moved, a difference above 1e-6, a compile
error), 0 otherwise.
"""

from __future__ import annotations

import argparse
import gc
import os
import pydoc
import statistics
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

# the benchmark code in scripts/benchmarking/, also when run through runpy
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmarking.step_cost import phases_of, time_training_steps  # noqa: E402
from nnunet_transfer.analysis.blocks import Block
from nnunet_transfer.analysis.capture import capture_moments
from nnunet_transfer.analysis.moments import accumulate
from nnunet_transfer.analysis.pwcca import pwcca_from_moments
from nnunet_transfer.analysis.svcca_cka import linear_cka_from_moments
from nnunet_transfer.architectures.registry import architecture_entry
from nnunet_transfer.training.schedule import ResolvedPhase
from nnunet_transfer.training.strategies import (
    ONE_PHASE_STRATEGIES, SCHEDULED_STRATEGIES, SCRATCH, Pretrained, Strategy)

TOLERANCE = 1e-6
UNET_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
REQUIRES_IMPORT = ("conv_op", "norm_op", "dropout_op", "nonlin")   # the plans' _kw_requires_import
CLASSES = 3   # background, anterior, posterior


def hippocampus_arch_kwargs(features: list[int]) -> dict:
    """The arch_kwargs nnU-Net 2.8.1's planner writes for Hippocampus' 3d_fullres."""
    n = len(features)
    return {
        "n_stages": n, "features_per_stage": features,
        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def instantiate(class_name: str, arch_kwargs: dict, requires_import, deep_supervision: bool,
                seed: int):
    """The network a plans entry describes, built and initialised as nnU-Net builds it from
    its plans (dotted names of the ops resolved, the class's own `initialize` applied)."""
    kwargs = {k: (pydoc.locate(v) if k in requires_import and v is not None else v)
              for k, v in arch_kwargs.items()}
    torch.manual_seed(seed)
    network = pydoc.locate(class_name)(input_channels=1, num_classes=CLASSES,
                                       deep_supervision=deep_supervision, **kwargs)
    if hasattr(network, "initialize"):
        network.apply(network.initialize)
    return network


@dataclass(frozen=True)
class Setting:
    device: torch.device
    patch: tuple[int, int, int]
    batch: int
    features: list[int]
    steps: int
    warmup: int
    compile: bool
    networks: int
    blocks: int
    voxels_per_block: int

    def unet(self, seed: int = 0, deep_supervision: bool = True):
        return instantiate(UNET_CLASS, hippocampus_arch_kwargs(self.features), REQUIRES_IMPORT,
                           deep_supervision, seed)

    def karimi(self):
        entry = architecture_entry("karimi", hippocampus_arch_kwargs(self.features), self.patch)
        supervised = getattr(pydoc.locate(entry["network_class_name"]), "has_deep_supervision",
                             True)
        return instantiate(entry["network_class_name"], entry["arch_kwargs"],
                           entry["_kw_requires_import"], supervised, 0)


@dataclass
class Row:
    what: str
    value: str = ""
    step_s: float | None = None
    memory_mib: float | None = None
    check: str = ""
    failed: bool = False


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- training steps ---------------------------------------------------------------------------


def measure_step(setting: Setting, label: str, network, strategy: Strategy,
                 compile: bool = False, phase: ResolvedPhase | None = None) -> Row:
    """Median step time and peak memory of `network` trained under `strategy` (in `phase` of
    its schedule, when given); whether its frozen parameters are bit-identical after the steps
    and the others moved."""
    device = setting.device
    before: dict[str, torch.Tensor] = {}

    def ready():
        before.update({n: p.detach().clone() for n, p in network.named_parameters()})
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    try:
        times = time_training_steps(
            network, strategy.frozen_parts,
            random_init=strategy.pretrained is Pretrained.REFUSED, batch=setting.batch,
            patch=setting.patch, classes=CLASSES, steps=setting.steps, warmup=setting.warmup,
            time_encoder_forward=False, before_steps=ready, device=device, compile=compile,
            phase=phase)
    except Exception as error:   # a compile error is a finding of the check, not its end
        return Row(label, check=f"FAILED: {type(error).__name__}: {str(error)[:120]}",
                   failed=True)
    memory = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda"
              else None)
    frozen = [n for n, p in network.named_parameters() if not p.requires_grad]
    moved = [n for n, p in network.named_parameters()
             if p.requires_grad and not torch.equal(p.detach(), before[n])]
    changed = [n for n in frozen if not torch.equal(network.get_parameter(n).detach(),
                                                     before[n])]
    trainable = len(before) - len(frozen)
    if changed:
        check, failed = f"FAILED: {len(changed)} frozen tensors changed, e.g. {changed[0]}", True
    elif not moved:
        check, failed = "FAILED: no trained tensor moved", True
    else:
        check, failed = (f"{len(frozen)} frozen tensors bit-identical, {len(moved)} of "
                         f"{trainable} trained moved" if frozen else
                         f"nothing frozen; {len(moved)} of {trainable} moved"), False
    return Row(label, step_s=statistics.median(times.steps), memory_mib=memory, check=check,
               failed=failed)


def step_rows(setting: Setting) -> list[Row]:
    compiled = (SCRATCH, next(s for s in ONE_PHASE_STRATEGIES if "encoder" in s.frozen_parts))
    jobs = [(s.name, setting.unet, s, False, None) for s in ONE_PHASE_STRATEGIES]
    # a schedule's phases, each set up as the trainer sets it up (adapters, LR groups)
    jobs += [(f"{s.name}: {phase.name}", setting.unet, s, False, phase)
             for s in SCHEDULED_STRATEGIES for phase in phases_of(s, setting.unet())]
    jobs.append(("karimi network (Scratch)", setting.karimi, SCRATCH, False, None))
    if setting.compile:
        jobs += [(f"{s.name}, torch.compile", setting.unet, s, True, None) for s in compiled]
    rows = []
    for label, build, strategy, compile, phase in jobs:
        rows.append(measure_step(setting, label, build(), strategy, compile, phase))
        # nothing of this row stays allocated into the next one's peak
        if compile:
            torch._dynamo.reset()
        gc.collect()
        if setting.device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"  {label}: {rows[-1].check}", file=sys.stderr, flush=True)
    return rows


# -- the analysis -----------------------------------------------------------------------------


class NoiseBlocks:
    """Input blocks for the capture without a preprocessed dataset: seeded smooth noise of the
    patch size (what `analysis.blocks.BlockSampler` gives the capture: blocks and `read`)."""

    def __init__(self, n: int, patch, seed: int = 0):
        self.patch = tuple(patch)
        self.blocks = tuple(Block(f"noise{i}", tuple((0, p) for p in patch)) for i in range(n))
        self.seed = seed

    def __iter__(self):
        return iter(self.blocks)

    def __len__(self):
        return len(self.blocks)

    def read(self, block: Block) -> np.ndarray:
        from scipy.ndimage import gaussian_filter
        rng = np.random.default_rng([self.seed, self.blocks.index(block)])
        return gaussian_filter(rng.standard_normal((1, *self.patch)), (0, 1, 1, 1)
                               ).astype(np.float32)


def measures(captured) -> dict[tuple, tuple[float, float]]:
    return {(label, a, b): (captured.pwcca(a, b, label), captured.linear_cka(a, b, label))
            for label in captured.labels for a, b in captured.pairs(label)}


def largest_difference(reference: dict, other: dict) -> tuple[float, float]:
    return tuple(max(abs(reference[k][i] - other[k][i]) for k in reference) for i in (0, 1))


def comparison_row(what: str, differences: tuple[float, float], count: int) -> Row:
    failed = max(differences) > TOLERANCE
    return Row(what, f"max |diff| PWCCA {differences[0]:.1e}, CKA {differences[1]:.1e} "
                     f"({count} values)",
               check=("FAILED" if failed else "ok") + f" (<= {TOLERANCE:g})", failed=failed)


def analysis_rows(setting: Setting) -> list[Row]:
    device = setting.device
    networks = {f"net{i}": setting.unet(seed=i, deep_supervision=False)
                for i in range(setting.networks)}
    blocks = NoiseBlocks(setting.blocks, setting.patch)
    options = dict(voxels_per_block=setting.voxels_per_block, batch_size=1)
    # the values are compared, not interpreted: the few-datapoints warnings are beside the point
    warnings.filterwarnings("ignore", category=UserWarning, module=r"nnunet_transfer\.analysis")
    warnings.filterwarnings("ignore", category=UserWarning, module="__main__")
    on_cpu = measures(capture_moments(networks, blocks, device="cpu", **options))
    rows, seconds = [], 0.0
    # torch's default lets cuDNN convolve in TF32 (10-bit mantissa); the CPU is float32 only
    for tf32 in ((True, False) if device.type == "cuda" else (False,)):
        torch.backends.cudnn.allow_tf32 = tf32
        synchronize(device)
        started = time.perf_counter()
        on_device = measures(capture_moments(networks, blocks, device=device, **options))
        synchronize(device)
        seconds = seconds or time.perf_counter() - started   # as the analysis runs: defaults
        how = (", TF32 " + ("on (torch's default)" if tf32 else "off")
               if device.type == "cuda" else "")
        rows.append(comparison_row(f"analysis: capture on {device.type}{how} vs cpu",
                                   largest_difference(on_cpu, on_device), len(on_cpu)))
    torch.backends.cudnn.allow_tf32 = True
    layers = len({k[0] for k in on_cpu})

    # The same activations, moments accumulated on the device and on the CPU: the analysis'
    # own arithmetic, apart from the networks' float32 convolutions.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20_000, 32))
    ys = [np.maximum(x @ rng.standard_normal((32, 48)) * s
                     + rng.standard_normal((20_000, 48)), 0) for s in (0.1, 1.0, 10.0)]
    same = {}
    for k, y in enumerate(ys):
        cpu_acc = accumulate(x, y)
        dev_acc = accumulate(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
        same[k] = [(pwcca_from_moments(a), linear_cka_from_moments(a)) for a in (cpu_acc, dev_acc)]
    rows.append(comparison_row(
        f"analysis: same activations, moments on {device.type} vs cpu",
        largest_difference({k: v[0] for k, v in same.items()}, {k: v[1] for k, v in same.items()}),
        len(same)))
    rows.append(Row(f"analysis time on {device.type}: {setting.networks} networks x {layers} "
                    f"layers", f"{seconds:.1f} s (capture of {setting.blocks} blocks, "
                    f"{setting.voxels_per_block} voxels kept per block, and PWCCA + CKA of all "
                    f"{len(on_cpu)} pairs x layers)"))
    return rows


# -- the table --------------------------------------------------------------------------------


def table(rows: list[Row], setting: Setting) -> str:
    scratch = next((r for r in rows if r.what == SCRATCH.name and r.step_s), None)

    def relative(value, base):
        return f"{value / base:.3f}x" if value is not None and base else ""

    lines = [f"device {setting.device} ({device_name(setting.device)}), torch {torch.__version__}"
             f"; patch {'x'.join(map(str, setting.patch))}, batch {setting.batch}, "
             f"{setting.steps} timed steps after {setting.warmup}",
             "",
             "| check | value | median step (ms) | vs Scratch | peak memory (MiB) | vs Scratch "
             "| result |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        step = f"{1000 * r.step_s:.1f}" if r.step_s is not None else ""
        memory = f"{r.memory_mib:.0f}" if r.memory_mib is not None else ""
        lines.append(f"| {r.what} | {r.value} | {step} | "
                     f"{relative(r.step_s, scratch and scratch.step_s)} | {memory} | "
                     f"{relative(r.memory_mib, scratch and scratch.memory_mib)} | {r.check} |")
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile rows: auto = on a GPU only")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny settings (16^3 patch, batch 2, narrow networks): seconds on "
                             "a CPU, for the test suite")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no GPU here; run it on a GPU machine, or with --device cpu "
              "--smoke for the smoke test", file=sys.stderr)
        return 2
    compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    if args.smoke:
        # one thread: the suite runs beside other tests, and OpenMP threads waiting for a
        # busy core slow a tiny step down many times
        torch.set_num_threads(1)
        setting = Setting(device, (16, 16, 16), 2, [4, 8, 16, 32], min(args.steps, 1),
                          min(args.warmup, 1), compile, 3, 2, 256)
    else:
        setting = Setting(device, (40, 56, 40), 9, [32, 64, 128, 256], args.steps,
                          args.warmup, compile, 10, 16, 2048)
    started = time.perf_counter()
    rows = step_rows(setting) + analysis_rows(setting)
    print(table(rows, setting))
    print(f"\n{time.perf_counter() - started:.0f} s in all; "
          + ("a check FAILED" if any(r.failed for r in rows) else "every check passed"))
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
