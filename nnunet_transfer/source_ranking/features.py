"""What a source network sees of a target case: one patch of the source's patch size, the
features its segmentation head takes at full resolution, its own prediction, and class-balanced
voxel samples of those features.

- The patch is centred on the bounding box of the case's foreground (the image centre when it
  has none), kept inside the image where the image is larger, padded where it is smaller (data
  0, labels -1, as nnU-Net pads).
- The features are the input of the head's full-resolution layer (a forward pre-hook on every
  convolution of the head part, `architectures.parts.partition`; the largest one is kept): the
  decoder's last stage, (features, z, y, x).
- Sampling: up to `quota` voxels per class of each case, drawn without replacement by a seeded
  generator, from the voxels inside the image (labels >= 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nnunet_transfer.architectures.parts import partition
from nnunet_transfer.errors import UserError


def patch_box(seg: np.ndarray, patch_size: tuple[int, ...]) -> tuple[int, ...]:
    """The start (one per axis, negative where the patch starts before the image) of the patch
    of `patch_size` centred on the foreground (seg > 0) of `seg` (z, y, x)."""
    foreground = np.argwhere(seg > 0)
    if foreground.size:
        centre = (foreground.min(0) + foreground.max(0) + 1) // 2
    else:
        centre = np.asarray(seg.shape) // 2
    starts = []
    for c, size, p in zip(centre, seg.shape, patch_size):
        if size >= p:
            starts.append(int(np.clip(c - p // 2, 0, size - p)))
        else:
            starts.append(-((p - size) // 2))
    return tuple(starts)


def crop_padded(array: np.ndarray, start: tuple[int, ...], size: tuple[int, ...],
                fill: float) -> np.ndarray:
    """array[..., start:start + size] over the last len(size) axes, with `fill` where the box
    leaves the array."""
    lead = array.shape[:array.ndim - len(size)]
    out = np.full(lead + tuple(size), fill, dtype=array.dtype)
    source, target = [], []
    for s, p, n in zip(start, size, array.shape[len(lead):]):
        lo, hi = max(s, 0), min(s + p, n)
        source.append(slice(lo, hi))
        target.append(slice(lo - s, hi - s))
    out[(..., *target)] = array[(..., *source)]
    return out


@dataclass(frozen=True)
class PatchOutputs:
    """A network's view of one patch.

    Attributes:
        features: (features, z, y, x) float32, the head's full-resolution input.
        prediction: (z, y, x) the argmax over the network's full-resolution output channels.
        seg: (z, y, x) the target's labels of the patch, -1 where it is padding or outside the
            crop to non-zero.
    """

    features: np.ndarray
    prediction: np.ndarray
    seg: np.ndarray


class HeadInputs:
    """Forward pre-hooks on the convolutions of a network's head that keep the largest input
    of one forward pass: the decoder's full-resolution features."""

    def __init__(self, network: nn.Module):
        head = partition(network).modules["head"]
        convolutions = [m for root in head for m in root.modules()
                        if isinstance(m, nn.modules.conv._ConvNd)]
        if not convolutions:
            raise UserError(f"the head of {type(network).__name__} has no convolution: "
                            "rank-sources scores the features a convolutional head reads")
        self.largest: torch.Tensor | None = None
        self._handles = [c.register_forward_pre_hook(self._keep) for c in convolutions]

    def _keep(self, module, inputs) -> None:
        x = inputs[0]
        if self.largest is None or x[0, 0].numel() > self.largest[0, 0].numel():
            self.largest = x.detach()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def full_resolution_output(output) -> torch.Tensor:
    """The full-resolution logits (1, classes, z, y, x) of a network's output (a tensor, or a
    list of deep-supervision outputs)."""
    outputs = output if isinstance(output, (list, tuple)) else [output]
    return max(outputs, key=lambda t: t[0, 0].numel())


def patch_outputs(network: nn.Module, hooks: HeadInputs, data: np.ndarray, seg: np.ndarray,
                  patch_size: tuple[int, ...], device: torch.device) -> PatchOutputs:
    """Run `network` (eval mode, `hooks` attached) on the patch of `data` (channels, z, y, x)
    centred on the foreground of `seg` (z, y, x)."""
    start = patch_box(seg, patch_size)
    image = crop_padded(data, start, patch_size, 0.0)
    labels = crop_padded(seg, start, patch_size, -1)
    hooks.largest = None
    with torch.no_grad():
        logits = full_resolution_output(network(torch.from_numpy(image)[None].to(device)))
    features = hooks.largest
    if features is None or tuple(features.shape[2:]) != tuple(patch_size):
        raise UserError(f"the head of {type(network).__name__} reads no features at the patch's "
                        f"full resolution {tuple(patch_size)}: rank-sources scores networks "
                        "whose head reads full-resolution features (nnU-Net's U-Nets)")
    return PatchOutputs(features[0].float().cpu().numpy(),
                        logits[0].argmax(0).cpu().numpy(), labels)


def class_balanced_sample(features: np.ndarray, seg: np.ndarray, classes: tuple[int, ...],
                          quota: int, rng: np.random.Generator
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Up to `quota` voxels of each class of `classes` (all of a class's voxels when it has
    fewer), drawn without replacement from features (channels, z, y, x) where seg (z, y, x)
    holds the class. Returns (samples (n, channels), their labels (n,)), classes in the order
    given."""
    flat_features = features.reshape(features.shape[0], -1)
    flat_seg = seg.reshape(-1)
    rows, labels = [], []
    for value in classes:
        where = np.flatnonzero(flat_seg == value)
        if where.size > quota:
            where = np.sort(rng.choice(where, quota, replace=False))
        rows.append(flat_features[:, where].T)
        labels.append(np.full(where.size, value, dtype=np.int64))
    return np.concatenate(rows), np.concatenate(labels)
