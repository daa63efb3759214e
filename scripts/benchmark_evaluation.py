"""Evaluation throughput (cases per second): `evaluate_folder` against a plain reference loop.

Data: the real MSD Hippocampus label volumes (labels 1 anterior, 2 posterior), each evaluated
against itself shifted by one voxel along the first array axis (zero-filled), written as NIfTI
files on the same grid. Labels that have no image next to them (not one of the dataset's
image/label pairs), cannot be read or hold values that are not whole numbers are skipped and
listed.

Methods, each reading the files itself:
  reference   a single-process loop over the cases of `tests/oracles/evaluation_reference`
              (full-volume surfaces and scipy distance transforms, pairwise lesion matching);
  ours x1     `evaluate_folder(workers=1)` (MONAI surface distances, cropped to the foreground),
              CSV / JSON outputs included;
  ours xN     the same with the default process pool (nnUNet_def_n_proc, else the CPU count).
Rounds alternate between the methods so that load from other processes hits all alike; the
medians over rounds are printed with the ratios to the reference. MONAI's one-time import and
the start of the fork server the pool forks from (it imports MONAI too) are timed separately:
a command pays them once, not per case.

Usage: python scripts/benchmark_evaluation.py [--labels DIR] [--rounds 3] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# Allow running from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnunet_transfer.errors import UserError  # noqa: E402
from nnunet_transfer.evaluation.evaluate import (  # noqa: E402
    PER_CASE_FILE,
    default_workers,
    evaluate_folder,
    pool_context,
    read_label_map,
)
from nnunet_transfer.evaluation.labels import LabelSet, Structure  # noqa: E402
from tests.oracles.evaluation_reference import reference_structure_metrics  # noqa: E402

DEFAULT_LABELS = "/work/shared/data/msd_hippocampus/labelsTr"
HIPPOCAMPUS = LabelSet((Structure("anterior", (1,)), Structure("posterior", (2,))))
COMPARED = ("dsc", "iou", "hd95_mm", "assd_mm", "lesion_f1")


def prepare(labels_folder: str, workdir: str) -> tuple[str, str, list[str]]:
    """Reference and shifted prediction folders under workdir; returns them and skip notes."""
    images_folder = os.path.join(os.path.dirname(labels_folder.rstrip(os.sep)), "imagesTr")
    references, predictions = os.path.join(workdir, "ref"), os.path.join(workdir, "pred")
    os.makedirs(references)
    os.makedirs(predictions)
    skipped = []
    for name in sorted(os.listdir(labels_folder)):
        if not name.endswith(".nii.gz"):
            continue
        case = name[: -len(".nii.gz")]
        if os.path.isdir(images_folder) and not os.path.exists(
                os.path.join(images_folder, f"{case}_0000.nii.gz")) and not os.path.exists(
                os.path.join(images_folder, name)):
            skipped.append(f"{name}: no image in {images_folder}")
            continue
        path = os.path.join(labels_folder, name)
        try:
            array, image = read_label_map(path, case, "label")
        except UserError as error:
            skipped.append(f"{name}: {error}")
            continue
        shifted = np.zeros_like(array, dtype=np.uint8)
        shifted[1:] = array[:-1]
        prediction = sitk.GetImageFromArray(shifted)
        prediction.CopyInformation(image)
        sitk.WriteImage(prediction, os.path.join(predictions, name))
        os.symlink(os.path.abspath(path), os.path.join(references, name))
    return references, predictions, skipped


def reference_loop(references: str, predictions: str) -> list[dict]:
    """The plain loop: read both files, then the reference computations per label."""
    rows = []
    for name in sorted(os.listdir(references)):
        reference_image = sitk.ReadImage(os.path.join(references, name))
        reference = sitk.GetArrayFromImage(reference_image)
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(predictions, name)))
        spacing = tuple(reversed(reference_image.GetSpacing()))
        for structure in HIPPOCAMPUS.structures:
            value = structure.values[0]
            rows.append({"case": name[: -len(".nii.gz")], "structure": structure.name,
                         **reference_structure_metrics(reference == value,
                                                       prediction == value, spacing)})
    return rows


def largest_difference(ours_csv: str, reference_rows: list[dict]) -> float:
    import pandas as pd
    ours = pd.read_csv(ours_csv).set_index(["case", "structure"])
    theirs = pd.DataFrame(reference_rows).set_index(["case", "structure"]).loc[ours.index]
    difference = (ours[list(COMPARED)] - theirs[list(COMPARED)].astype(float)).abs()
    both_nan = ours[list(COMPARED)].isna() & theirs[list(COMPARED)].astype(float).isna()
    return float(difference.where(~both_nan, 0.0).max().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default=DEFAULT_LABELS, help="folder of label volumes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None,
                        help="processes of the pooled run (default: nnUNet_def_n_proc / CPUs)")
    args = parser.parse_args()
    workers = args.workers or default_workers()

    start = time.perf_counter()
    import monai.metrics.utils  # noqa: F401
    import_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with pool_context().Pool(1) as pool:   # the fork server imports MONAI once, too
        pool.map(abs, [0])
    server_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as workdir:
        references, predictions, skipped = prepare(args.labels, workdir)
        n_cases = len(os.listdir(references))
        print(f"{n_cases} cases from {args.labels}; skipped {len(skipped)}:")
        for note in skipped:
            print(f"  {note}")
        print(f"one-time costs, not timed below: MONAI import {import_seconds:.1f} s, fork "
              f"server start {server_seconds:.1f} s; pooled run: {workers} workers on "
              f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at start)\n")

        methods = {
            "reference loop": lambda: reference_loop(references, predictions),
            "ours, 1 process": lambda: evaluate_folder(
                predictions, references, os.path.join(workdir, "out1"), HIPPOCAMPUS,
                workers=1),
            f"ours, {workers} processes": lambda: evaluate_folder(
                predictions, references, os.path.join(workdir, "outN"), HIPPOCAMPUS,
                workers=workers),
        }
        seconds: dict[str, list[float]] = {name: [] for name in methods}
        reference_rows = None
        for round_index in range(args.rounds):
            for name, method in methods.items():
                start = time.perf_counter()
                result = method()
                seconds[name].append(time.perf_counter() - start)
                if name == "reference loop":
                    reference_rows = result
            print(f"round {round_index + 1}: " + ", ".join(
                f"{name} {times[-1]:.2f} s" for name, times in seconds.items()))

        difference = largest_difference(os.path.join(workdir, "outN", PER_CASE_FILE),
                                        reference_rows)
        print(f"\nlargest |ours - reference| over {n_cases} cases x 2 labels x "
              f"{', '.join(COMPARED)}: {difference:.2e}\n")
        reference_median = statistics.median(seconds["reference loop"])
        print(f"{'method':<22} {'median s':>9} {'cases/s':>9} {'vs reference':>13}")
        for name, times in seconds.items():
            median = statistics.median(times)
            print(f"{name:<22} {median:>9.2f} {n_cases / median:>9.1f} "
                  f"{reference_median / median:>12.2f}x")


if __name__ == "__main__":
    main()
