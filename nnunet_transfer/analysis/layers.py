"""Which layers of a network the representation analysis looks at, named as in `named_modules()`.

Default layers (three in the encoder, three in the decoder, as the six layers of Karimi et al.):
- an extra architecture of this package declares them itself (`analysis_layers()`);
- nnU-Net's U-Nets (dynamic_network_architectures' PlainConvUNet, ResidualEncoderUNet and
  anything else with `encoder.stages` and `decoder.stages`) get the stage outputs evenly spread
  over the path by the architectures' rule (`architectures.analysis_layer_rules.spread`):
  encoder shallow, middle, deep (the bottleneck); decoder deep, middle, shallow.
  On a side with fewer than three stages, finer layers stand in (`with_stand_ins`): the stem
  or the first conv / residual block of the first encoder stage; the first transposed
  convolution, then the first block of the first decoder stage.

The default layers are labelled by role, "encoder-1" ... "encoder-3" (shallow to deep) and
"decoder-1" ... "decoder-3" (deep to shallow, the order data flows in), so that networks of
different architectures can be compared layer by layer; the module name behind each label is
kept alongside. Any other module can be named explicitly; a name that does not exist is refused
with the closest existing names.
"""

from __future__ import annotations

import difflib

from torch import nn

from nnunet_transfer.architectures.analysis_layer_rules import child_names, spread, with_stand_ins
from nnunet_transfer.architectures.parts import unwrap
from nnunet_transfer.errors import UserError

# How many names of the same depth a "no such layer" message lists before cutting off.
_LISTED_NAMES = 30


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
    # On a side with fewer than three stages, finer layers stand in before the first stage's
    # output: the stem, else the first encoder block; the first transposed convolution, then
    # the first decoder block.
    encoder_block, decoder_block = (_block_names(network, f"{side}.stages.0")[:-1][:1]
                                    for side in ("encoder", "decoder"))
    has_stem = getattr(network.encoder, "stem", None) is not None
    encoder = with_stand_ins(child_names("encoder.stages", network.encoder.stages),
                             [(0, name) for name in (["encoder.stem"] if has_stem
                                                     else encoder_block)])
    up = ["decoder.transpconvs.0"] if hasattr(network.decoder, "transpconvs") else []
    decoder = with_stand_ins(child_names("decoder.stages", network.decoder.stages),
                             enumerate(up + decoder_block))
    return {"encoder": spread(encoder), "decoder": spread(decoder)}


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
