"""Do two volumes share a voxel grid? Size, spacing, origin and direction of an image and its label.

One tolerance covers spacing, origin and direction together: the largest distance, in voxels,
between the places where the two volumes put the same voxel index. Because the index-to-world
map is affine, that distance is largest at a corner of the grid, so the 8 corners suffice.
Small header differences (float rounding, a tool that writes origins with 4 decimals) stay far
below a tenth of a voxel; a real mismatch (another orientation, a shifted crop, a resampled
label) lands at a voxel or more.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class GeometryTolerance:
    max_shift_voxels: float = 0.1   # largest allowed corner displacement, in voxels of the image


@dataclass(frozen=True)
class GridComparison:
    problem: str | None       # why the two cannot be paired, or None
    shift_voxels: float       # largest corner displacement, voxels (inf when sizes differ)
    headers_differ: bool      # spacing/origin/direction not equal to nnU-Net's own tolerance


def _corners_mm(image: sitk.Image) -> np.ndarray:
    """(8, 3) world coordinates in mm of the corner voxel centres of a 3D image."""
    size = image.GetSize()
    spacing = np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = np.asarray(image.GetOrigin())
    corners = np.array(list(itertools.product(*[(0, s - 1) for s in size])), dtype=float)
    return origin + (corners * spacing) @ direction.T


def compare_grids(reference: sitk.Image, other: sitk.Image, what: str,
                  tolerance: GeometryTolerance) -> GridComparison:
    """Compare the grid of `other` (e.g. "the label", "channel 1") with `reference`'s."""
    if reference.GetSize() != other.GetSize():
        return GridComparison(
            f"{what} has size {_size(other.GetSize())} but the image {_size(reference.GetSize())} "
            "(x, y, z voxels)", float("inf"), True)
    shift_mm = np.linalg.norm(_corners_mm(reference) - _corners_mm(other), axis=1).max()
    shift = float(shift_mm / min(reference.GetSpacing()))
    differing = _differing_headers(reference, other)
    if shift > tolerance.max_shift_voxels:
        return GridComparison(
            f"{what} is misaligned with the image by up to {shift:.3g} voxels "
            f"(tolerance {tolerance.max_shift_voxels:g}): {'; '.join(differing)}", shift, True)
    return GridComparison(None, shift, bool(differing))


def _differing_headers(reference: sitk.Image, other: sitk.Image) -> list[str]:
    """The header fields that differ, as nnU-Net's integrity check compares them (np.allclose)."""
    fields = (("spacing", "GetSpacing", " mm"), ("origin", "GetOrigin", " mm"),
              ("direction", "GetDirection", ""))
    out = []
    for name, getter, unit in fields:
        a, b = getattr(other, getter)(), getattr(reference, getter)()
        if not np.allclose(a, b):
            out.append(f"{name} {_fmt(a)}{unit} vs the image's {_fmt(b)}{unit}")
    return out


def adopt_grid(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """`image` with `reference`'s spacing, origin and direction (for grids within tolerance)."""
    image = sitk.Image(image)
    image.CopyInformation(reference)
    return image


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _size(size) -> str:
    return "x".join(str(s) for s in size)
