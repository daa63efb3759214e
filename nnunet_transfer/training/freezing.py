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


def _conv_without_skip_gradient(conv: nn.Conv3d | nn.Conv2d, n_upsampled: int):
    """forward for the first conv of a decoder stage whose input is cat(upsampled, skip).

    With a frozen encoder the skip's gradient feeds nothing trainable, yet autograd would
    compute the input gradient of every concatenated channel. Convolving the two halves with
    the two halves of the kernel is the same sum, and the detached skip half costs only its
    weight gradient. (About a third of a frozen-encoder step's decoder backward is saved.)
    """
    convolve = nn.functional.conv3d if isinstance(conv, nn.Conv3d) else nn.functional.conv2d
    options = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                   groups=conv.groups)

    def forward(x: torch.Tensor) -> torch.Tensor:
        upsampled, skip = x[:, :n_upsampled], x[:, n_upsampled:].detach()
        return (convolve(upsampled, conv.weight[:, :n_upsampled], conv.bias, **options)
                + convolve(skip, conv.weight[:, n_upsampled:], None, **options))
    return forward


def stop_gradient_into_frozen_skips(network: nn.Module) -> int:
    """For U-Nets shaped like nnU-Net's (decoder.transpconvs, decoder.stages[s].convs[0].conv),
    let the decoder send no gradient into the skip connections; return the convs changed.
    Only for a frozen encoder: the skips are then constants."""
    decoder = getattr(network, "decoder", None)
    count = 0
    for transpconv, stage in zip(getattr(decoder, "transpconvs", ()), getattr(decoder, "stages", ())):
        first = getattr(getattr(stage, "convs", [None])[0], "conv", None)
        if (isinstance(first, (nn.Conv3d, nn.Conv2d)) and first.padding_mode == "zeros"
                and first.groups == 1 and first.in_channels > transpconv.out_channels):
            first.forward = _conv_without_skip_gradient(first, transpconv.out_channels)
            first.skip_gradient_stopped = True
            count += 1
    return count


def restore_skip_gradient(network: nn.Module) -> int:
    """Undo `stop_gradient_into_frozen_skips` (a phase that trains the encoder needs the skips'
    gradient); return the convs restored."""
    count = 0
    for module in network.modules():
        if getattr(module, "skip_gradient_stopped", False):
            del module.forward, module.skip_gradient_stopped  # back to the class's forward
            count += 1
    return count


def trainable_parameters(network: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimizer should see: those that still require grad, each once."""
    return [p for p in network.parameters() if p.requires_grad]
