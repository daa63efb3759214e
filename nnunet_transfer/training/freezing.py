"""Freezing parts of a network so that they cost nothing and cannot change.

A frozen parameter has requires_grad off: autograd then builds no graph through a frozen
encoder (its outputs do not require grad), which is where the speed-up and the memory saving
come from; it gets no gradient, is left out of the optimizer (so no weight decay or momentum
touches it), and the modules of a frozen part stay in eval mode so normalisation layers keep
their running statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from nnunet_transfer.architectures.parts import NetworkParts


def freeze(parts: NetworkParts, frozen_parts: Iterable[str]) -> None:
    """Turn off requires_grad for every parameter of the named parts."""
    for part in frozen_parts:
        for parameter in parts.parameters(part):
            parameter.requires_grad_(False)


def keep_frozen_in_eval_mode(parts: NetworkParts, frozen_parts: Iterable[str]) -> None:
    """Put frozen parts back in eval mode after `network.train()` switched everything to train.

    `network.train()` recurses through `decoder.encoder` too, so this has to follow every call.
    """
    for part in frozen_parts:
        for module in parts.modules[part]:
            module.eval()


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def activate_zero_initialised_norms(parts: NetworkParts, part: str) -> int:
    """Give norm layers initialised to zero the standard init (weight 1, bias 0); return how many.

    nnU-Net's residual encoders zero the last norm of every residual block so that a block
    starts as the identity and learns from there. A part frozen at its random init never learns,
    so those blocks would stay identities forever and the "random encoder" would be little more
    than its stem; with weight 1 each block contributes its random features.
    """
    count = 0
    for root in parts.modules[part]:
        for module in root.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, _NORMS) and weight is not None and not weight.any():
                with torch.no_grad():
                    weight.fill_(1.0)
                count += 1
    return count


def trainable_parameters(network: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimizer should see: those that still require grad, each once."""
    return [p for p in network.parameters() if p.requires_grad]
