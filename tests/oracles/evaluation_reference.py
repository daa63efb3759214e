"""A second, independent implementation of the metrics, written plainly for checking.

For the tests and the benchmark's "plain reference loop" only: full-volume computations, no
cropping, no MONAI. Surfaces are found by comparing each voxel with its six face-neighbours on a
zero-padded copy; distances come from scipy's exact Euclidean distance transform of the other
surface (voxel centres, spacing in mm); lesions are matched pair by pair in Python loops.
Conventions are those of `nnunet_transfer.evaluation.metrics` (see its docstring); arrays and
spacing are (z, y, x).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def reference_surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of `mask` with at least one face-neighbour outside it (outside the image counts)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    all_neighbours_inside = np.ones_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            all_neighbours_inside &= np.roll(padded, step, axis=axis)[inner]
    return mask & ~all_neighbours_inside


def reference_directed_distances(source: np.ndarray, target: np.ndarray,
                                 spacing: tuple[float, ...]) -> np.ndarray:
    """Distance (mm) of every surface voxel of `source` to the nearest surface voxel of `target`."""
    distance_to_target = ndimage.distance_transform_edt(~reference_surface(target),
                                                        sampling=spacing)
    return distance_to_target[reference_surface(source)]


def reference_structure_metrics(reference: np.ndarray, prediction: np.ndarray,
                                spacing: tuple[float, ...], rule_kind: str = "any",
                                threshold: float = 0.0, connectivity: int = 26) -> dict:
    """DSC, IoU, HD95, ASSD, lesion TP/FP/FN/F1 of two boolean masks, step by step."""
    r, p = reference.astype(bool), prediction.astype(bool)
    size_r, size_p = int(r.sum()), int(p.sum())
    both = int((r & p).sum())
    either = int((r | p).sum())
    result = {"dsc": 1.0 if size_r + size_p == 0 else 2 * both / (size_r + size_p),
              "iou": 1.0 if either == 0 else both / either}
    if size_r and size_p:
        forward = reference_directed_distances(p, r, spacing)
        backward = reference_directed_distances(r, p, spacing)
        result["hd95_mm"] = max(np.percentile(forward, 95), np.percentile(backward, 95))
        result["assd_mm"] = (forward.sum() + backward.sum()) / (forward.size + backward.size)
    elif size_r or size_p:
        result["hd95_mm"] = result["assd_mm"] = float("nan")
    else:
        result["hd95_mm"] = result["assd_mm"] = 0.0

    rank = {6: 1, 18: 2, 26: 3}[connectivity]
    structure = ndimage.generate_binary_structure(r.ndim, rank)
    lesions_r, n_r = ndimage.label(r, structure)
    lesions_p, n_p = ndimage.label(p, structure)
    detected = set()
    matched_predictions = set()
    for i in range(1, n_r + 1):
        lesion_r = lesions_r == i
        for j in range(1, n_p + 1):
            lesion_p = lesions_p == j
            overlap = int((lesion_r & lesion_p).sum())
            if overlap == 0:
                continue
            sizes = int(lesion_r.sum()) + int(lesion_p.sum())
            score = {"any": 1.0, "iou": overlap / (sizes - overlap), "dsc": 2 * overlap / sizes}
            if rule_kind == "any" or score[rule_kind] >= threshold:
                detected.add(i)
                matched_predictions.add(j)
    tp, fp, fn = len(detected), n_p - len(matched_predictions), n_r - len(detected)
    result.update(lesion_tp=tp, lesion_fp=fp, lesion_fn=fn,
                  lesion_f1=1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return result
