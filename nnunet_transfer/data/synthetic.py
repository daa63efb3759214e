"""Synthetic 3D segmentation datasets in nnU-Net raw format, with a controllable domain shift.

Each case is an ellipsoidal "organ" (label 1), optionally with a brighter inner "core"
(label 2), on a smooth textured background. A `Domain` sets the acquisition quality, so a
source dataset and a low-quality target dataset differ the way two sites would: lower contrast,
more noise, blur (lower effective resolution) and an intensity bias field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from scipy.ndimage import gaussian_filter

from nnunet_transfer.data.raw_dataset import refuse_taken_id
from nnunet_transfer.errors import UserError


@dataclass(frozen=True)
class Domain:
    contrast: float = 1.0      # organ-minus-background intensity, in units of the source's
    noise: float = 0.15        # standard deviation of the voxel noise
    blur_sigma: float = 0.0    # Gaussian blur, voxels (lower effective resolution)
    bias: float = 0.0          # amplitude of a smooth multiplicative bias field


SOURCE_DOMAIN = Domain()
LOW_QUALITY_DOMAIN = Domain(contrast=0.6, noise=0.3, blur_sigma=1.0, bias=0.25)


def acquisition_shift(image: np.ndarray, domain: Domain, rng: np.random.Generator,
                      noise_scale: float = 1.0) -> np.ndarray:
    """Blur, bias field and noise of `domain` applied to a float array (z, y, x).

    The noise standard deviation is domain.noise * noise_scale. The synthetic cases and the
    degraded copies of real datasets (domain_shift.py) take the same steps and random draws.
    """
    if domain.blur_sigma > 0:
        image = gaussian_filter(image, domain.blur_sigma)
    if domain.bias > 0:
        field = gaussian_filter(rng.standard_normal(image.shape), max(image.shape) / 4)
        field = field / (np.abs(field).max() + 1e-8)
        image = image * (1.0 + domain.bias * field)
    return image + domain.noise * noise_scale * rng.standard_normal(image.shape)


def synthetic_label_names(with_core: bool) -> dict[str, int]:
    """The labels of a synthetic dataset, name -> value (its dataset.json's `labels`)."""
    return {"background": 0, "organ": 1, **({"core": 2} if with_core else {})}


def synthetic_case(rng: np.random.Generator, shape: tuple[int, int, int], domain: Domain,
                   with_core: bool) -> tuple[np.ndarray, np.ndarray]:
    """One (image float32, label uint8) pair of the given shape (z, y, x)."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape],
                                indexing="ij"))
    size = np.asarray(shape, dtype=np.float32)
    centre = size * rng.uniform(0.4, 0.6, 3)
    radii = size * rng.uniform(0.18, 0.3, 3)
    distance = np.sqrt(sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3)))
    label = (distance <= 1.0).astype(np.uint8)
    image = 0.2 * gaussian_filter(rng.standard_normal(shape), 2.0) / 0.05
    image = np.clip(image, -1, 1) * 0.2
    image += domain.contrast * label
    if with_core:
        core = distance <= 0.45
        label[core] = 2
        image += 0.6 * domain.contrast * core
    return acquisition_shift(image, domain, rng).astype(np.float32), label


def write_synthetic_dataset(raw_folder: str, dataset_id: int, name: str, *, num_training: int,
                            num_test: int = 0, shape: tuple[int, int, int] = (32, 32, 32),
                            spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                            domain: Domain = SOURCE_DOMAIN, with_core: bool = False,
                            seed: int = 0) -> str:
    """Write Dataset<id>_<name> under `raw_folder` (imagesTr/labelsTr/imagesTs/labelsTs and
    dataset.json); returns its folder. Spacing is (x, y, z) in mm, as SimpleITK takes it."""
    if not 1 <= dataset_id <= 999:
        raise UserError(f"dataset id {dataset_id} must be between 1 and 999")
    if num_training < 2:
        raise UserError("a dataset needs at least 2 training cases")
    if len(shape) != 3 or min(shape) < 8:
        raise UserError(f"shape {tuple(shape)}: give three sizes of at least 8 voxels")
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    refuse_taken_id(raw_folder, dataset_id, folder_name)
    folder = os.path.join(raw_folder, folder_name)
    rng = np.random.default_rng(seed)
    cases = [("Tr", i) for i in range(num_training)] + [("Ts", i) for i in range(num_test)]
    for split, index in cases:
        image, label = synthetic_case(rng, shape, domain, with_core)
        case = f"{name.lower()}_{split.lower()}{index:03d}"
        for kind, array, suffix in (("images", image, "_0000"), ("labels", label, "")):
            out = os.path.join(folder, f"{kind}{split}")
            os.makedirs(out, exist_ok=True)
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing(spacing)
            sitk.WriteImage(itk, os.path.join(out, f"{case}{suffix}.nii.gz"))
    labels = synthetic_label_names(with_core)
    generate_dataset_json(folder, {0: "MRI"}, labels, num_training, ".nii.gz", dataset_name=name,
                          description="synthetic, made by nnunet-transfer")
    return folder
