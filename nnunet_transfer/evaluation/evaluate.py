"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Files are paired by case identifier, nnU-Net style: `<case><file ending>` in both folders
(`liver_001.nii.gz`), any format SimpleITK reads. Cases run in parallel in a process pool. The
output folder gets, each written atomically:

    evaluation_per_case.csv   one row per case and structure (columns: see `metrics`)
    evaluation_summary.csv    one row per structure and metric: mean, std (ddof 1), median,
                              min, max over the cases, how many cases were used and left out
    evaluation_summary.json   the same plus the settings, the empty-mask counts, the pooled
                              lesion counts, and which cases were left out of which mean

(prefixed file names, so that writing into an nnU-Net folder never replaces its summary.json).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import SimpleITK as sitk

from nnunet_transfer.errors import UserError
from nnunet_transfer.evaluation.labels import LabelSet
from nnunet_transfer.evaluation.metrics import (
    ANY_OVERLAP,
    BOTH_EMPTY,
    PREDICTION_EMPTY,
    REFERENCE_EMPTY,
    SURFACE_OK,
    LesionRule,
    case_metrics,
    check_connectivity,
)
from nnunet_transfer.atomic_files import atomic_write_bytes, atomic_write_json

# Endings SimpleITK reads (longest first, so that `.nii.gz` wins over `.gz`-less `.nii`).
IMAGE_ENDINGS = (".nii.gz", ".gipl.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gipl")
SUMMARY_METRICS = ("dsc", "iou", "hd95_mm", "assd_mm", "lesion_f1")
PER_CASE_FILE = "evaluation_per_case.csv"
SUMMARY_CSV = "evaluation_summary.csv"
SUMMARY_JSON = "evaluation_summary.json"
# Geometry tolerances: mm for spacing and origin, unitless for direction cosines.
SPACING_TOLERANCE_MM = 1e-4
ORIGIN_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-5


@dataclass(frozen=True)
class EvaluationSettings:
    labels: LabelSet
    lesion_rule: LesionRule = ANY_OVERLAP
    connectivity: int = 26


@dataclass(frozen=True)
class CaseTask:
    case: str
    reference_path: str
    prediction_path: str | None     # None: missing, scored as an empty prediction
    settings: EvaluationSettings


@dataclass(frozen=True)
class Evaluation:
    per_case: pd.DataFrame
    summary: pd.DataFrame
    summary_json: dict
    output_folder: str


def list_cases(folder: str, role: str, file_ending: str | None = None) -> dict[str, str]:
    """{case identifier: path} of the label files in `folder` (only `file_ending` if given)."""
    if not os.path.isdir(folder):
        raise UserError(f"{role} folder {folder} does not exist; give the folder of the "
                        f"{role} label files")
    endings = (file_ending,) if file_ending else IMAGE_ENDINGS
    cases: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        ending = next((e for e in endings if name.endswith(e)), None)
        path = os.path.join(folder, name)
        if ending is None or name.startswith(".") or not os.path.isfile(path):
            continue
        case = name[: -len(ending)]
        if case in cases:
            raise UserError(f"case {case} has two {role} files in {folder} "
                            f"({os.path.basename(cases[case])} and {name}); keep one")
        cases[case] = path
    return cases


def _geometry(image: sitk.Image) -> dict:
    return {"shape": image.GetSize(), "spacing": image.GetSpacing(), "origin": image.GetOrigin(),
            "direction": image.GetDirection()}


def read_label_map(path: str, case: str, role: str) -> tuple[np.ndarray, sitk.Image]:
    """(label map (z, y, x) of whole numbers, the image for its geometry) of one file."""
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as error:
        reason = (str(error).strip().splitlines() or ["unreadable"])[-1]   # ITK's last line
        raise UserError(f"case {case}: cannot read the {role} {path} ({reason}); replace or "
                        "remove it") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(f"case {case}: the {role} {path} has "
                        f"{image.GetNumberOfComponentsPerPixel()} components per voxel; a label "
                        "map has one")
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise UserError(f"case {case}: the {role} {path} holds values that are not whole "
                            "numbers; a label map holds label values (convert it to integers)")
        array = array.astype(np.int32)
    elif array.dtype.kind not in "iub":
        raise UserError(f"case {case}: the {role} {path} has voxel type {array.dtype}; "
                        "a label map holds whole numbers")
    return array, image


def check_same_grid(case: str, reference: sitk.Image, prediction: sitk.Image,
                    reference_path: str, prediction_path: str) -> None:
    """UserError naming the case unless both images share shape, spacing, origin, direction."""
    ref, pred = _geometry(reference), _geometry(prediction)
    tolerances = {"spacing": SPACING_TOLERANCE_MM, "origin": ORIGIN_TOLERANCE_MM,
                  "direction": DIRECTION_TOLERANCE}
    for field in ("shape", "spacing", "origin", "direction"):
        if len(ref[field]) != len(pred[field]):
            same = False
        elif field == "shape":
            same = ref[field] == pred[field]
        else:
            same = np.allclose(ref[field], pred[field], rtol=0, atol=tolerances[field])
        if not same:
            def shown(value):
                return tuple(round(v, 4) for v in value)
            raise UserError(
                f"case {case}: the prediction {prediction_path} and the reference "
                f"{reference_path} differ in {field} ({shown(pred[field])} vs "
                f"{shown(ref[field])}); a prediction must lie on its reference's voxel grid "
                "(predict from the matching image, or resample it onto the reference)")


def evaluate_case(task: CaseTask) -> list[dict]:
    """Rows (one per structure) of one case. Top-level so that a process pool can pickle it."""
    reference, reference_image = read_label_map(task.reference_path, task.case, "reference")
    if task.prediction_path is None:
        prediction = np.zeros_like(reference)
    else:
        prediction, prediction_image = read_label_map(task.prediction_path, task.case,
                                                      "prediction")
        check_same_grid(task.case, reference_image, prediction_image, task.reference_path,
                        task.prediction_path)
    spacing = tuple(reversed(reference_image.GetSpacing()))   # (x, y, z) -> (z, y, x), mm
    settings = task.settings
    results = case_metrics(reference, prediction, spacing, settings.labels.structures,
                           ignore_label=settings.labels.ignore_label, rule=settings.lesion_rule,
                           connectivity=settings.connectivity)
    return [{"case": task.case, "structure": structure.name,
             "values": ",".join(map(str, structure.values)),
             "prediction_missing": task.prediction_path is None, **metrics.as_row()}
            for structure, metrics in results]


def default_workers() -> int:
    """nnU-Net's nnUNet_def_n_proc if set, else the number of CPUs."""
    text = os.environ.get("nnUNet_def_n_proc")
    if text is None:
        return os.cpu_count() or 1
    try:
        workers = int(text)
    except ValueError:
        workers = 0
    if workers < 1:
        raise UserError(f"nnUNet_def_n_proc={text!r} is not a positive whole number; fix or "
                        "unset it, or give --workers")
    return workers


def pool_context() -> multiprocessing.context.BaseContext:
    # A fork server: workers are forked from a clean single-threaded process that has imported
    # MONAI once (seconds), not from this process, which may hold threads (ITK's, torch's).
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, "monai.metrics.utils"])
        return context
    return multiprocessing.get_context("spawn")


def run_cases(tasks: list[CaseTask], workers: int) -> list[list[dict]]:
    """evaluate_case over the tasks, in order, on `workers` processes (1: in this process)."""
    workers = max(1, min(workers, len(tasks)))
    if workers == 1:
        return [evaluate_case(task) for task in tasks]
    chunksize = max(1, len(tasks) // (workers * 8))
    with pool_context().Pool(workers) as pool:
        return list(pool.imap(evaluate_case, tasks, chunksize=chunksize))


def pair_cases(prediction_folder: str, reference_folder: str, file_ending: str | None,
               missing_as_empty: bool) -> tuple[dict[str, tuple[str, str | None]], list[str]]:
    """({case: (reference path, prediction path or None)}, predictions without a reference)."""
    references = list_cases(reference_folder, "reference", file_ending)
    if not references:
        endings = file_ending or " / ".join(IMAGE_ENDINGS)
        raise UserError(f"no reference label files ({endings}) in {reference_folder}; give the "
                        "folder that holds them (e.g. labelsTs), or their ending with "
                        "--file-ending")
    predictions = list_cases(prediction_folder, "prediction", file_ending)
    missing = sorted(set(references) - set(predictions))
    if missing and not missing_as_empty:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise UserError(f"{len(missing)} of {len(references)} reference cases have no prediction "
                        f"in {prediction_folder}: {shown}. Predict them, or pass "
                        "--missing-as-empty to score them as empty predictions")
    extra = sorted(set(predictions) - set(references))
    return {case: (path, predictions.get(case)) for case, path in references.items()}, extra


def _finite_or_none(value):
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def summarise(per_case: pd.DataFrame, structure_names: list[str]) -> pd.DataFrame:
    """One row per structure and metric: mean, std (ddof 1), median, min, max over the cases
    with a defined value; n_used, n_excluded and the excluded cases (undefined distances)."""
    rows = []
    for name in structure_names:
        of_structure = per_case[per_case["structure"] == name]
        for metric in SUMMARY_METRICS:
            values = of_structure[metric]
            used = values.dropna()
            excluded = of_structure.loc[values.isna(), "case"]
            rows.append({"structure": name, "metric": metric, "mean": used.mean(),
                         "std": used.std(ddof=1), "median": used.median(), "min": used.min(),
                         "max": used.max(), "n_cases": len(values), "n_used": len(used),
                         "n_excluded": len(excluded), "excluded_cases": ";".join(excluded)})
    return pd.DataFrame(rows)


def _summary_json(per_case: pd.DataFrame, summary: pd.DataFrame, labels: LabelSet,
                  settings: EvaluationSettings, context: dict) -> dict:
    structures = {}
    for structure in labels.structures:
        of_structure = per_case[per_case["structure"] == structure.name]
        tp, fp, fn = (int(of_structure[f"lesion_{k}"].sum()) for k in ("tp", "fp", "fn"))
        metrics = {row["metric"]: {k: _finite_or_none(row[k]) for k in
                                   ("mean", "std", "median", "min", "max", "n_used",
                                    "n_excluded")}
                   | {"excluded_cases": [c for c in row["excluded_cases"].split(";") if c]}
                   for _, row in summary[summary["structure"] == structure.name].iterrows()}
        structures[structure.name] = {
            "values": list(structure.values),
            "metrics": metrics,
            "surface_status_counts": {status: int((of_structure["surface_status"] == status).sum())
                                      for status in (SURFACE_OK, BOTH_EMPTY, REFERENCE_EMPTY,
                                                     PREDICTION_EMPTY)},
            "lesions_pooled": {"tp": tp, "fp": fp, "fn": fn,
                               "f1": 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)},
        }
    return {
        **context,
        "labels_from": labels.source,
        "ignore_label": labels.ignore_label,
        "lesion_rule": str(settings.lesion_rule),
        "lesion_connectivity": settings.connectivity,
        "conventions": {
            "hd95_mm": "max of the two directed 95th percentiles of surface distances (MONAI)",
            "assd_mm": "mean of the union of both directed surface-distance sets (MONAI)",
            "both_empty": "DSC = IoU = lesion F1 = 1, HD95 = ASSD = 0",
            "one_empty": "DSC = IoU = lesion F1 = 0, HD95 and ASSD undefined: left out of the "
                         "means, counted in n_excluded",
            "std": "sample standard deviation (ddof 1) over the cases used",
        },
        "structures": structures,
    }


def write_outputs(output_folder: str, per_case: pd.DataFrame, summary: pd.DataFrame,
                  summary_json: dict) -> None:
    atomic_write_bytes(os.path.join(output_folder, PER_CASE_FILE),
                       per_case.to_csv(index=False).encode())
    atomic_write_bytes(os.path.join(output_folder, SUMMARY_CSV),
                       summary.to_csv(index=False).encode())
    atomic_write_json(os.path.join(output_folder, SUMMARY_JSON), summary_json)


def evaluate_folder(prediction_folder: str, reference_folder: str, output_folder: str,
                    labels: LabelSet, *, lesion_rule: LesionRule = ANY_OVERLAP,
                    connectivity: int = 26, workers: int | None = None,
                    missing_as_empty: bool = False, file_ending: str | None = None
                    ) -> Evaluation:
    """Score every reference case against its prediction and write the three output files."""
    check_connectivity(connectivity)
    settings = EvaluationSettings(labels, lesion_rule, connectivity)
    pairs, extra = pair_cases(prediction_folder, reference_folder,
                              file_ending or labels.file_ending, missing_as_empty)
    tasks = [CaseTask(case, reference, prediction, settings)
             for case, (reference, prediction) in pairs.items()]
    rows = [row for case_rows in run_cases(tasks, workers or default_workers())
            for row in case_rows]
    per_case = pd.DataFrame(rows)
    names = [s.name for s in labels.structures]
    summary = summarise(per_case, names)
    context = {
        "prediction_folder": os.path.abspath(prediction_folder),
        "reference_folder": os.path.abspath(reference_folder),
        "n_cases": len(tasks),
        "missing_predictions_scored_empty": sorted(c for c, (_, p) in pairs.items() if p is None),
        "predictions_without_reference_ignored": extra,
    }
    summary_json = _summary_json(per_case, summary, labels, settings, context)
    write_outputs(output_folder, per_case, summary, summary_json)
    return Evaluation(per_case, summary, summary_json, output_folder)


def format_summary(evaluation: Evaluation) -> str:
    """A few lines for the terminal: mean +- std per structure and metric, exclusions said."""
    lines = []
    for _, row in evaluation.summary.iterrows():
        left_out = f"  ({row['n_excluded']} of {row['n_cases']} cases left out: undefined)" \
            if row["n_excluded"] else ""
        lines.append(f"{row['structure']:<20} {row['metric']:<10} {row['mean']:.4f} +- "
                     f"{row['std']:.4f}  n={row['n_used']}{left_out}")
    info = evaluation.summary_json
    if info["missing_predictions_scored_empty"]:
        lines.append(f"{len(info['missing_predictions_scored_empty'])} missing predictions "
                     "scored as empty")
    if info["predictions_without_reference_ignored"]:
        lines.append(f"{len(info['predictions_without_reference_ignored'])} predictions without "
                     "a reference ignored")
    lines.append(f"wrote {os.path.join(evaluation.output_folder, PER_CASE_FILE)}, "
                 f"{SUMMARY_CSV}, {SUMMARY_JSON}")
    return "\n".join(lines)
