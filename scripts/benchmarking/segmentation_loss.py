"""nnU-Net's training loss in plain torch: soft Dice over the foreground classes plus
cross-entropy, summed over the deep-supervision outputs with nnU-Net's weights.

The same function as nnU-Net's `DC_and_CE_loss` with `MemoryEfficientSoftDiceLoss` (batch_dice
off, smooth 1e-5, background left out of the Dice) inside its `DeepSupervisionWrapper`, as
`nnUNetTrainer._build_loss` makes it; `tests/test_segmentation_loss.py` checks the values and
the gradients against nnU-Net's. It exists so that a training step can be measured where
nnU-Net is not installed (`scripts/gpu_check.py` on a bare GPU machine).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMOOTH = 1e-5


def dice_ce(logits: torch.Tensor, target: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """Loss of one output: `logits` (batch, classes, *spatial), `target` (batch, 1, *spatial)
    holding the class of each voxel."""
    labels = target[:, 0].long()
    cross_entropy = F.cross_entropy(logits, labels)
    axes = tuple(range(2, logits.ndim))
    probabilities = torch.softmax(logits, 1)[:, 1:]
    with torch.no_grad():
        one_hot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1)[:, 1:].float()
    intersection = (probabilities * one_hot).sum(axes, dtype=torch.float32)
    denominator = (one_hot.sum(axes, dtype=torch.float32)
                   + probabilities.sum(axes, dtype=torch.float32) + smooth)
    dice = (2 * intersection + smooth) / denominator.clamp_min(1e-8)
    return cross_entropy - dice.mean()


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net's weights of the outputs, full resolution first: halving per scale, the lowest
    resolution left out, normalised to sum 1."""
    if n_outputs == 1:
        return [1.0]
    weights = [1 / 2 ** i for i in range(n_outputs)]
    weights[-1] = 0
    return [w / sum(weights) for w in weights]


class SegmentationLoss(nn.Module):
    """The loss of a network with `n_outputs` outputs (1: no deep supervision). Called with the
    network's output (a tensor, or one per scale) and one target per output."""

    def __init__(self, n_outputs: int):
        super().__init__()
        self.weights = deep_supervision_weights(n_outputs)

    def forward(self, outputs, targets) -> torch.Tensor:
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return sum(w * dice_ce(o, t) for w, o, t in zip(self.weights, outputs, targets) if w)
