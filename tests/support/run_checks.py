"""Checks on what a finished nnU-Net run left behind, shared by the end-to-end tests."""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_transfer.architectures import partition
from nnunet_transfer.checkpoints.reader import Checkpoint


def parts_by_key(checkpoint: dict) -> dict[str, str]:
    network = Checkpoint.of(checkpoint).network(load_weights=False)
    return partition(network).state_dict_parts(network)


def load_checkpoint_file(path: str) -> dict:
    """The dict torch saved at `path`, as the trainer wrote it."""
    return torch.load(path, map_location="cpu", weights_only=False)


def snapshot(folder: str, epoch: int = 0) -> dict:
    return load_checkpoint_file(
        os.path.join(folder, "transfer", "snapshots", f"epoch_{epoch:04d}.pth"))


def assert_frozen_identical_and_trainable_changed(folder: str, frozen_parts) -> None:
    """Frozen parts bit-identical between epoch 0 and the end; every conv weight of the
    trainable parts moved (but the one output layer nnU-Net's loss weights 0, see below)."""
    start = snapshot(folder)
    final = load_checkpoint_file(os.path.join(folder, "checkpoint_final.pth"))
    changed_per_part: dict[str, list[bool]] = {}
    for key, part in parts_by_key(final).items():
        before, after = start["network_weights"][key], final["network_weights"][key]
        if part in frozen_parts:
            assert torch.equal(before, after), f"frozen {part} tensor {key} changed"
        elif before.ndim >= 2:  # conv weights: every one of them must have moved
            changed_per_part.setdefault(part, []).append(not torch.equal(before, after))
    for part, changed in changed_per_part.items():
        if part == "head":
            # nnU-Net weights the lowest-resolution deep-supervision output 0: that output
            # layer never gets a gradient, in nnU-Net's own training too.
            assert changed.count(False) <= 1 and any(changed), f"head: {changed}"
        else:
            assert all(changed), f"trainable {part}: {changed.count(False)} conv weights unchanged"
    assert set(changed_per_part) == {"encoder", "decoder", "head"} - set(frozen_parts)


def assert_starts_from_source(folder: str, source_checkpoint: str, head_transferred: bool,
                              num_classes: int) -> None:
    """Epoch 0 of a transfer run holds the source's weights (the head only when transferred)."""
    start = snapshot(folder)
    source = load_checkpoint_file(source_checkpoint)
    for key, part in parts_by_key(start).items():
        if part == "head" and not head_transferred:
            assert start["network_weights"][key].shape[0] == num_classes, key
        else:
            assert torch.equal(start["network_weights"][key], source["network_weights"][key]), key


def assert_predictions_match_images(images: str, predictions: str, num_classes: int) -> None:
    """One segmentation per test image, of the image's size, with known labels only."""
    image_files = sorted(os.listdir(images))
    assert image_files
    for image_file in image_files:
        case = image_file.replace("_0000.nii.gz", ".nii.gz")
        image = sitk.ReadImage(os.path.join(images, image_file))
        prediction = sitk.ReadImage(os.path.join(predictions, case))
        assert prediction.GetSize() == image.GetSize()
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= set(range(num_classes))
