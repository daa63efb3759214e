"""Which layers of a network the representation analysis looks at, named as in `named_modules()`.

Default layers (three in the encoder, three in the decoder, as the six layers of Karimi et al.):
- an extra architecture of this package declares them itself (`analysis_layers()`);
- nnU-Net's U-Nets (dynamic_network_architectures' PlainConvUNet, ResidualEncoderUNet and
  anything else with `encoder.stages` and `decoder.stages`) get the stage outputs evenly spread
  over the path: encoder shallow, middle, deep (the bottleneck); decoder deep, middle, shallow.
  A U-Net too shallow to have three stages on a side falls back to the outputs of the conv /
  residual blocks inside its stages (and the transposed convolutions of the decoder).

The default layers are labelled by role, "encoder-1" ... "encoder-3" (shallow to deep) and
"decoder-1" ... "decoder-3" (deep to shallow, the order data flows in), so that networks of
different architectures can be compared layer by layer; the module name behind each label is
kept alongside. Any other module can be named explicitly; a name that does not exist is refused
with the closest existing names.
"""

from __future__ import annotations

import difflib

from torch import nn

from nnunet_transfer.architectures.parts import unwrap
from nnunet_transfer.errors import UserError

LAYERS_PER_SIDE = 3

# How many names of the same depth a "no such layer" message lists before cutting off.
_LISTED_NAMES = 30


def evenly_spread(names: list[str], count: int = LAYERS_PER_SIDE) -> list[str]:
    """First, middle and last of `names` (for count 3; in general `count` evenly spaced names).

    Fewer names than `count` are returned unchanged. The middle of an even number of names is
    the lower one, (n - 1) // 2, the rule the extra architectures use for their stages.
    """
    if len(names) <= count:
        return list(names)
    return [names[i * (len(names) - 1) // (count - 1)] for i in range(count)]


def _is_unet(network: nn.Module) -> bool:
    return (hasattr(network, "encoder") and hasattr(network.encoder, "stages")
            and hasattr(network, "decoder") and hasattr(network.decoder, "stages"))


def _block_names(network: nn.Module, stage: str) -> list[str]:
    """Names of the conv / residual blocks inside module `stage`, in forward order.

    The last block's output is the stage's output, so it is named by the stage itself.
    """
    from dynamic_network_architectures.building_blocks.residual import (
        BasicBlockD,
        BottleneckD,
    )
    from dynamic_network_architectures.building_blocks.simple_conv_blocks import (
        ConvDropoutNormReLU,
    )

    module = network.get_submodule(stage)
    blocks = [f"{stage}.{name}" for name, child in module.named_modules()
              if isinstance(child, (ConvDropoutNormReLU, BasicBlockD, BottleneckD))]
    return blocks[:-1] + [stage]


def _unet_layers(network: nn.Module) -> dict[str, list[str]]:
    encoder = [f"encoder.stages.{i}" for i in range(len(network.encoder.stages))]
    if len(encoder) < LAYERS_PER_SIDE:
        stem = ["encoder.stem"] if getattr(network.encoder, "stem", None) is not None else []
        encoder = stem + [block for stage in encoder for block in _block_names(network, stage)]
    decoder = [f"decoder.stages.{j}" for j in range(len(network.decoder.stages))]
    if len(decoder) < LAYERS_PER_SIDE:
        upsampling = ([f"decoder.transpconvs.{j}" for j in range(len(decoder))]
                      if hasattr(network.decoder, "transpconvs") else [None] * len(decoder))
        decoder = [name for up, stage in zip(upsampling, decoder)
                   for name in ([up] if up else []) + _block_names(network, stage)]
    return {"encoder": evenly_spread(encoder), "decoder": evenly_spread(decoder)}


def default_layer_names(network: nn.Module) -> dict[str, list[str]]:
    """{"encoder": [module names, shallow to deep], "decoder": [module names, deep to shallow]}.

    Three names per side (fewer only for a network that has fewer candidate layers). Raises
    UserError for an architecture that neither declares `analysis_layers()` nor is shaped like
    nnU-Net's U-Nets.
    """
    network = unwrap(network)
    if hasattr(network, "analysis_layers"):
        return {side: list(names) for side, names in network.analysis_layers().items()}
    if _is_unet(network):
        return _unet_layers(network)
    raise UserError(
        f"the architecture {type(network).__name__} has no default analysis layers (it neither "
        "declares analysis_layers() nor has encoder.stages and decoder.stages like nnU-Net's "
        "U-Nets); name the layers to analyse explicitly")


def default_layers(network: nn.Module) -> dict[str, str]:
    """The default analysis layers as {role label: module name}, in the order
    encoder-1..3 (shallow to deep), decoder-1..3 (deep to shallow)."""
    return {f"{side}-{i}": name for side, names in default_layer_names(network).items()
            for i, name in enumerate(names, start=1)}


def find_layer(network: nn.Module, name: str, network_label: str | None = None) -> nn.Module:
    """The module called `name` in `network` (wrappers removed; aliases such as nnU-Net's
    `decoder.encoder.*` resolve too).

    Raises UserError naming the missing layer, its closest existing names and the existing names
    at the same depth, so a typo or a wrong stage index is fixed from the message alone.
    """
    network = unwrap(network)
    modules = dict(network.named_modules(remove_duplicate=False))
    if name in modules and name:
        return modules[name]
    names = [n for n, _ in network.named_modules() if n]
    owner = network_label or type(network).__name__
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    depth = name.count(".")
    same_depth = [n for n in names if n.count(".") == depth]
    listed = ", ".join(same_depth[:_LISTED_NAMES])
    if len(same_depth) > _LISTED_NAMES:
        listed += f", ... ({len(same_depth) - _LISTED_NAMES} more)"
    message = f"{owner} has no layer {name!r}."
    if close:
        message += f" Closest names: {', '.join(close)}."
    message += (f" Layers at that depth: {listed or 'none'}. "
                f"({len(names)} modules in all; list them with "
                "[n for n, _ in network.named_modules()].)")
    raise UserError(message)
