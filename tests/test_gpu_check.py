"""scripts/gpu_check.py runs on CPU at tiny settings, without any of the packages the bare GPU
machine lacks, and its table has a row for every strategy, the karimi network and the analysis."""

import os
import subprocess
import sys

from nnunet_transfer.training.strategies import ONE_PHASE_STRATEGIES, SCHEDULED_STRATEGIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not on the GPU machine and not carried there (dynamic_network_architectures is, without its
# dependencies einops and timm).
ABSENT = ("nnunetv2", "batchgenerators", "batchgeneratorsv2", "SimpleITK", "nibabel", "monai",
          "acvl_utils", "blosc2", "einops", "timm")

RUN_WITHOUT = f"""
import runpy, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on the GPU machine)")
sys.meta_path.insert(0, Absent())
sys.argv = ["gpu_check.py", "--device", "cpu", "--smoke"]
runpy.run_path({os.path.join(ROOT, "scripts", "gpu_check.py")!r}, run_name="__main__")
"""


def test_gpu_check_smoke_on_cpu_without_nnunet():
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| check")}
    for strategy in ONE_PHASE_STRATEGIES:
        assert strategy.name in rows, result.stdout
        row = rows[strategy.name]
        assert ("bit-identical" in row) == bool(strategy.frozen_parts), row
    for strategy in SCHEDULED_STRATEGIES:   # a row per phase, each set up as the trainer does
        phases = [name for name in rows if name.startswith(f"{strategy.name}: ")]
        assert phases, result.stdout
        assert all("FAILED" not in rows[name] for name in phases), result.stdout
    assert "bit-identical" in rows["LoRA: train"], result.stdout   # the base under adapters
    assert rows["Scratch"].count("1.000x") == 1   # CPU: no GPU memory column
    assert "karimi network (Scratch)" in rows
    comparisons = [line for name, line in rows.items() if name.startswith("analysis: ")
                   and "vs cpu" in name]
    assert len(comparisons) == 2 and all("ok (<= 1e-06)" in line for line in comparisons)
    assert any(name.startswith("analysis time on cpu: 3 networks x 6 layers") for name in rows)
    assert "every check passed" in result.stdout
