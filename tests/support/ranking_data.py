"""The datasets of the ranking's known answer: sources trained on the same task as the target
and on an unrelated structure, made as cheaply as the answer stays robust.

- same task: the synthetic "organ" (an ellipsoid brighter than the textured background) of
  `nnunet_transfer.data.synthetic`, in the source's (high-quality) domain;
- unrelated: the same kind of images, organ included but labelled background, with a bright
  straight "vessel" (a tube along one axis at a random place) as the only label;
- the target: the organ in the low-quality domain (lower contrast, noise, blur, bias).
"""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_transfer.data.synthetic import SOURCE_DOMAIN, synthetic_case

SHAPE = (32, 32, 32)


def _tube(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A straight tube of radius 2-3 voxels along a random axis, anywhere in the volume."""
    axis = int(rng.integers(3))
    others = [a for a in range(3) if a != axis]
    centre = [rng.uniform(0.2, 0.8) * shape[a] for a in others]
    radius = rng.uniform(2.0, 3.0)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    distance2 = sum((grid[a] - c) ** 2 for a, c in zip(others, centre))
    return distance2 <= radius ** 2


def write_unrelated_dataset(raw_folder: str, dataset_id: int, name: str, num_training: int,
                            seed: int) -> str:
    """Dataset<id>_<name>: organ images whose only label is a bright tube ("vessel")."""
    folder = os.path.join(raw_folder, f"Dataset{dataset_id:03d}_{name}")
    rng = np.random.default_rng(seed)
    for index in range(num_training):
        image, _ = synthetic_case(rng, SHAPE, SOURCE_DOMAIN, with_core=False)
        tube = _tube(rng, SHAPE)
        image = image + 1.0 * tube
        for kind, array, suffix in (("imagesTr", image.astype(np.float32), "_0000"),
                                    ("labelsTr", tube.astype(np.uint8), "")):
            os.makedirs(os.path.join(folder, kind), exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(array),
                            os.path.join(folder, kind, f"{name.lower()}_{index:03d}{suffix}.nii.gz"))
    generate_dataset_json(folder, {0: "MRI"}, {"background": 0, "vessel": 1}, num_training,
                          ".nii.gz", dataset_name=name)
    return folder


def random_model(root: str, labels: dict, channel_names: dict, features: tuple = (4, 8),
                 patch: tuple = SHAPE, seed: int = 0) -> str:
    """A v2 model folder of a seeded, untrained PlainConvUNet under plans of its own (written
    as nnU-Net exports one): a source for the tests that need no trained answer."""
    import torch
    from nnunet_transfer.checkpoints.reader import Checkpoint
    from support.checkpoint_files import plain_arch_kwargs, v2_plans, write_v2_model

    plans = v2_plans(plain_arch_kwargs(list(features)), list(patch),
                     dataset_name=f"Dataset9{seed % 100:02d}_Random")
    dataset_json = {"labels": labels, "channel_names": channel_names,
                    "numTraining": 1, "file_ending": ".nii.gz"}
    torch.manual_seed(seed)
    shell = Checkpoint("random", {}, {"plans": plans, "configuration": "3d_fullres",
                                      "dataset_json": dataset_json})
    weights = shell.network(load_weights=False).state_dict()
    return write_v2_model(os.path.join(root, f"random{seed}"), plans, dataset_json, weights)
