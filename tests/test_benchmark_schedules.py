"""scripts/benchmark_schedules.py runs end to end at tiny settings and reports every phase, with
LoRA's trainable parameters as its rank implies."""

from __future__ import annotations

import math
import os
import subprocess
import sys

from torch import nn

from nnunet_transfer.architectures import partition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "benchmark_schedules.py")


def table_rows(output: str) -> dict[tuple[str, str], list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in output.splitlines() if line.startswith("| ") and "---" not in line]
    return {(r[0], r[1]): r for r in rows[1:]}


def test_benchmark_reports_each_phase_and_loras_parameter_count():
    out = subprocess.run(
        [sys.executable, SCRIPT, "--strategies", "FineTune", "LoRA", "--rounds", "1", "--steps",
         "1", "--warmup", "0", "--features", "4", "--patch", "16", "16", "16", "--threads", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [ROOT, os.environ.get("PYTHONPATH", "")])})
    assert out.returncode == 0, out.stderr
    rows = table_rows(out.stdout)
    assert set(rows) == {("Scratch", "train"), ("FineTune", "train"), ("LoRA", "train")}
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from benchmark_strategies import build_network
    network = build_network(4)
    parts = partition(network)
    convs = {id(m): m for part in ("encoder", "decoder") for root in parts.modules[part]
             for m in root.modules() if isinstance(m, nn.modules.conv._ConvNd)}.values()
    rank = 4  # the LoRA strategy's default
    expected = sum(rank * (c.weight.shape[0] + math.prod(c.weight.shape[1:])) for c in convs)
    expected += sum(p.numel() for p in parts.parameters("head"))
    assert int(rows[("LoRA", "train")][3].replace(",", "")) == expected
    assert rows[("FineTune", "train")][3] == rows[("Scratch", "train")][3]
    assert "LoRA / FineTune: step" in out.stdout
