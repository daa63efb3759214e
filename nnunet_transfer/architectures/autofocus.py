"""Autofocus network (Qin et al. 2018) on nnU-Net's plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_transfer.architectures.analysis_layer_rules import with_stand_ins
from nnunet_transfer.architectures.blocks import outputs_of_each_stage
from nnunet_transfer.architectures.conv_settings import ConvSettings
from nnunet_transfer.architectures.stage_settings import (
    check_output_at_patch_size, cumulative_strides, triple)
from nnunet_transfer.architectures.transfer_network import TransferNetwork
from nnunet_transfer.errors import UserError

PAPER_DILATIONS = (2, 6, 10, 14)
OWN_KWARGS = ("dilations", "attention_stop_gradient", "layers_per_block")


def dilated_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   rate: int) -> torch.Tensor:
    """`F.conv3d(x, weight, bias, dilation=rate)` with 'same' zero padding, computed faster.

    Along an axis no longer than `rate`, the off-centre taps only ever read padding, so only the
    kernel's centre slice is used. On the CPU, PyTorch's backward of a convolution dilated along
    the first spatial axis is several times slower than a plain one (measured 3-4x at 40x56x40);
    there, in training, the first axis is split into its `rate` interleaved sub-grids (slice
    z reads only slices z +- rate, i.e. its own sub-grid), stacked in the batch and convolved
    without dilation along that axis: the same sums, a fraction of the time.
    """
    size = x.shape[2:]
    for axis in range(3):
        if weight.shape[2 + axis] > 1 and rate >= size[axis]:
            weight = weight.narrow(2 + axis, weight.shape[2 + axis] // 2, 1)
    kernel = weight.shape[2:]
    rates = [rate if k > 1 else 1 for k in kernel]
    padding = [r * (k - 1) // 2 for r, k in zip(rates, kernel)]
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if x.device.type != "cpu" or not needs_grad or rates[0] == 1:
        return F.conv3d(x, weight, bias, padding=padding, dilation=rates)
    step, depth = rates[0], size[0]
    cells = -(-depth // step)
    x = F.pad(x, [0, 0, 0, 0, 0, cells * step - depth])  # zeros, as the padding they replace
    batch, channels = x.shape[:2]
    # slice (c * step + o) -> sub-grid o, cell c
    x = (x.reshape(batch, channels, cells, step, *size[1:]).permute(3, 0, 1, 2, 4, 5)
         .reshape(step * batch, channels, cells, *size[1:]))
    y = F.conv3d(x, weight, bias, padding=[(kernel[0] - 1) // 2, *padding[1:]],
                 dilation=[1, *rates[1:]])
    y = (y.reshape(step, batch, y.shape[1], cells, *size[1:]).permute(1, 2, 3, 0, 4, 5)
         .reshape(batch, y.shape[1], cells * step, *size[1:]))
    return y[:, :, :depth]


@dataclass(frozen=True)
class AutofocusOptions:
    """How the autofocus layers are built (the network's own arch_kwargs)."""

    dilations: tuple[int, ...] = PAPER_DILATIONS
    # The authors' code computes the attention from detached features: the attention model
    # learns from the loss but sends no gradient into the layers below it.
    attention_stop_gradient: bool = True
    # 1: a block's first convolution is a plain conv-norm-act, its second an autofocus layer
    # (the paper's block with one autofocus layer, as in AFN1); 2: both are autofocus layers
    # (the block of AFN2, AFN4, AFN6), about twice the cost.
    layers_per_block: int = 1


class AutofocusConv(nn.Module):
    """One autofocus convolutional layer (without the non-linearity).

    A single convolution `conv` is applied at each of the K dilation rates (shared weights, so
    each branch looks for the same pattern at a different scale); branch k has its own norm.
    The attention model (conv, non-linearity, 1x1x1 conv to K maps, softmax over the K rates at
    every voxel) weighs the branches, and the layer returns their weighted sum.
    """

    def __init__(self, settings: ConvSettings, options: AutofocusOptions, in_channels: int,
                 out_channels: int, kernel):
        super().__init__()
        self.dilations = options.dilations
        self.stop_gradient = options.attention_stop_gradient
        # The weights of every branch; branches() applies them at each rate.
        self.conv = settings.conv(in_channels, out_channels, kernel, dilation=self.dilations[0])
        self.norms = nn.ModuleList(settings.norm(out_channels) for _ in self.dilations)
        hidden = max(1, in_channels // 2)  # half the input channels, as the authors' code
        self.attention = nn.Sequential(settings.conv(in_channels, hidden, kernel),
                                       settings.activation(),
                                       nn.Conv3d(hidden, len(self.dilations), 1))

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The shared convolution at each dilation rate (before the branch norms)."""
        return [dilated_conv3d(x, self.conv.weight, self.conv.bias, rate)
                for rate in self.dilations]

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, K, *spatial) weights, non-negative and summing to 1 over the K rates."""
        return torch.softmax(self.attention(x.detach() if self.stop_gradient else x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.attention_weights(x)
        mixed = None
        for k, (branch, norm) in enumerate(zip(self.branches(x), self.norms)):
            term = norm(branch) * weights[:, k:k + 1]
            mixed = term if mixed is None else mixed + term
        return mixed


class AutofocusBlock(nn.Module):
    """The residual block of the paper's AFN models: act(AF(first(x)) + shortcut(x)). `first` is
    a plain conv-norm-act (`layers_per_block` 1) or an autofocus layer and its non-linearity
    (2); the shortcut is a 1x1x1 conv and norm when the number of channels changes, as in the
    authors' code."""

    def __init__(self, settings: ConvSettings, options: AutofocusOptions, in_channels: int,
                 out_channels: int, kernel):
        super().__init__()
        if options.layers_per_block == 2:
            self.first = nn.Sequential(
                AutofocusConv(settings, options, in_channels, out_channels, kernel),
                settings.activation())
        else:
            self.first = settings.conv_norm_act(in_channels, out_channels, kernel)
        self.second = AutofocusConv(settings, options, out_channels, out_channels, kernel)
        self.shortcut = (nn.Identity() if in_channels == out_channels else nn.Sequential(
            settings.conv(in_channels, out_channels, 1), settings.norm(out_channels)))
        self.activation = settings.activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.second(self.first(x)) + self.shortcut(x))


class AutofocusEncoder(nn.Module):
    """`stages[0]`: two conv-norm-act layers at full resolution (the paper's plain layers);
    `stages[s]`: a conv-norm-act down-sampling by strides[s], then a conv-norm-act layer or, at
    the bottleneck (the last stage), an autofocus block."""

    def __init__(self, settings: ConvSettings, options: AutofocusOptions, input_channels: int,
                 features: Sequence[int], strides, kernel_sizes):
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(
            settings.conv_norm_act(input_channels, features[0], kernel_sizes[0]),
            settings.conv_norm_act(features[0], features[0], kernel_sizes[0]))])
        last = len(features) - 1
        for s in range(1, last + 1):
            channels, kernel = features[s], kernel_sizes[s]
            self.stages.append(nn.Sequential(
                settings.conv_norm_act(features[s - 1], channels, kernel, strides[s]),
                AutofocusBlock(settings, options, channels, channels, kernel) if s == last
                else settings.conv_norm_act(channels, channels, kernel)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return outputs_of_each_stage(self.stages, x)


class DecoderStage(nn.Module):
    """Transposed-conv up-sampling by the plans' stride, concatenation with the encoder's skip,
    and an autofocus block from the concatenation to this stage's features."""

    def __init__(self, settings: ConvSettings, options: AutofocusOptions, in_channels: int,
                 out_channels: int, kernel, stride):
        super().__init__()
        stride = triple(stride)
        self.up = nn.ConvTranspose3d(in_channels, out_channels, stride, stride=stride,
                                     bias=settings.conv_bias)
        self.block = AutofocusBlock(settings, options, 2 * out_channels, out_channels, kernel)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class AutofocusDecoder(nn.Module):
    """`stages[s]` brings the map of resolution s+1 to resolution s; `seg_layers[0]` is the
    output convolution."""

    def __init__(self, settings: ConvSettings, options: AutofocusOptions, features: Sequence[int],
                 strides, kernel_sizes, num_classes: int, deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.stages = nn.ModuleList(
            DecoderStage(settings, options, features[s + 1], features[s], kernel_sizes[s],
                         strides[s + 1])
            for s in range(len(features) - 1))
        # Named as in nnU-Net's U-Nets, so that nnU-Net's own `-pretrained_weights` loader
        # skips the output layer too.
        self.seg_layers = nn.ModuleList([settings.head(features[0], num_classes)])

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        x = skips[-1]
        for s in reversed(range(len(self.stages))):
            x = self.stages[s](x, skips[s])
        return [self.seg_layers[0](x)]


class AutofocusNet(TransferNetwork):
    """Autofocus network after Qin, Kamnitsas, Ancha, Nanavati, Cottrell, Criminisi, Nori (2018),
    "Autofocus layer for semantic segmentation", MICCAI 2018, LNCS 11072.

    The autofocus layer (`AutofocusConv`) is the paper's: one convolution run at K dilation rates
    with shared weights (`dilations`, default the paper's 2, 6, 10, 14), a norm per branch, and
    an attention model (conv, non-linearity, 1x1x1 conv, softmax over the rates per voxel) whose
    weights sum the K branches. `AutofocusBlock` is the paper's residual block: a plain
    conv-norm-act then an autofocus layer (`layers_per_block=1`, default), or two autofocus
    layers (`layers_per_block=2`, as in AFN2/4/6, about twice the training time). With the
    default there are n_stages autofocus layers (bottleneck and each decoder stage): four for
    four stages, as many as the paper's AFN4.

    Built: a U-shaped network on the plans' strides. Encoder: stage 0 = two conv-norm-act
    layers at full resolution; stage s = a conv-norm-act down-sampling by strides[s] and a
    conv-norm-act layer, except the deepest stage (bottleneck), whose second part is an
    autofocus block. Decoder: at each resolution, from coarse to fine, a transposed conv by
    the plans' stride, concatenation with the encoder stage's output and an autofocus block;
    a 1x1x1 output convolution at full resolution. No deep supervision (none in the paper).

    Split: encoder = the encoder stages, bottleneck autofocus block included; decoder = the
    up-sampling convolutions and the decoder's autofocus blocks; head = the output convolution
    (`decoder.seg_layers`).

    Departures from the paper: its networks (Basic, AFN1-6) are a single-pathway DeepMedic at
    full resolution: two plain conv layers, then three residual blocks of dilated (rate 2)
    convolutions whose last 1-6 layers become autofocus layers, valid convolutions, 30-50
    channels, batch norm and ReLU. Here, so that it trains at nnU-Net's patch sizes on modest
    hardware and down-samples the way nnU-Net planned the patch, the plain layers become a
    plans-strided encoder, and the autofocus layers sit where the paper puts them relative to
    the output, the last layers before the classifier (the decoder), and at the bottleneck,
    with U-Net skip connections; 'same' padding, so the output has the input's size; the plans'
    norm (nnU-Net's instance norm, one per branch as the paper's batch norms) and
    non-linearity; the plans' kernel sizes (3x3x3 as in the paper unless the plans say e.g.
    1x3x3); widths from the template (16 doubling up to 128). The dilation rates count voxels
    of the map a layer runs on; on a map shorter than a rate, that branch reads its own voxel
    and zero padding (choose smaller `dilations` for small patches; a bottleneck no longer than
    the smallest rate is refused). As in the authors' code, the attention sees detached
    features (`attention_stop_gradient`).
    """

    has_deep_supervision = False

    def __init__(self, input_channels: int, num_classes: int, n_stages: int,
                 features_per_stage: Sequence[int], strides: Sequence[Sequence[int]],
                 kernel_sizes: Sequence[Sequence[int]], conv_op=None, norm_op=None,
                 norm_op_kwargs=None, nonlin=None, nonlin_kwargs=None, conv_bias: bool = True,
                 deep_supervision: bool = False, dilations: Sequence[int] = PAPER_DILATIONS,
                 attention_stop_gradient: bool = True, layers_per_block: int = 1):
        super().__init__()
        self.check_settings(locals())
        options = _options(type(self).__name__, dilations, attention_stop_gradient,
                           layers_per_block)
        settings = ConvSettings.from_plans(locals())
        features = [int(f) for f in features_per_stage]
        self.options = options
        self.encoder = AutofocusEncoder(settings, options, input_channels, features, strides,
                                        kernel_sizes)
        self.decoder = AutofocusDecoder(settings, options, features, strides, kernel_sizes,
                                        num_classes, deep_supervision)

    def forward(self, x: torch.Tensor):
        return self.outputs(self.decoder(self.encoder(x)))

    def autofocus_layers(self) -> list[AutofocusConv]:
        return [m for m in self.modules() if isinstance(m, AutofocusConv)]

    def transfer_parts(self) -> dict[str, list[nn.Module]]:
        return {"encoder": [self.encoder], "decoder": [self.decoder.stages],
                "head": [self.decoder.seg_layers]}

    def analysis_layers(self) -> dict[str, list[str]]:
        # The first, middle (the shallower of two) and last stage, the decoder's deep to
        # shallow; with fewer than three stages, blocks of the finest stage stand in.
        n_encoder, n_decoder = len(self.encoder.stages), len(self.decoder.stages)
        encoder = [f"encoder.stages.{s}"
                   for s in dict.fromkeys((0, (n_encoder - 1) // 2, n_encoder - 1))]
        decoder = [f"decoder.stages.{s}"
                   for s in dict.fromkeys((n_decoder - 1, (n_decoder - 1) // 2, 0))]
        return {"encoder": with_stand_ins(encoder, [(0, "encoder.stages.0.0")]),
                "decoder": with_stand_ins(decoder, [(-1, "decoder.stages.0.block.first"),
                                                    (0, "decoder.stages.0.up")])}

    @classmethod
    def check_own_settings(cls, settings) -> None:
        check_output_at_patch_size(cls.__name__, settings["strides"], settings.get("kernel_sizes"))
        _options(cls.__name__, *(settings[key] for key in OWN_KWARGS))

    @classmethod
    def check_coarsest_stage(cls, patch_size, settings) -> None:
        # The coarsest map is the bottleneck's, which holds autofocus layers: along an axis no
        # longer than the smallest rate, every branch sees only its own voxel, and the layer
        # has no scales left to choose from.
        strides = settings["strides"]
        rates = _options(cls.__name__, *(settings[key] for key in OWN_KWARGS)).dilations
        bottleneck = [size // factor for size, factor in
                      zip(patch_size, cumulative_strides(strides)[-1])]
        kernel = triple((settings.get("kernel_sizes") or [3] * len(strides))[-1])
        for axis, (size, k) in enumerate(zip(bottleneck, kernel)):
            if k > 1 and size <= min(rates):
                raise UserError(
                    f"{cls.__name__}: patch size {list(patch_size)} leaves a {bottleneck} map "
                    f"at the bottleneck; on axis {axis} ({size} voxels) every dilation rate of "
                    f"its autofocus layers (smallest {min(rates)}) jumps past the map, so the "
                    "layers cannot choose a scale. Use a larger patch size, fewer stages or "
                    "smaller dilations")


def _options(name: str, dilations, attention_stop_gradient, layers_per_block
             ) -> AutofocusOptions:
    """The options, or UserError naming the first of them the network cannot use."""
    try:
        rates = tuple(int(d) for d in dilations)
        exact = all(r == d for r, d in zip(rates, dilations))
    except (TypeError, ValueError):
        rates, exact = (), False
    if len(rates) < 2 or not exact or min(rates) < 1 or len(set(rates)) != len(rates):
        raise UserError(f"{name}: dilations must be at least two distinct positive integers "
                        f"(the paper's {list(PAPER_DILATIONS)}), not {dilations!r}")
    if not isinstance(attention_stop_gradient, bool):
        raise UserError(f"{name}: attention_stop_gradient must be true or false, not "
                        f"{attention_stop_gradient!r}")
    if layers_per_block not in (1, 2) or isinstance(layers_per_block, bool):
        raise UserError(f"{name}: layers_per_block must be 1 or 2 (autofocus layers per "
                        f"residual block), not {layers_per_block!r}")
    return AutofocusOptions(rates, attention_stop_gradient, layers_per_block)
