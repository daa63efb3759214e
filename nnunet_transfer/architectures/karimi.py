"""The residual FCN of Karimi, Warfield and Gholipour (2021), on nnU-Net's plans."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from nnunet_transfer.architectures.analysis_layer_rules import child_names, with_stand_ins
from nnunet_transfer.architectures.blocks import ResidualBlock, SkipDecoder, outputs_of_each_stage
from nnunet_transfer.architectures.conv_settings import ConvSettings
from nnunet_transfer.architectures.stage_settings import check_output_at_patch_size, triple
from nnunet_transfer.architectures.transfer_network import TransferNetwork
from nnunet_transfer.errors import UserError

# Residual units per encoder stage at the paper's five stages: with the entry convolution of
# every stage and the 1x1x1 projections of the extra connections this is the 33 encoder
# convolutions the paper reports. The high-resolution stages get the extra units: that is
# where the encoder's work is, and a frozen random encoder saves exactly that work.
PAPER_UNITS_PER_STAGE = (3, 3, 2, 2, 2)


class DownsampledShortcut(nn.Module):
    """The extra connection between encoder feature maps: the previous stage's output,
    average-pooled by the stage's stride (every voxel contributes, unlike a strided 1x1x1
    convolution) and projected to the stage's channels."""

    def __init__(self, settings: ConvSettings, in_channels: int, channels: int, stride):
        super().__init__()
        stride = triple(stride)
        self.pool = nn.AvgPool3d(stride, stride)
        self.project = settings.conv(in_channels, channels, 1)
        self.norm = settings.norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.project(self.pool(x)))


class EncoderStage(nn.Module):
    """Entry convolution (strided by the plans' stride from the second stage on), a residual
    block of `n_units` residual units whose input is added to its output (the long skip), and
    from the second stage on the down-sampled previous stage added as well."""

    def __init__(self, settings: ConvSettings, in_channels: int, channels: int, kernel, stride,
                 n_units: int, shortcut: bool):
        super().__init__()
        self.entry = settings.conv_norm_act(in_channels, channels, kernel, stride)
        self.units = nn.Sequential(*[ResidualBlock(settings, channels, kernel)
                                     for _ in range(n_units)])
        self.shortcut = (DownsampledShortcut(settings, in_channels, channels, stride)
                         if shortcut else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        entry = self.entry(x)
        out = self.units(entry) + entry
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


class ConcatConv(nn.Module):
    """conv(cat(upsampled, skip)) written as conv_up(upsampled) + conv_skip(skip).

    The same function (the two kernels are the two halves of the concatenated kernel, and
    `he_init` draws them as one), but when the encoder is frozen the skip is a constant and
    autograd computes no input gradient for it: half of this convolution's backward is saved
    without any hook into the training code."""

    def __init__(self, settings: ConvSettings, up_channels: int, skip_channels: int,
                 out_channels: int, kernel):
        super().__init__()
        self.conv_up = settings.conv(up_channels, out_channels, kernel)
        self.conv_skip = settings.conv(skip_channels, out_channels, kernel, bias=False)

    def forward(self, upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_up(upsampled) + self.conv_skip(skip)

    def he_init(self) -> None:
        """He init with the fan-in of the concatenated convolution, as TransferNetwork.initialize
        would give the single convolution this module stands for."""
        fan_in = sum(c.weight[0].numel() for c in (self.conv_up, self.conv_skip))
        std = nn.init.calculate_gain("leaky_relu", 1e-2) / math.sqrt(fan_in)
        for conv in (self.conv_up, self.conv_skip):
            nn.init.normal_(conv.weight, 0.0, std)


class FuseBlock(nn.Module):
    """The first block of a decoder stage: ConcatConv, norm, non-linearity."""

    def __init__(self, settings: ConvSettings, up_channels: int, skip_channels: int,
                 channels: int, kernel):
        super().__init__()
        self.conv = ConcatConv(settings, up_channels, skip_channels, channels, kernel)
        self.norm = settings.norm(channels)
        self.act = settings.activation()

    def forward(self, upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(upsampled, skip)))


class DecoderStage(nn.Module):
    """Transposed convolution (kernel = stride) up to the skip's resolution, a FuseBlock over
    the up-sampled map and the encoder's skip, then `n_convs - 1` conv-norm-act blocks."""

    def __init__(self, settings: ConvSettings, below_channels: int, channels: int, kernel,
                 stride, n_convs: int):
        super().__init__()
        stride = triple(stride)
        self.upsample = nn.ConvTranspose3d(below_channels, channels, stride, stride,
                                           bias=settings.conv_bias)
        self.fuse = FuseBlock(settings, channels, channels, channels, kernel)
        self.convs = nn.Sequential(*[settings.conv_norm_act(channels, channels, kernel)
                                     for _ in range(n_convs - 1)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(self.fuse(self.upsample(x), skip))


class KarimiEncoder(nn.Module):
    def __init__(self, settings: ConvSettings, input_channels: int, features: Sequence[int],
                 strides, kernel_sizes, units_per_stage: Sequence[int]):
        super().__init__()
        channels = [input_channels, *features]
        self.stages = nn.ModuleList(
            EncoderStage(settings, channels[s], channels[s + 1], kernel_sizes[s], strides[s],
                         units_per_stage[s], shortcut=s > 0)
            for s in range(len(features)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return outputs_of_each_stage(self.stages, x)


class KarimiNet(TransferNetwork):
    """The residual FCN of Karimi, Warfield and Gholipour, "Transfer learning in medical image
    segmentation: new insights from analysis of the dynamics of model parameters and learned
    representations", Artificial Intelligence in Medicine 116, 2021: a 3D U-Net / V-Net-like
    network with 14 features at full resolution doubling per stage (14 ... 224 at five
    stages), ReLU, 3x3x3 kernels, residual blocks with short and long skips in the encoder,
    extra connections between encoder feature maps and concatenation skips to the decoder.

    What is built, per stage s (features F_s, the plans' stride and kernel of stage s):

    - encoder stage: an entry conv-norm-act (from the image at s = 0; strided by the plans'
      stride, which down-samples, from s = 1 on), a residual block of `units_per_stage[s]`
      residual units (two convolutions around a short identity skip each) with a long skip
      adding the block's input to its output, and from s = 1 on the extra connection: the
      previous stage's output, average-pooled by the stride and projected by a 1x1x1
      convolution, added to the stage's output;
    - decoder stage (s = n-2 ... 0): a transposed convolution (kernel = stride) from stage
      s+1, a convolution over the concatenation of that map and the encoder's stage-s output
      (computed as the sum of two convolutions, see ConcatConv), then
      `decoder_convs_per_stage - 1` more conv-norm-act blocks;
    - head: a 1x1x1 convolution at full resolution.

    At five stages with the template's defaults: 33 encoder convolutions (5 entries, 24 in
    the residual units, 4 projections) and 17 decoder ones (per stage the transposed
    convolution, the concatenation convolution and two more; plus the 1x1x1 head), against
    the paper's 33 and 18.

    Split: encoder = the encoder stages (with the bottleneck), decoder = the decoder stages
    (transposed convolutions included), head = the 1x1x1 output convolution. Analysis layers:
    the outputs of encoder stages 0, 1, 2 and of the decoder stages at the same resolutions,
    deepest first (finer blocks when the plans have fewer stages).

    Departures from the paper: normalisation is the plans' (nnU-Net's instance norm); down-
    and up-sampling use the plans' per-stage strides and kernel sizes (so anisotropic plans
    with 1x3x3 kernels and any patch nnU-Net plans work) instead of fixed 2x steps on 96^3
    blocks; the number of stages is the plans' (at most five). The exact wiring of the extra
    encoder connections (here: pooled and projected, added) and the split of the encoder's
    convolutions into residual units are our reading of the paper's description, chosen to
    match its layer counts. No deep supervision, as in the paper.
    """

    has_deep_supervision = False

    def __init__(self, input_channels: int, num_classes: int, n_stages: int,
                 features_per_stage: Sequence[int], strides, kernel_sizes, conv_op=nn.Conv3d,
                 norm_op=nn.InstanceNorm3d, norm_op_kwargs=None, nonlin=nn.ReLU,
                 nonlin_kwargs=None, conv_bias: bool = True, deep_supervision: bool = False,
                 units_per_stage: Sequence[int] = PAPER_UNITS_PER_STAGE,
                 decoder_convs_per_stage: int = 3):
        super().__init__()
        self.check_settings(locals())
        settings = ConvSettings.from_plans(locals())
        features = list(features_per_stage)
        self.encoder = KarimiEncoder(settings, input_channels, features, strides, kernel_sizes,
                                     list(units_per_stage)[:n_stages])
        self.decoder = SkipDecoder(
            (DecoderStage(settings, features[s + 1], features[s], kernel_sizes[s], strides[s + 1],
                          decoder_convs_per_stage)
             for s in reversed(range(len(features) - 1))), deep_supervision)
        self.head = settings.head(features[0], num_classes)

    def forward(self, x: torch.Tensor):
        return self.outputs([self.head(self.decoder(self.encoder(x)))])

    @staticmethod
    def initialize(module: nn.Module) -> None:
        TransferNetwork.initialize(module)
        # nn.Module.apply visits a ConcatConv after its two convolutions: redraw them as one.
        if isinstance(module, ConcatConv):
            module.he_init()

    def analysis_layers(self) -> dict[str, list[str]]:
        # The three finest resolutions on each side; with fewer stages, blocks of the finest
        # encoder stage and of the finest decoder stage stand in.
        last = len(self.decoder.stages) - 1
        encoder = with_stand_ins(child_names("encoder.stages", self.encoder.stages),
                                 [(0, "encoder.stages.0.entry")])
        decoder = with_stand_ins(child_names("decoder.stages", self.decoder.stages),
                                 [(-1, f"decoder.stages.{last}.fuse"),
                                  (0, f"decoder.stages.{last}.upsample")])
        return {"encoder": encoder[:3], "decoder": decoder[-3:]}

    @classmethod
    def check_own_settings(cls, settings) -> None:
        name, n_stages = cls.__name__, settings["n_stages"]
        units, convs = settings["units_per_stage"], settings["decoder_convs_per_stage"]
        if len(units) < n_stages or any(int(u) < 0 for u in units):
            raise UserError(f"{name}: units_per_stage {list(units)} must give a residual unit "
                            f"count (>= 0) for each of the {n_stages} stages")
        if int(convs) < 1:
            raise UserError(f"{name}: decoder_convs_per_stage must be at least 1")
        if n_stages <= 3 and int(convs) < 2:
            raise UserError(f"{name}: with {n_stages} stages the decoder needs "
                            "decoder_convs_per_stage >= 2 to offer three distinct analysis "
                            "layers")
        check_output_at_patch_size(name, settings["strides"], settings.get("kernel_sizes"))
