"""V-Net (Milletari, Navab, Ahmadi 2016) on nnU-Net's plans."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_transfer.architectures.analysis_layer_rules import child_names, spread, with_stand_ins
from nnunet_transfer.architectures.blocks import SkipDecoder, outputs_of_each_stage
from nnunet_transfer.architectures.conv_settings import ConvSettings
from nnunet_transfer.architectures.stage_settings import check_counts_per_stage, triple
from nnunet_transfer.architectures.transfer_network import TransferNetwork
from nnunet_transfer.errors import UserError

PAPER_CONVS_PER_STAGE = (1, 2, 3, 3, 3)


def stage_kernel(plans_kernel: Sequence[int], kernel_size: int) -> tuple[int, int, int]:
    """V-Net's cubic kernel, except on the axes where the plans use 1: nnU-Net plans a 1 there
    because that axis is too coarse (anisotropic spacing) for a spatial convolution."""
    return tuple(1 if k == 1 else kernel_size for k in triple(plans_kernel))


def activation(settings: ConvSettings, channels: int) -> nn.Module:
    """The plans' non-linearity; PReLU gets one slope per channel, as Caffe's PReLU (the
    original's framework) has by default, unless the plans fix `num_parameters`."""
    if settings.nonlin is nn.PReLU and "num_parameters" not in settings.nonlin_kwargs:
        kwargs = {k: v for k, v in settings.nonlin_kwargs.items() if k != "inplace"}
        return nn.PReLU(num_parameters=channels, **kwargs)
    return settings.activation()


class ConvNormAct(nn.Sequential):
    def __init__(self, settings: ConvSettings, in_channels: int, out_channels: int, kernel):
        super().__init__()
        self.conv = settings.conv(in_channels, out_channels, kernel)
        self.norm = settings.norm(out_channels)
        self.act = activation(settings, out_channels)


class ResampleNormAct(nn.Sequential):
    """Strided (or transposed) convolution with kernel = stride, so that the windows neither
    overlap nor leave gaps, as the original's 2x2x2 / stride 2 (de-)convolutions."""

    def __init__(self, settings: ConvSettings, in_channels: int, out_channels: int, stride,
                 transposed: bool = False):
        super().__init__()
        stride = triple(stride)
        conv_class = nn.ConvTranspose3d if transposed else nn.Conv3d
        self.conv = conv_class(in_channels, out_channels, stride, stride=stride,
                               bias=settings.conv_bias)
        self.norm = settings.norm(out_channels)
        self.act = activation(settings, out_channels)


class ResidualConvs(nn.Module):
    """A V-Net stage's convolutions; the stage input is added to the last one's output, so the
    stage learns a residual function. An input with fewer (or more) channels than the stage
    (only the first stage's image input) is tiled over the stage's channels, as the original
    replicated its one-channel volume 16 times."""

    def __init__(self, settings: ConvSettings, in_channels: int, channels: int, n_convs: int,
                 kernel):
        super().__init__()
        self.channels = channels
        self.convs = nn.Sequential(*[
            ConvNormAct(settings, in_channels if i == 0 else channels, channels, kernel)
            for i in range(n_convs)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) + tile_channels(x, self.channels)


def tile_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    repeats = -(-channels // x.shape[1])
    return x.repeat(1, repeats, 1, 1, 1)[:, :channels]


class DownStage(nn.Module):
    """Strided convolution to the coarser resolution, then the residual convolutions."""

    def __init__(self, settings: ConvSettings, in_channels: int, channels: int, stride,
                 n_convs: int, kernel):
        super().__init__()
        self.down = ResampleNormAct(settings, in_channels, channels, stride)
        self.block = ResidualConvs(settings, channels, channels, n_convs, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.down(x))


class UpStage(nn.Module):
    """Transposed convolution to the finer resolution with `channels` maps, concatenated with
    the encoder stage's output (`channels` maps), then residual convolutions on the
    2 * `channels` maps, as the right half of the original."""

    def __init__(self, settings: ConvSettings, in_channels: int, channels: int, stride,
                 n_convs: int, kernel):
        super().__init__()
        self.up = ResampleNormAct(settings, in_channels, channels, stride, transposed=True)
        self.block = ResidualConvs(settings, 2 * channels, 2 * channels, n_convs, kernel)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class VNetEncoder(nn.Module):
    def __init__(self, settings: ConvSettings, input_channels: int, features: Sequence[int],
                 strides, kernels, convs_per_stage: Sequence[int]):
        super().__init__()
        stages = [ResidualConvs(settings, input_channels, features[0], convs_per_stage[0],
                                kernels[0])]
        for i in range(1, len(features)):
            stages.append(DownStage(settings, features[i - 1], features[i], strides[i],
                                    convs_per_stage[i], kernels[i]))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return outputs_of_each_stage(self.stages, x)


def up_stages(settings: ConvSettings, features: Sequence[int], strides, kernels,
              convs_per_stage: Sequence[int]) -> list[UpStage]:
    """The right half's stages in the order they run, the deepest first."""
    stages, in_channels = [], features[-1]
    for level in range(len(features) - 2, -1, -1):
        stages.append(UpStage(settings, in_channels, features[level], strides[level + 1],
                              convs_per_stage[level], kernels[level]))
        in_channels = 2 * features[level]
    return stages


class VNet(TransferNetwork):
    """V-Net: F. Milletari, N. Navab, S.-A. Ahmadi (2016), "V-Net: fully convolutional neural
    networks for volumetric medical image segmentation", 3DV 2016.

    What is built, per resolution stage of the plans (stage i has `features_per_stage[i]` = F_i
    maps; the template gives 16, 32, 64, 128, 256 as the paper):
    - left half: stage 0 runs `convs_per_stage[0]` 5x5x5 conv-norm-PReLU layers on the image
      and adds the image (tiled over F_0 channels); stage i > 0 down-samples with a strided
      convolution (kernel = stride = the plans' stride) to F_i maps, runs `convs_per_stage[i]`
      5x5x5 convolutions and adds the strided convolution's output (residual stages; the
      paper's 1, 2, 3, 3, 3 convolutions). Each stage's output is forwarded to the right half.
    - right half, deepest first: transposed convolution (kernel = stride) to F_i maps,
      concatenation with the left stage i output (2 F_i maps), `convs_per_stage[i]` 5x5x5
      convolutions at 2 F_i maps, plus the concatenation (residual), as the paper's 256, 128,
      64, 32 maps with 3, 3, 2, 1 convolutions.
    - a 1x1x1 convolution to the classes at full resolution. No deep supervision (the paper
      has none).

    Encoder / decoder / head split: encoder = the left half including the deepest stage
    (`encoder`), decoder = the up stages (`decoder`), head = the 1x1x1 convolution (`head`).
    Analysis layers: the outputs (after the residual sum) of three left stages, shallow to
    deep, and of three right stages, deep to shallow.

    Departures from the paper:
    - each convolution is followed by the plans' normalisation (nnU-Net: instance norm); the
      original had none. It is kept so that the net trains under nnU-Net's schedule (SGD,
      lr 1e-2) like every other architecture here.
    - down-sampling uses the plans' strides (e.g. 1x2x2 on anisotropic data) instead of a
      fixed 2x2x2, so any patch nnU-Net plans works; the strided / transposed convolutions
      keep kernel = stride. The number of stages is the plans' (template: at most 5, the
      paper's); `convs_per_stage` is cut to it.
    - 5x5x5 kernels become 1 on the axes where the plans' kernel is 1 (e.g. 1x5x5).
    - images with several channels are tiled over stage 0's F_0 channels for its residual
      sum (the original took one channel, replicated 16 times); with more channels than F_0
      the surplus channels reach stage 0 through its convolution only.
    - the non-linearity is the template's PReLU (one slope per channel, Caffe's default); the
      soft-max and the Dice loss are left to nnU-Net's loss.
    """

    has_deep_supervision = False

    def __init__(self, input_channels: int, num_classes: int, n_stages: int,
                 features_per_stage: Sequence[int], strides, kernel_sizes, conv_op, norm_op,
                 norm_op_kwargs, nonlin, nonlin_kwargs, conv_bias, deep_supervision: bool = False,
                 kernel_size: int = 5, convs_per_stage: Sequence[int] = PAPER_CONVS_PER_STAGE):
        super().__init__()
        self.check_settings(locals())
        settings = ConvSettings.from_plans(locals())
        features = list(features_per_stage)
        kernels = [stage_kernel(k, kernel_size) for k in kernel_sizes]
        convs = list(convs_per_stage)[:n_stages]
        self.encoder = VNetEncoder(settings, input_channels, features, strides, kernels, convs)
        self.decoder = SkipDecoder(up_stages(settings, features, strides, kernels, convs),
                                   deep_supervision)
        # The last up stage's residual convolutions run on 2 * F_0 maps.
        self.head = settings.head(2 * features[0], num_classes)

    def forward(self, x: torch.Tensor):
        return self.outputs([self.head(self.decoder(self.encoder(x)))])

    def analysis_layers(self) -> dict[str, list[str]]:
        # Spread over the stages; 2- or 3-stage plans add the output of the first transposed
        # convolution and, with a single up stage, that of its first convolution.
        encoder = with_stand_ins(child_names("encoder.stages", self.encoder.stages),
                                 [(1, "encoder.stages.1.down")])
        decoder = with_stand_ins(child_names("decoder.stages", self.decoder.stages),
                                 [(0, "decoder.stages.0.up"),
                                  (1, "decoder.stages.0.block.convs.0")])
        return {"encoder": spread(encoder), "decoder": spread(decoder)}

    @classmethod
    def check_own_settings(cls, settings) -> None:
        kernel_size = settings["kernel_size"]
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise UserError(f"VNet: kernel_size must be an odd positive integer (the paper: "
                            f"5), not {kernel_size!r}")
        check_counts_per_stage("VNet", "convs_per_stage", settings["convs_per_stage"],
                               settings["n_stages"], "convolution", "vnet")
