"""Segmentation metrics of one case: DSC, IoU, HD95, ASSD (mm) and lesion-wise detection F1.

Arrays are label maps or boolean masks shaped (z, y, x) as SimpleITK's GetArrayFromImage gives
them; `spacing` is the voxel size in mm in the same (z, y, x) order, i.e. the reverse of
SimpleITK's GetSpacing().

Definitions (R = reference mask, P = predicted mask of one structure):

- DSC = 2 |R & P| / (|R| + |P|); IoU (Jaccard) = |R & P| / |R | P|.
- Surfaces and distances are MONAI's (`monai.metrics.utils.get_mask_edges` and
  `get_surface_distance`): the surface of a mask is its voxels with a face-neighbour (6-
  connectivity) outside the mask, outside the image counting as outside; the distance of a
  surface voxel is the Euclidean distance in mm from its centre to the nearest surface-voxel centre
  of the other mask. d(P->R) and d(R->P) are the two directed sets.
- HD95 = max(95th percentile of d(P->R), 95th percentile of d(R->P)), percentiles with linear
  interpolation: MONAI's `compute_hausdorff_distance(percentile=95)`.
- ASSD = mean of the union of both sets = (sum d(P->R) + sum d(R->P)) / (|dP| + |dR|): MONAI's
  `compute_average_surface_distance(symmetric=True)`.
- Lesion-wise detection: connected components (scipy.ndimage.label, 26-connectivity unless
  given) of R are the reference lesions, those of P the predicted lesions. A pair matches under
  the `LesionRule` ("any" overlap, or IoU / DSC of the two components >= a threshold). A reference
  lesion matched by some predicted lesion is a true positive (TP), else a false negative (FN); a
  predicted lesion that matches no reference lesion is a false positive (FP).
  F1 = 2 TP / (2 TP + FP + FN). (One predicted lesion covering two reference lesions gives 2 TP.)

Empty masks (status column `surface_status`):

- both empty ("both_empty"): DSC = IoU = 1, HD95 = ASSD = 0, lesion F1 = 1 (TP = FP = FN = 0);
- one empty ("reference_empty" / "prediction_empty"): DSC = IoU = 0, lesion F1 = 0, HD95 and
  ASSD are NaN (undefined): summaries leave them out and say how many cases they left out.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from nnunet_transfer.errors import UserError
from nnunet_transfer.evaluation.labels import Structure

SURFACE_OK, BOTH_EMPTY, REFERENCE_EMPTY, PREDICTION_EMPTY = (
    "ok", "both_empty", "reference_empty", "prediction_empty")
CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}   # neighbours -> rank of scipy's binary structure
HD_PERCENTILE = 95.0


@dataclass(frozen=True)
class LesionRule:
    """When a predicted lesion detects a reference one: any overlap, or IoU / DSC >= threshold."""
    kind: str = "any"         # "any", "iou" or "dsc"
    threshold: float = 0.0    # in (0, 1] for "iou" and "dsc"

    def __str__(self) -> str:
        return self.kind if self.kind == "any" else f"{self.kind}:{self.threshold:g}"

    @classmethod
    def parse(cls, text: str) -> LesionRule:
        """`any`, `iou:T` or `dsc:T` with 0 < T <= 1."""
        match = re.fullmatch(r"\s*(any|iou|dsc)\s*(?::\s*([0-9.eE+-]+))?\s*", text.lower())
        try:
            threshold = float(match.group(2)) if match and match.group(2) else None
        except ValueError:
            threshold = -1.0
        if match is None or (match.group(1) == "any") != (threshold is None) \
                or (threshold is not None and not 0 < threshold <= 1):
            raise UserError(f"lesion rule {text!r}: give 'any', 'iou:T' or 'dsc:T' with "
                            "0 < T <= 1 (e.g. iou:0.1)")
        return cls(match.group(1), threshold or 0.0)


ANY_OVERLAP = LesionRule()


@dataclass(frozen=True)
class LesionCounts:
    reference_lesions: int
    predicted_lesions: int
    tp: int       # reference lesions detected
    fp: int       # predicted lesions that detect no reference lesion
    fn: int       # reference lesions not detected
    f1: float     # 2 TP / (2 TP + FP + FN); 1 when there are no lesions at all


@dataclass(frozen=True)
class StructureMetrics:
    dsc: float
    iou: float
    hd95_mm: float           # NaN unless surface_status is "ok" or "both_empty"
    assd_mm: float
    surface_status: str
    reference_voxels: int
    prediction_voxels: int
    lesions: LesionCounts

    def as_row(self) -> dict:
        """Flat columns for a per-case table (lesion fields prefixed with `lesion_`)."""
        row = {k: v for k, v in asdict(self).items() if k != "lesions"}
        row.update({f"lesion_{k}": v for k, v in asdict(self.lesions).items()})
        return row


def overlap_scores(reference: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    """(DSC, IoU) of two boolean masks of equal shape; (1, 1) when both are empty."""
    intersection = np.count_nonzero(reference & prediction)
    total = np.count_nonzero(reference) + np.count_nonzero(prediction)
    if total == 0:
        return 1.0, 1.0
    return float(2 * intersection / total), float(intersection / (total - intersection))


def surface_distances(reference: np.ndarray, prediction: np.ndarray,
                      spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm, (d(P->R), d(R->P)): one value per surface voxel of P,
    then of R. Both masks must be non-empty. MONAI's surface and distance functions."""
    from monai.metrics.utils import get_mask_edges, get_surface_distance  # heavy import: lazy

    # crop=False: MONAI's own crop goes through its transform machinery (tens of ms per call);
    # callers crop to the foreground instead (`case_metrics`), which gives the same surfaces.
    edges_prediction, edges_reference = get_mask_edges(prediction, reference, crop=False)
    spacing = tuple(float(s) for s in spacing)
    return (np.asarray(get_surface_distance(edges_prediction, edges_reference, "euclidean",
                                            spacing), dtype=np.float64),
            np.asarray(get_surface_distance(edges_reference, edges_prediction, "euclidean",
                                            spacing), dtype=np.float64))


def hd95_and_assd(prediction_to_reference: np.ndarray,
                  reference_to_prediction: np.ndarray) -> tuple[float, float]:
    """HD95 and ASSD (mm) from the two directed distance sets, as MONAI reduces them."""
    hd95 = max(float(np.percentile(prediction_to_reference, HD_PERCENTILE)),
               float(np.percentile(reference_to_prediction, HD_PERCENTILE)))
    assd = float(np.concatenate([prediction_to_reference, reference_to_prediction]).mean())
    return hd95, assd


def check_connectivity(connectivity: int) -> None:
    if connectivity not in CONNECTIVITY_RANK:
        raise UserError(f"lesion connectivity {connectivity}: give 6, 18 or 26")


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    structure = ndimage.generate_binary_structure(mask.ndim, CONNECTIVITY_RANK[connectivity])
    return ndimage.label(mask, structure=structure)


def lesion_detection(reference: np.ndarray, prediction: np.ndarray, rule: LesionRule,
                     connectivity: int = 26) -> LesionCounts:
    """Lesion-wise detection counts and F1 of two boolean masks (see the module docstring)."""
    check_connectivity(connectivity)
    reference_ids, n_reference = _components(reference, connectivity)
    prediction_ids, n_prediction = _components(prediction, connectivity)
    # No library scores component pairs, so: the overlap of every (reference, predicted)
    # component pair in one bincount over the voxels both masks share, sizes likewise.
    both = (reference_ids > 0) & (prediction_ids > 0)
    pair_index = reference_ids[both].astype(np.int64) * (n_prediction + 1) + prediction_ids[both]
    overlap = np.bincount(pair_index, minlength=(n_reference + 1) * (n_prediction + 1)
                          ).reshape(n_reference + 1, n_prediction + 1)[1:, 1:]
    reference_size = np.bincount(reference_ids.ravel(), minlength=n_reference + 1)[1:, None]
    prediction_size = np.bincount(prediction_ids.ravel(), minlength=n_prediction + 1)[None, 1:]
    # Scores by division, as a user computes them: IoU 3/30 is >= 0.1 (0.1 * 30 is not <= 3).
    if rule.kind == "any":
        matches = overlap > 0
    elif rule.kind == "iou":
        matches = (overlap > 0) & (overlap / (reference_size + prediction_size - overlap)
                                   >= rule.threshold)
    else:  # dsc
        matches = (overlap > 0) & (2 * overlap / (reference_size + prediction_size)
                                   >= rule.threshold)
    tp = int(np.count_nonzero(matches.any(axis=1)))
    fp = int(np.count_nonzero(~matches.any(axis=0)))
    fn = n_reference - tp
    f1 = 1.0 if tp + fp + fn == 0 else 2.0 * tp / (2 * tp + fp + fn)
    return LesionCounts(n_reference, n_prediction, tp, fp, fn, f1)


def structure_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, ...],
                      rule: LesionRule = ANY_OVERLAP, connectivity: int = 26
                      ) -> StructureMetrics:
    """All metrics of one structure: two boolean masks (z, y, x), spacing in mm (z, y, x)."""
    dsc, iou = overlap_scores(reference, prediction)
    n_reference, n_prediction = int(np.count_nonzero(reference)), int(np.count_nonzero(prediction))
    if n_reference and n_prediction:
        hd95, assd = hd95_and_assd(*surface_distances(reference, prediction, spacing))
        status = SURFACE_OK
    elif n_reference or n_prediction:
        hd95 = assd = float("nan")
        status = PREDICTION_EMPTY if n_reference else REFERENCE_EMPTY
    else:
        hd95 = assd = 0.0
        status = BOTH_EMPTY
    return StructureMetrics(dsc, iou, hd95, assd, status, n_reference, n_prediction,
                            lesion_detection(reference, prediction, rule, connectivity))


def foreground_box(*label_maps: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every non-zero voxel of the (equally shaped) maps; None if none."""
    union = np.zeros(label_maps[0].shape, dtype=np.uint8)
    for label_map in label_maps:
        union |= label_map != 0
    boxes = ndimage.find_objects(union)
    return boxes[0] if boxes else None


def case_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, ...],
                 structures: tuple[Structure, ...], *, ignore_label: int | None = None,
                 rule: LesionRule = ANY_OVERLAP, connectivity: int = 26
                 ) -> list[tuple[Structure, StructureMetrics]]:
    """Metrics of every structure of one case: label maps (z, y, x), spacing in mm (z, y, x).

    Voxels whose reference is `ignore_label` (nnU-Net's ignore label) count as background in
    both maps. Both maps are cropped to their joint foreground first: no metric depends on the
    background outside it (surfaces treat the image border like background anyway).
    """
    if ignore_label is not None:
        ignored = reference == ignore_label
        if ignored.any():
            reference = np.where(ignored, 0, reference)
            prediction = np.where(ignored, 0, prediction)
    box = foreground_box(reference, prediction)
    if box is not None:
        reference, prediction = reference[box], prediction[box]
    results = []
    for structure in structures:
        masks = [label_map == structure.values[0] if not structure.is_region
                 else np.isin(label_map, structure.values) for label_map in (reference, prediction)]
        results.append((structure, structure_metrics(*masks, spacing, rule, connectivity)))
    return results
