"""Streaming PWCCA (second moments) against the one-shot reference algorithm, on CPU.

Both methods see the same in-memory float32 activations shaped (voxels, channels), generated
before any timing; the streaming one walks over them in chunk views. Timing runs alternate
between the two methods so that load from other processes hits both alike; peak memory is
measured in a separate run with tracemalloc (numpy reports its buffers to it), counting only
allocations made by the method, not the input arrays.

Usage: python scripts/benchmark_pwcca.py [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Allow running from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnunet_transfer.analysis import pwcca  # noqa: E402
from tests.oracles.svcca_reference import reference_pwcca  # noqa: E402

# (channels per layer, voxels)
CASES = [(64, 100_000), (64, 1_000_000), (256, 200_000)]


def make_layers(channels: int, voxels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two post-ReLU layers, (voxels, channels) float32, the second a noisy map of the first."""
    rng = np.random.default_rng(seed)
    pre = rng.standard_normal((voxels, channels), dtype=np.float32)
    weights = rng.standard_normal((channels, channels), dtype=np.float32) / np.sqrt(channels)
    second = pre @ weights
    second += 0.5 * rng.standard_normal((voxels, channels), dtype=np.float32)
    np.maximum(second, 0.0, out=second)
    np.maximum(pre, 0.0, out=pre)
    return pre, second


def peak_megabytes(function: Callable[[], float]) -> float:
    tracemalloc.start()
    try:
        function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def run_case(channels: int, voxels: int, repeats: int, seed: int) -> dict[str, float]:
    x, y = make_layers(channels, voxels, seed)
    methods = {"reference": lambda: reference_pwcca(x, y), "streaming": lambda: pwcca(x, y)}
    times: dict[str, list[float]] = {name: [] for name in methods}
    values: dict[str, float] = {}
    for _ in range(repeats):
        for name, method in methods.items():
            start = time.perf_counter()
            values[name] = method()
            times[name].append(time.perf_counter() - start)
    row = {
        "channels": channels,
        "voxels": voxels,
        "input_mb": (x.nbytes + y.nbytes) / 2**20,
        "value": values["streaming"],
        "difference": abs(values["streaming"] - values["reference"]),
    }
    for name, method in methods.items():
        row[f"{name}_s"] = statistics.median(times[name])
        row[f"{name}_mb"] = peak_megabytes(method)
    row["speedup"] = row["reference_s"] / row["streaming_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and case")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"numpy {np.__version__}, {os.cpu_count()} CPUs, float32 input, median of "
        f"{args.repeats} runs; peak = tracemalloc peak of the method's own allocations\n"
    )
    print(
        "| channels | voxels | input MB | reference s | streaming s | speed-up | PWCCA "
        "| abs. difference | reference peak MB | streaming peak MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for channels, voxels in CASES:
        row = run_case(channels, voxels, args.repeats, args.seed)
        print(
            f"| {channels} | {voxels:.0e} | {row['input_mb']:.0f} | {row['reference_s']:.2f} "
            f"| {row['streaming_s']:.2f} | {row['speedup']:.1f}x | {row['value']:.10f} "
            f"| {row['difference']:.1e} | {row['reference_mb']:.0f} | {row['streaming_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
