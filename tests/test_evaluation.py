"""Tests of nnunet_transfer.evaluation: metrics, folder evaluation, comparison tables, commands.

Expected values are computed by hand (boxes with known overlap, distances from the geometry of
axis-aligned boxes), by MONAI's own reductions, by the independent implementation in
`tests/oracles/evaluation_reference` (zero-padded neighbour test + scipy distance transform), or
by scipy.stats directly; never by the code under test. Arrays are (z, y, x), spacing (z, y, x) in mm, except
where SimpleITK takes (x, y, z).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage, stats

from nnunet_transfer.errors import UserError
from nnunet_transfer.evaluation import generalize as generalize_module
from nnunet_transfer.evaluation.commands import register
from nnunet_transfer.evaluation.evaluate import (
    PER_CASE_FILE,
    SUMMARY_CSV,
    SUMMARY_JSON,
    evaluate_folder,
    pool_context,
)
from nnunet_transfer.evaluation.labels import (
    LabelSet,
    Structure,
    labels_from_dataset_json,
    labels_from_items,
)
from nnunet_transfer.evaluation.metrics import (
    BOTH_EMPTY,
    PREDICTION_EMPTY,
    REFERENCE_EMPTY,
    LesionRule,
    case_metrics,
    lesion_detection,
    structure_metrics,
)
from oracles.evaluation_reference import reference_structure_metrics
from nnunet_transfer.evaluation.stats import (
    collect_runs,
    comparison_table,
    paired_p_values,
    parse_run_item,
    p_text,
    to_markdown,
)
from nnunet_transfer.training.run_folder import RunId

TWO_LABELS = LabelSet((Structure("one", (1,)), Structure("two", (2,))))


@pytest.fixture(scope="module", autouse=True)
def heavy_imports_once():
    """MONAI imports all of itself (torch and torchvision included): seconds, paid once here by
    this process and by the fork server the process pools start from, not in a test's time."""
    import monai.metrics.utils  # noqa: F401

    with pool_context().Pool(1) as pool:   # waits until the fork server has its imports
        pool.map(abs, [0])


def box(shape, *ranges) -> np.ndarray:
    """Boolean array with True in the box given by (start, stop) per axis."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in ranges)] = True
    return mask


def blobs(seed: int, shape=(24, 30, 28), level=0.1) -> np.ndarray:
    """Smooth random foreground, several components, some touching the image border."""
    noise = np.random.default_rng(seed).standard_normal(shape)
    return ndimage.gaussian_filter(noise, 2.0) > level


# --- overlap --------------------------------------------------------------------------------

def test_dsc_and_iou_of_shifted_cubes():
    reference = box((20, 20, 20), (2, 12), (2, 12), (2, 12))     # 1000 voxels
    prediction = box((20, 20, 20), (2, 12), (2, 12), (4, 14))    # shifted 2: 800 shared
    result = structure_metrics(reference, prediction, (1.0, 1.0, 1.0))
    assert result.dsc == pytest.approx(0.8)                     # 1600 / 2000
    assert result.iou == pytest.approx(800 / 1200)
    assert (result.reference_voxels, result.prediction_voxels) == (1000, 1000)


# --- surface distances ----------------------------------------------------------------------

def concentric_boxes_expected(spacing):
    """HD95 and ASSD of the box [7, 23)^3 (prediction) inside the box [5, 25)^3 (reference).

    Surfaces of boxes are their shells. From a point inside the reference box, the nearest
    reference-shell voxel lies straight towards the nearest face: min over axes of spacing x
    the number of voxels to that face. From a shell voxel outside the prediction box, the nearest
    prediction-shell voxel is the clamp of the point onto the box: the distance has one term
    per axis, spacing x how far the coordinate lies outside [7, 22].
    """
    s = np.asarray(spacing, dtype=float)

    def shell(lo, hi):
        grid = np.stack(np.meshgrid(*[np.arange(lo, hi)] * 3, indexing="ij"), -1).reshape(-1, 3)
        return grid[((grid == lo) | (grid == hi - 1)).any(axis=1)]

    prediction_shell, reference_shell = shell(7, 23), shell(5, 25)
    to_reference = (s * np.minimum(prediction_shell - 5, 24 - prediction_shell)).min(axis=1)
    outside = np.maximum(7 - reference_shell, 0) + np.maximum(reference_shell - 22, 0)
    to_prediction = np.sqrt(((s * outside) ** 2).sum(axis=1))
    hd95 = max(np.percentile(to_reference, 95), np.percentile(to_prediction, 95))
    assd = (to_reference.sum() + to_prediction.sum()) / (to_reference.size + to_prediction.size)
    return hd95, assd


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 1.0, 1.0), (0.5, 2.0, 1.25)])
def test_distances_of_concentric_boxes_match_geometry(spacing):
    reference = box((30, 30, 30), (5, 25), (5, 25), (5, 25))
    prediction = box((30, 30, 30), (7, 23), (7, 23), (7, 23))
    result = structure_metrics(reference, prediction, spacing)
    hd95, assd = concentric_boxes_expected(spacing)
    assert result.hd95_mm == pytest.approx(hd95, rel=1e-5)
    assert result.assd_mm == pytest.approx(assd, rel=1e-5)


def test_isotropic_box_distances_are_two_voxels_in_mm():
    """Every prediction-shell voxel is 2 voxels from the reference shell: 2 mm, or 6 mm at 3 mm."""
    reference = box((30, 30, 30), (5, 25), (5, 25), (5, 25))
    prediction = box((30, 30, 30), (7, 23), (7, 23), (7, 23))
    one = structure_metrics(reference, prediction, (1.0, 1.0, 1.0))
    three = structure_metrics(reference, prediction, (3.0, 3.0, 3.0))
    assert three.hd95_mm == pytest.approx(3 * one.hd95_mm, rel=1e-6)
    assert three.assd_mm == pytest.approx(3 * one.assd_mm, rel=1e-6)


@pytest.mark.parametrize(("offset", "expected_mm"), [
    ((1, 0, 0), 3.0), ((0, 1, 0), 0.5), ((0, 0, 1), 2.0), ((1, 1, 0), math.sqrt(9 + 0.25)),
    ((2, 0, 3), math.sqrt(36 + 36))])
def test_anisotropic_spacing_gives_distances_in_mm(offset, expected_mm):
    """Two single voxels: each is its own surface, so HD95 = ASSD = their distance in mm."""
    reference = np.zeros((8, 8, 8), dtype=bool)
    prediction = np.zeros_like(reference)
    reference[2, 2, 2] = True
    prediction[2 + offset[0], 2 + offset[1], 2 + offset[2]] = True
    result = structure_metrics(reference, prediction, (3.0, 0.5, 2.0))
    assert result.hd95_mm == pytest.approx(expected_mm, rel=1e-6)
    assert result.assd_mm == pytest.approx(expected_mm, rel=1e-6)


def test_concentric_spheres_are_their_radius_difference_apart():
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"))
    radius = np.sqrt(((grid - 19.5) ** 2).sum(axis=0)) * 2.0       # mm at 2 mm voxels
    result = structure_metrics(radius <= 30.0, radius <= 22.0, (2.0, 2.0, 2.0))
    assert result.assd_mm == pytest.approx(8.0, abs=1.5)
    assert result.hd95_mm == pytest.approx(8.0, abs=2.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distances_match_monai_reductions_and_second_implementation(seed):
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    reference, prediction = blobs(seed), blobs(seed + 100)
    spacing = (2.5, 0.8, 1.1)
    ours = structure_metrics(reference, prediction, spacing)

    def one_hot(mask):
        return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_hd = compute_hausdorff_distance(one_hot(prediction), one_hot(reference),
                                              percentile=95, spacing=spacing).item()
        monai_assd = compute_average_surface_distance(one_hot(prediction), one_hot(reference),
                                                      symmetric=True, spacing=spacing).item()
    second = reference_structure_metrics(reference, prediction, spacing)
    assert ours.hd95_mm == pytest.approx(monai_hd, rel=1e-5)
    assert ours.assd_mm == pytest.approx(monai_assd, rel=1e-5)
    for key in ("dsc", "iou", "hd95_mm", "assd_mm"):
        assert getattr(ours, key) == pytest.approx(second[key], rel=1e-5)


def test_cropping_to_the_foreground_changes_nothing():
    """case_metrics crops to the joint foreground; the uncropped reference must agree."""
    reference = np.zeros((30, 36, 32), dtype=np.uint8)
    prediction = np.zeros_like(reference)
    reference[blobs(5, (30, 36, 32), 0.4)] = 1
    prediction[blobs(6, (30, 36, 32), 0.4)] = 1
    reference[0:3, 0:4, 0:4] = 2        # label 2 at the image corner: border is surface
    prediction[0:4, 0:3, 0:4] = 2
    spacing = (1.5, 0.7, 0.9)
    for structure, ours in case_metrics(reference, prediction, spacing, TWO_LABELS.structures):
        value = structure.values[0]
        second = reference_structure_metrics(reference == value, prediction == value, spacing)
        for key in ("dsc", "iou", "hd95_mm", "assd_mm", "lesion_f1"):
            assert ours.as_row()[key] == pytest.approx(second[key], rel=1e-5), (structure, key)


def test_monai_surface_path_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        structure_metrics(blobs(3), blobs(4), (1.0, 1.0, 1.0))


# --- empty masks ----------------------------------------------------------------------------

def test_empty_mask_conventions():
    empty = np.zeros((10, 10, 10), dtype=bool)
    cube = box((10, 10, 10), (2, 5), (2, 5), (2, 5))
    both = structure_metrics(empty, empty, (1.0, 1.0, 1.0))
    assert (both.dsc, both.iou, both.hd95_mm, both.assd_mm) == (1.0, 1.0, 0.0, 0.0)
    assert both.surface_status == BOTH_EMPTY
    assert (both.lesions.tp, both.lesions.fp, both.lesions.fn, both.lesions.f1) == (0, 0, 0, 1.0)

    missed = structure_metrics(cube, empty, (1.0, 1.0, 1.0))
    assert (missed.dsc, missed.iou, missed.surface_status) == (0.0, 0.0, PREDICTION_EMPTY)
    assert math.isnan(missed.hd95_mm) and math.isnan(missed.assd_mm)
    assert (missed.lesions.fn, missed.lesions.f1) == (1, 0.0)

    invented = structure_metrics(empty, cube, (1.0, 1.0, 1.0))
    assert (invented.dsc, invented.surface_status) == (0.0, REFERENCE_EMPTY)
    assert math.isnan(invented.hd95_mm)
    assert (invented.lesions.fp, invented.lesions.f1) == (1, 0.0)


# --- lesions --------------------------------------------------------------------------------

def lesion_scene():
    """Three reference lesions; predicted: a good hit on 1, a 1-voxel touch of 2, a false one."""
    shape = (30, 30, 30)
    reference = (box(shape, (2, 7), (2, 7), (2, 7)) | box(shape, (12, 17), (12, 17), (12, 17))
                 | box(shape, (22, 26), (2, 6), (22, 26)))
    prediction = (box(shape, (2, 7), (2, 7), (3, 8))              # IoU 100 / 150 with lesion 1
                  | box(shape, (16, 19), (16, 19), (16, 19))      # touches lesion 2 in 1 voxel
                  | box(shape, (2, 5), (24, 27), (24, 27)))       # nowhere near a lesion
    return reference, prediction


@pytest.mark.parametrize(("rule", "counts"), [
    ("any", (2, 1, 1)),       # TP, FP, FN
    ("iou:0.5", (1, 2, 2)),   # the 1-voxel touch (IoU 1/151) no longer counts, on either side
    ("dsc:0.8", (1, 2, 2)),   # lesion 1: DSC 200/250 = 0.8 >= 0.8
    ("dsc:0.81", (0, 3, 3)),
])
def test_lesion_counts_and_f1_under_each_rule(rule, counts):
    reference, prediction = lesion_scene()
    result = lesion_detection(reference, prediction, LesionRule.parse(rule))
    tp, fp, fn = counts
    assert (result.reference_lesions, result.predicted_lesions) == (3, 3)
    assert (result.tp, result.fp, result.fn) == counts
    assert result.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    kind, _, threshold = rule.partition(":")
    second = reference_structure_metrics(reference, prediction, (1.0, 1.0, 1.0), kind,
                                         float(threshold or 0))
    assert (second["lesion_tp"], second["lesion_fp"], second["lesion_fn"]) == counts


def test_one_prediction_covering_two_lesions_detects_both():
    shape = (20, 20, 20)
    reference = box(shape, (2, 5), (2, 5), (2, 5)) | box(shape, (2, 5), (2, 5), (8, 11))
    prediction = box(shape, (2, 5), (2, 5), (2, 11))
    result = lesion_detection(reference, prediction, LesionRule())
    assert (result.tp, result.fp, result.fn, result.f1) == (2, 0, 0, 1.0)


def test_lesion_connectivity_decides_what_is_one_lesion():
    shape = (10, 10, 10)
    corner_touching = box(shape, (1, 3), (1, 3), (1, 3)) | box(shape, (3, 5), (3, 5), (3, 5))
    assert lesion_detection(corner_touching, corner_touching, LesionRule(),
                            26).reference_lesions == 1
    assert lesion_detection(corner_touching, corner_touching, LesionRule(),
                            6).reference_lesions == 2


@pytest.mark.parametrize("text", ["iou", "any:0.5", "dsc:0", "iou:1.5", "overlap", "dsc:x"])
def test_bad_lesion_rule_is_refused(text):
    with pytest.raises(UserError, match="give 'any', 'iou:T' or 'dsc:T'"):
        LesionRule.parse(text)


# --- labels, regions, ignore ----------------------------------------------------------------

def test_regions_and_ignore_label():
    reference = np.zeros((12, 12, 12), dtype=np.uint8)
    prediction = np.zeros_like(reference)
    reference[2:6, 2:6, 2:6] = 1
    reference[6:8, 2:6, 2:6] = 2           # the union 1|2 is a 6x4x4 box
    reference[9:11, 2:6, 2:6] = 3          # ignore label
    prediction[2:8, 2:6, 2:6] = 1          # all as label 1: region exact, label 1 not
    prediction[9:11, 2:6, 2:6] = 1         # inside the ignored area: not counted
    structures = (Structure("one", (1,)), Structure("whole", (1, 2)))
    results = dict(case_metrics(reference, prediction, (1.0, 1.0, 1.0), structures,
                                ignore_label=3))
    whole, one = results[structures[1]], results[structures[0]]
    assert (whole.dsc, whole.hd95_mm, whole.prediction_voxels) == (1.0, 0.0, 96)
    assert one.dsc == pytest.approx(2 * 64 / (64 + 96))


def test_labels_from_dataset_json_with_regions(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3],
                                           "enhancing": 3, "ignore": 4},
                                "regions_class_order": [1, 2, 3], "file_ending": ".nrrd"}))
    labels = labels_from_dataset_json(str(path))
    assert [(s.name, s.values) for s in labels.structures] == [
        ("whole", (1, 2, 3)), ("core", (2, 3)), ("enhancing", (3,))]
    assert (labels.ignore_label, labels.file_ending) == (4, ".nrrd")
    assert [(s.name, s.values) for s in labels_from_items(["1", "b=2", "u=1,2"]).structures] == [
        ("1", (1,)), ("b", (2,)), ("u", (1, 2))]
    with pytest.raises(UserError, match="--label-values 'x=a'"):
        labels_from_items(["x=a"])
    with pytest.raises(UserError, match="given twice"):
        labels_from_items(["a=1", "a=2"])


# --- folders of real files ------------------------------------------------------------------

SPACING_XYZ = (0.5, 0.5, 2.0)


def write_label(path, array, spacing=SPACING_XYZ, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sitk.WriteImage(image, str(path))


def scene_label_maps():
    """{case: (reference, prediction)} uint8 label maps (z, y, x) with two labels."""
    shape = (16, 16, 16)
    reference = np.zeros(shape, np.uint8)
    reference[box(shape, (2, 7), (2, 7), (2, 7))] = 1           # 125 voxels
    reference[box(shape, (10, 14), (10, 14), (10, 14))] = 2
    shifted = np.zeros(shape, np.uint8)
    shifted[box(shape, (2, 7), (2, 7), (3, 8))] = 1             # 100 shared: DSC 0.8
    shifted[reference == 2] = 2
    no_two = np.where(reference == 2, 0, reference).astype(np.uint8)
    return {"case_a": (reference, shifted), "case_b": (reference, no_two)}


@pytest.fixture
def folders(tmp_path):
    refs, preds = tmp_path / "labelsTs", tmp_path / "predictions"
    for case, (reference, prediction) in scene_label_maps().items():
        write_label(refs / f"{case}.nii.gz", reference)
        write_label(preds / f"{case}.nii.gz", prediction)
    (preds / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "one": 1, "two": 2}, "file_ending": ".nii.gz"}))
    (preds / "plans.json").write_text("{}")
    return refs, preds


def test_folder_evaluation_on_nifti_files(folders, tmp_path):
    refs, preds = folders
    labels = labels_from_dataset_json(str(preds / "dataset.json"))
    evaluation = evaluate_folder(str(preds), str(refs), str(tmp_path / "out"), labels, workers=2)
    per_case = pd.read_csv(tmp_path / "out" / PER_CASE_FILE)
    assert len(per_case) == 4
    row = per_case[(per_case["case"] == "case_a") & (per_case["structure"] == "one")].iloc[0]
    assert row["dsc"] == pytest.approx(0.8) and row["iou"] == pytest.approx(2 / 3)
    reference, prediction = scene_label_maps()["case_a"]
    second = reference_structure_metrics(reference == 1, prediction == 1, SPACING_XYZ[::-1])
    assert row["hd95_mm"] == pytest.approx(second["hd95_mm"], rel=1e-5)
    assert row["assd_mm"] == pytest.approx(second["assd_mm"], rel=1e-5)
    assert second["hd95_mm"] == pytest.approx(0.5)     # shifted one voxel along x (0.5 mm)

    summary = pd.read_csv(tmp_path / "out" / SUMMARY_CSV).set_index(["structure", "metric"])
    assert summary.loc[("one", "dsc"), "mean"] == pytest.approx(0.9)
    assert summary.loc[("one", "dsc"), "std"] == pytest.approx(np.std([0.8, 1.0], ddof=1))
    hd_two = summary.loc[("two", "hd95_mm")]
    assert (hd_two["n_used"], hd_two["n_excluded"], hd_two["excluded_cases"]) == (1, 1, "case_b")
    assert summary.loc[("two", "dsc"), "mean"] == pytest.approx(0.5)

    with open(tmp_path / "out" / SUMMARY_JSON) as f:
        text = f.read()
    info = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    two = info["structures"]["two"]
    assert two["metrics"]["hd95_mm"]["excluded_cases"] == ["case_b"]
    assert two["surface_status_counts"]["prediction_empty"] == 1
    assert two["lesions_pooled"] == {"tp": 1, "fp": 0, "fn": 1, "f1": pytest.approx(2 / 3)}
    assert evaluation.per_case.shape == per_case.shape


def test_one_worker_and_two_workers_agree(folders, tmp_path):
    refs, preds = folders
    one = evaluate_folder(str(preds), str(refs), str(tmp_path / "a"), TWO_LABELS, workers=1)
    two = evaluate_folder(str(preds), str(refs), str(tmp_path / "b"), TWO_LABELS, workers=2)
    pd.testing.assert_frame_equal(one.per_case, two.per_case)


def test_missing_prediction_is_named_or_scored_empty(folders, tmp_path):
    refs, preds = folders
    write_label(refs / "case_c.nii.gz", scene_label_maps()["case_a"][0])
    with pytest.raises(UserError, match=r"1 of 3 reference cases have no prediction .*case_c.*"
                                        r"--missing-as-empty"):
        evaluate_folder(str(preds), str(refs), str(tmp_path / "out"), TWO_LABELS, workers=1)
    assert not (tmp_path / "out").exists()
    evaluation = evaluate_folder(str(preds), str(refs), str(tmp_path / "out"), TWO_LABELS,
                                 workers=1, missing_as_empty=True)
    rows = evaluation.per_case[evaluation.per_case["case"] == "case_c"]
    assert list(rows["dsc"]) == [0.0, 0.0] and rows["prediction_missing"].all()
    assert evaluation.summary_json["missing_predictions_scored_empty"] == ["case_c"]


@pytest.mark.parametrize(("change", "field"), [
    ({"spacing": (0.5, 0.5, 2.5)}, "spacing"),
    ({"origin": (0.0, 3.0, 0.0)}, "origin"),
])
def test_prediction_on_another_grid_is_refused_with_the_case(folders, tmp_path, change, field):
    refs, preds = folders
    write_label(preds / "case_b.nii.gz", scene_label_maps()["case_b"][1], **change)
    with pytest.raises(UserError, match=f"case case_b: the prediction .* differ in {field}"):
        evaluate_folder(str(preds), str(refs), str(tmp_path / "out"), TWO_LABELS, workers=2)


def test_other_shape_and_bad_files_are_refused(folders, tmp_path):
    refs, preds = folders
    write_label(preds / "case_a.nii.gz", np.zeros((16, 16, 15), np.uint8))
    with pytest.raises(UserError, match="case case_a: .* differ in shape"):
        evaluate_folder(str(preds), str(refs), str(tmp_path / "o1"), TWO_LABELS, workers=1)
    write_label(preds / "case_a.nii.gz", np.full((16, 16, 16), 0.5, np.float32))
    with pytest.raises(UserError, match="case case_a: the prediction .* not whole numbers"):
        evaluate_folder(str(preds), str(refs), str(tmp_path / "o2"), TWO_LABELS, workers=1)
    (preds / "case_a.nii.gz").write_bytes(b"not an image")
    with pytest.raises(UserError, match="case case_a: cannot read the prediction"):
        evaluate_folder(str(preds), str(refs), str(tmp_path / "o3"), TWO_LABELS, workers=1)


def test_float_stored_whole_labels_are_accepted(folders, tmp_path):
    refs, preds = folders
    write_label(preds / "case_a.nii.gz", scene_label_maps()["case_a"][1].astype(np.float32))
    evaluation = evaluate_folder(str(preds), str(refs), str(tmp_path / "o"), TWO_LABELS,
                                 workers=1)
    assert evaluation.per_case["dsc"].iloc[0] == pytest.approx(0.8)


# --- statistics -----------------------------------------------------------------------------

def per_case_table(values: dict[str, list[float]], metric="dsc") -> pd.DataFrame:
    """A per-case table with one structure and the given values per case list."""
    cases = [f"c{i}" for i in range(len(next(iter(values.values()))))]
    return pd.DataFrame({"case": cases, "structure": "one", metric: values[metric]})


def test_paired_p_values_are_scipy_s():
    a = np.array([0.81, 0.74, 0.90, 0.66, 0.72, 0.85, 0.79])
    b = np.array([0.78, 0.70, 0.91, 0.60, 0.65, 0.80, 0.71])
    t_p, w_p = paired_p_values(a, b)
    assert t_p == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    assert w_p == pytest.approx(stats.wilcoxon(a - b).pvalue, rel=1e-12)
    assert paired_p_values(a, a.copy()) == (1.0, 1.0)          # identical: no crash, p = 1
    assert all(math.isnan(p) for p in paired_p_values(a[:1], b[:1]))


def test_comparison_table_means_seeds_and_asterisks(tmp_path):
    scratch = [0.70, 0.60, 0.80, 0.50, 0.65, 0.72]
    tuned_seed0 = [0.80, 0.70, 0.86, 0.62, 0.74, 0.80]
    tuned_seed1 = [0.82, 0.74, 0.90, 0.60, 0.76, 0.84]
    same = list(scratch)
    runs = []
    for label, values in (("Scratch", scratch), ("FineTune:5:0", tuned_seed0),
                          ("FineTune:5:1", tuned_seed1), ("Frozen:5", same)):
        folder = tmp_path / label.replace(":", "_")
        folder.mkdir()
        per_case_table({"dsc": values}).to_csv(folder / PER_CASE_FILE, index=False)
        runs.append(parse_run_item(f"{label}={folder}"))
    table = comparison_table(collect_runs(runs), reference="Scratch", metrics=("dsc",))
    rows = table.set_index("strategy")

    tuned = (np.array(tuned_seed0) + np.array(tuned_seed1)) / 2
    ft = rows.loc["FineTune"]
    assert ft["mean"] == pytest.approx(tuned.mean())
    assert ft["std"] == pytest.approx(tuned.std(ddof=1))
    assert ft["seed_std"] == pytest.approx(np.std([np.mean(tuned_seed0), np.mean(tuned_seed1)],
                                                  ddof=1))
    assert (ft["n"], ft["n_seeds"], ft["n_pairs"]) == (5, 2, 6)
    assert ft["p_ttest"] == pytest.approx(stats.ttest_rel(tuned, scratch).pvalue)
    assert ft["p_wilcoxon"] == pytest.approx(stats.wilcoxon(tuned - np.array(scratch)).pvalue)
    assert ft["significant"] and ft["p_ttest"] < 0.05
    frozen = rows.loc["Frozen"]
    assert (frozen["p_ttest"], frozen["p_wilcoxon"], frozen["significant"]) == (1.0, 1.0, False)
    assert math.isnan(rows.loc["Scratch", "p_ttest"])

    markdown = to_markdown(table, "Scratch")
    # the compact layout: a row per strategy, a column per n (Scratch was given without n)
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in markdown.split("p vs Scratch")[0].splitlines()
             if line.startswith("| ") and "strategy" not in line}
    assert lines["FineTune"] == ["-", f"{tuned.mean():.3f} ± {tuned.std(ddof=1):.3f}*"]
    assert lines["Frozen"] == ["-", f"{np.mean(same):.3f} ± {np.std(same, ddof=1):.3f}"]
    assert lines["Scratch"][0] == f"{np.mean(scratch):.3f} ± {np.std(scratch, ddof=1):.3f}"
    assert "| strategy   |   DSC |    n = 5 |" in markdown
    p_line = [line for line in markdown.split("p vs Scratch")[1].splitlines()
              if line.startswith("| FineTune")][0]
    assert p_line.split("|")[3].strip() == p_text(ft["p_ttest"])
    assert "* p < 0.05 vs Scratch" in markdown


def test_comparison_leaves_undefined_values_out_and_says_so():
    runs = pd.concat([
        per_case_table({"hd95_mm": [1.0, 2.0, np.nan, 4.0]}, "hd95_mm").assign(
            strategy="A", n=None, seed=None),
        per_case_table({"hd95_mm": [2.0, 2.5, 3.0, 5.5]}, "hd95_mm").assign(
            strategy="B", n=None, seed=None)])
    table = comparison_table(runs, reference="B").set_index("strategy")
    a = table.loc["A"]
    assert (a["mean"], a["n_cases"], a["n_excluded"], a["n_pairs"]) == (
        pytest.approx(7 / 3), 3, 1, 3)
    assert a["p_ttest"] == pytest.approx(stats.ttest_rel([1, 2, 4], [2, 2.5, 5.5]).pvalue)
    markdown = to_markdown(table.reset_index(), "B")
    assert "Left out (undefined: an empty mask), values over cases x seeds: A one: 1" in markdown


@pytest.mark.parametrize("text", ["", "A:x", "A::3", "A B", ":5"])
def test_bad_run_labels_are_refused(text):
    with pytest.raises(UserError, match="run label"):
        parse_run_item(f"{text}=somewhere")


def test_run_spec_names():
    spec, path = parse_run_item("FineTune:5:2=a=b")
    assert (spec, path, spec.folder_name) == (RunId("FineTune", 5, 2), "a=b",
                                              "FineTune_n5_seed2")


# --- commands -------------------------------------------------------------------------------

def run_command(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nnunet-transfer")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_evaluate_and_compare_commands(folders, tmp_path, capsys):
    refs, preds = folders
    run_command(["evaluate", str(preds), str(refs), "-o", str(tmp_path / "e1"),
                 "--lesion-rule", "iou:0.5", "--workers", "1"])
    out = capsys.readouterr().out
    assert "one" in out and "1 of 2 cases left out" in out
    info = json.loads((tmp_path / "e1" / SUMMARY_JSON).read_text())
    assert (info["lesion_rule"], info["labels_from"]) == ("iou:0.5", str(preds / "dataset.json"))

    run_command(["evaluate", str(preds), str(refs), "-o", str(tmp_path / "e2"),
                 "--label-values", "whole=1,2"])
    per_case = pd.read_csv(tmp_path / "e2" / PER_CASE_FILE)
    assert list(per_case["structure"].unique()) == ["whole"]

    run_command(["compare", f"A={tmp_path / 'e1'}", f"B={tmp_path / 'e1' / PER_CASE_FILE}",
                 "-o", str(tmp_path / "cmp"), "--reference", "A", "--metrics", "dsc"])
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert set(table["p_ttest"].dropna()) == {1.0}      # the same results: p = 1, no crash
    compact = (tmp_path / "cmp" / "comparison.md").read_text()   # a table per structure
    assert "### one" in compact and "| strategy   |   DSC |" in compact


def test_command_line_mistakes_give_messages(folders, tmp_path, capsys):
    refs, preds = folders
    with pytest.raises(SystemExit) as exit_info:
        run_command(["evaluate", str(preds), str(refs), "-o", str(tmp_path), "--lesion-rule",
                     "iou:2"])
    assert exit_info.value.code == 2
    assert "give 'any', 'iou:T' or 'dsc:T'" in capsys.readouterr().err
    with pytest.raises(UserError, match="lesion connectivity 8: give 6, 18 or 26"):
        run_command(["evaluate", str(preds), str(refs), "-o", str(tmp_path / "x"),
                     "--lesion-connectivity", "8"])
    with pytest.raises(UserError, match="test 'anova': give one of ttest, wilcoxon"):
        run_command(["compare", f"A={tmp_path}", "-o", str(tmp_path / "c"), "--test", "anova"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "c").exists()
    os.remove(preds / "dataset.json")
    with pytest.raises(UserError, match="no dataset.json .* give --dataset-json or the labels"):
        run_command(["evaluate", str(preds), str(refs), "-o", str(tmp_path / "x")])
    with pytest.raises(UserError, match="reference folder .* does not exist"):
        # --labels: the old spelling of --label-values, still accepted
        run_command(["evaluate", str(preds), str(tmp_path / "nowhere"), "-o", str(tmp_path),
                     "--labels", "1"])
    with pytest.raises(UserError, match="cannot read the per-case results"):
        run_command(["compare", f"A={tmp_path / 'nothing'}", "-o", str(tmp_path / "c")])


# --- generalisation -------------------------------------------------------------------------

def fake_model_folder(root, dataset_json_text, folds=("0",)):
    os.makedirs(root)
    (root / "dataset.json").write_text(dataset_json_text)
    (root / "plans.json").write_text("{}")
    for fold in folds:
        os.makedirs(root / f"fold_{fold}")
        (root / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"")
    return root


def test_generalize_predicts_evaluates_and_compares(folders, tmp_path, monkeypatch):
    """nnU-Net's predictor replaced by a copy of known predictions; the rest runs for real."""
    refs, preds = folders
    dataset_json = (preds / "dataset.json").read_text()
    model_a = fake_model_folder(tmp_path / "results" / "A__p__3d", dataset_json)
    model_b = fake_model_folder(tmp_path / "results" / "B__p__3d", dataset_json, ("0", "3"))
    commands = []

    def fake_prediction(model, command):
        commands.append(command)
        out = command[command.index("-o") + 1]
        shutil.copytree(preds if model.spec.strategy == "A" else refs, out, dirs_exist_ok=True)

    monkeypatch.setattr(generalize_module, "run_prediction", fake_prediction)
    (tmp_path / "imagesTs").mkdir()
    run_command(["generalize", "--models", f"A={model_a}", f"B:5:1={model_b / 'fold_3'}",
                 "-i", str(tmp_path / "imagesTs"), "--references", str(refs),
                 "-o", str(tmp_path / "gen"), "--reference", "B", "-device", "cpu",
                 "--workers", "1"])
    assert commands[1][commands[1].index("-f") + 1] == "3"
    assert commands[0][commands[0].index("-device") + 1] == "cpu"
    table = pd.read_csv(tmp_path / "gen" / "comparison.csv")
    b_dsc = table[(table["strategy"] == "B") & (table["metric"] == "dsc")]
    assert list(b_dsc["mean"]) == [1.0, 1.0]         # B predicted the references themselves
    assert (tmp_path / "gen" / "B_n5_seed1" / "evaluation" / PER_CASE_FILE).is_file()


def test_generalize_refuses_unclear_models(tmp_path):
    spec = RunId("A")
    with pytest.raises(UserError, match="is not a trained nnU-Net model folder"):
        generalize_module.resolve_model(spec, str(tmp_path), None, "checkpoint_final.pth")
    folder = fake_model_folder(tmp_path / "m", "{}", ("0", "1"))
    with pytest.raises(UserError, match=r"has 2 folds .* \(0, 1\); choose with -f"):
        generalize_module.resolve_model(spec, str(folder), None, "checkpoint_final.pth")
    with pytest.raises(UserError, match="no checkpoint_best.pth in fold"):
        generalize_module.resolve_model(spec, str(folder), ["0"], "checkpoint_best.pth")
    assert generalize_module.resolve_model(spec, str(folder), ["1"],
                                           "checkpoint_final.pth").folds == ("1",)
