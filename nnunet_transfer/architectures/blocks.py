"""Building blocks several extra architectures share: the residual block, an encoder's run over
its stages, and the U-Net decoder over the skips."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from nnunet_transfer.architectures.conv_settings import ConvSettings


class ResidualBlock(nn.Module):
    """Two convolutions around an identity shortcut: act(x + norm(conv(act(norm(conv(x)))))):
    HRNet's basic block and the residual unit of Karimi et al.'s encoder."""

    def __init__(self, settings: ConvSettings, channels: int, kernel_size):
        super().__init__()
        self.conv1 = settings.conv_norm_act(channels, channels, kernel_size)
        self.conv2 = settings.conv(channels, channels, kernel_size)
        self.norm2 = settings.norm(channels)
        self.act = settings.activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.conv1(x))) + x)


def outputs_of_each_stage(stages: Iterable[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """Run `stages` in turn, each on the previous one's output, and keep every output: the
    skips of an encoder, shallowest first, its deepest map last."""
    outputs = []
    for stage in stages:
        x = stage(x)
        outputs.append(x)
    return outputs


class SkipDecoder(nn.Module):
    """The decoder of a U-Net: `stages[0]` takes the encoder's deepest map and its skip one
    resolution finer, every next stage the previous one's output and the next finer skip, up
    to the full resolution, whose map it returns. Lists given besides the skips (one entry per
    skip, e.g. pooling indices) reach each stage after its skip.

    `deep_supervision` is the flag nnU-Net toggles; these decoders have a single output."""

    def __init__(self, stages: Iterable[nn.Module], deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.stages = nn.ModuleList(stages)

    def forward(self, skips: list[torch.Tensor], *per_skip: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for stage, skip, *extra in zip(self.stages, reversed(skips[:-1]),
                                       *map(reversed, per_skip)):
            x = stage(x, skip, *extra)
        return x
