"""The small 3D U-Net of Weatheritt, Rueckert and Wolz (2020), on nnU-Net's plans."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunet_transfer.architectures.analysis_layer_rules import child_names, with_stand_ins
from nnunet_transfer.architectures.blocks import SkipDecoder
from nnunet_transfer.architectures.conv_settings import ConvSettings
from nnunet_transfer.architectures.stage_settings import (
    check_output_at_patch_size, cumulative_strides, triple)
from nnunet_transfer.architectures.transfer_network import TransferNetwork
from nnunet_transfer.errors import UserError


def conv_blocks(settings: ConvSettings, channels: Sequence[int], kernel) -> nn.Sequential:
    """conv-norm-ReLU blocks taking channels[0] -> channels[1] -> ... -> channels[-1]."""
    return nn.Sequential(*[settings.conv_norm_act(c_in, c_out, kernel)
                           for c_in, c_out in zip(channels[:-1], channels[1:])])


class WeatherittEncoder(nn.Module):
    """stages[s]: the conv blocks at resolution s; pools[s - 1]: the max-pooling (kernel =
    stride = the plans' stride of stage s) in front of stages[s], keeping its indices for the
    decoder's max-unpooling."""

    def __init__(self, settings: ConvSettings, input_channels: int, features: Sequence[int],
                 strides, kernel_sizes, convs_per_stage: int):
        super().__init__()
        n = len(features)
        stages = []
        for s in range(n):
            c_in = input_channels if s == 0 else features[s - 1]
            widths = [c_in] + [features[s]] * convs_per_stage
            if s == n - 1:
                # The bottleneck ends at the width of the stage above: max-unpooling puts back
                # exactly the channels that stage's pooling took.
                widths[-1] = features[s - 1]
            stages.append(conv_blocks(settings, widths, kernel_sizes[s]))
        self.stages = nn.ModuleList(stages)
        self.pools = nn.ModuleList(
            nn.MaxPool3d(triple(strides[s]), triple(strides[s]), return_indices=True)
            for s in range(1, n))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The output of every stage (skips and bottleneck) and the pooling indices."""
        x = self.stages[0](x)
        outputs, indices = [x], []
        for pool, stage in zip(self.pools, self.stages[1:]):
            x, where = pool(x)
            x = stage(x)
            outputs.append(x)
            indices.append(where)
        return outputs, indices


class UnpoolStage(nn.Module):
    """Max-unpooling with the encoder's indices (each value goes back to where its maximum
    was, zeros elsewhere), concatenation with the encoder's map at that resolution, then
    conv-norm-ReLU blocks; the first one already reduces to `out_channels`, the width the next
    finer stage's unpooling needs."""

    def __init__(self, settings: ConvSettings, channels: int, out_channels: int, kernel,
                 stride, n_convs: int):
        super().__init__()
        stride = triple(stride)
        self.unpool = nn.MaxUnpool3d(stride, stride)
        self.convs = conv_blocks(settings, [2 * channels] + [out_channels] * n_convs, kernel)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, indices: torch.Tensor
                ) -> torch.Tensor:
        # Under autocast max_unpool3d returns float32 while the skip may be half precision.
        upsampled = self.unpool(x, indices, output_size=skip.shape[2:]).to(skip.dtype)
        return self.convs(torch.cat([upsampled, skip], dim=1))


class WeatherittUNet(TransferNetwork):
    """The small 3D U-Net of Weatheritt, Rueckert and Wolz, "Transfer learning for brain
    segmentation: pre-task selection and data limitations", Medical Image Understanding and
    Analysis (MIUA) 2020: conv-norm-ReLU blocks, max-pooling in the encoder, max-unpooling
    with the pooling indices in the decoder (no learned up-sampling, which keeps the network
    small: the paper reports about 220k parameters), a 1x1x1 output convolution.

    What is built, with features F_s per stage (8, 16, 32, 64 by default):

    - encoder stage s: `convs_per_stage` conv-norm-ReLU blocks (F_{s-1} -> F_s -> F_s), preceded
      from s = 1 on by max-pooling with kernel = stride = the plans' stride of stage s (no
      pooling along an axis whose stride is 1); the last stage (bottleneck) ends at F_{s-1}
      channels, since unpooling restores exactly the pooled channels;
    - decoder stage s (s = n-2 ... 0): max-unpooling with the indices of the pooling below
      stage s, concatenation with the encoder's stage-s output, `decoder_convs_per_stage`
      conv-norm-ReLU blocks, the first of which reduces 2 F_s to F_{s-1} (F_0 at s = 0);
    - head: 1x1x1 convolution.

    Parameters at the template's defaults in the setting we assume for the paper (one T1
    input channel, four resolutions, 8 ... 64 features, two classes): 213,594, against the
    ~220k reported. The channel layout (where the decoder reduces its width) is our choice,
    made to match the reported size with the stated building blocks; it is not taken from a
    layer table.

    Split: encoder = the encoder stages with the bottleneck (the part the paper freezes when
    fine-tuning), decoder = the unpooling stages, head = the 1x1x1 convolution. Analysis
    layers: the outputs of encoder stages 0, 1, 2 and of the decoder stages at the same
    resolutions, deepest first (finer blocks when the plans have fewer stages).

    Departures from the paper: normalisation is the plans' (nnU-Net's instance norm); pooling
    follows the plans' per-stage strides (anisotropic where nnU-Net plans it so) and kernel
    sizes instead of a fixed 2x2x2 pooling and 3x3x3 kernels; the number of resolutions is the
    plans' (at most four); like nnU-Net's planners it refuses a patch that would be pooled
    below 4 voxels on an axis. No deep supervision, as in the paper.
    """

    has_deep_supervision = False
    # Smallest map a pooled axis may reach: nnU-Net's planners stop pooling an axis at 4 voxels
    # (min_feature_map_size), so smaller bottlenecks only come from plans it did not make.
    min_pooled_size = 4

    def __init__(self, input_channels: int, num_classes: int, n_stages: int,
                 features_per_stage: Sequence[int], strides, kernel_sizes, conv_op=nn.Conv3d,
                 norm_op=nn.InstanceNorm3d, norm_op_kwargs=None, nonlin=nn.ReLU,
                 nonlin_kwargs=None, conv_bias: bool = True, deep_supervision: bool = False,
                 convs_per_stage: int = 2, decoder_convs_per_stage: int = 2):
        super().__init__()
        self.check_settings(locals())
        settings = ConvSettings.from_plans(locals())
        features = list(features_per_stage)
        self.encoder = WeatherittEncoder(settings, input_channels, features, strides,
                                         kernel_sizes, convs_per_stage)
        # Unpooling with the encoder's indices: they reach each stage after its skip.
        self.decoder = SkipDecoder(
            (UnpoolStage(settings, features[s], features[max(s - 1, 0)], kernel_sizes[s],
                         strides[s + 1], decoder_convs_per_stage)
             for s in reversed(range(len(features) - 1))), deep_supervision)
        self.head = settings.head(features[0], num_classes)

    def forward(self, x: torch.Tensor):
        return self.outputs([self.head(self.decoder(*self.encoder(x)))])

    def analysis_layers(self) -> dict[str, list[str]]:
        # The three finest resolutions on each side; with two stages, the blocks of the first
        # stage stand in; with fewer than three decoder stages, the decoder's last conv blocks.
        encoder = with_stand_ins(child_names("encoder.stages", self.encoder.stages),
                                 [(0, "encoder.stages.0.0")])
        decoder = child_names("decoder.stages", self.decoder.stages)
        if len(decoder) < 3:
            decoder = with_stand_ins(
                [f"{name}.convs.{j}" for name, stage in zip(decoder, self.decoder.stages)
                 for j in range(len(stage.convs))], [(0, "decoder.stages.0.convs.0.0")])
        return {"encoder": encoder[:3], "decoder": decoder[-3:]}

    @classmethod
    def check_own_settings(cls, settings) -> None:
        name, n_stages = cls.__name__, settings["n_stages"]
        convs, decoder_convs = settings["convs_per_stage"], settings["decoder_convs_per_stage"]
        if int(convs) < 1 or int(decoder_convs) < 1:
            raise UserError(f"{name}: convs_per_stage and decoder_convs_per_stage must be >= 1")
        if (n_stages - 1) * int(decoder_convs) < 2:
            raise UserError(f"{name}: with {n_stages} stages the decoder needs "
                            "decoder_convs_per_stage >= 2 to offer three distinct analysis layers")
        check_output_at_patch_size(name, settings["strides"], settings.get("kernel_sizes"))

    @classmethod
    def check_coarsest_stage(cls, patch_size, settings) -> None:
        coarsest = cumulative_strides(settings["strides"])[-1]
        for axis, (size, factor) in enumerate(zip(patch_size, coarsest)):
            if factor > 1 and size // factor < cls.min_pooled_size:
                raise UserError(
                    f"{cls.__name__}: patch size {list(patch_size)} is max-pooled to "
                    f"{size // factor} voxel(s) on axis {axis} (1/{factor}); nnU-Net's planners "
                    f"never pool an axis below {cls.min_pooled_size} voxels. Use plans nnU-Net "
                    "fitted to this patch size, fewer stages or a larger patch")
