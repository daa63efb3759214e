"""FC-DenseNet, "the one hundred layers Tiramisu" (Jegou et al. 2017), in 3D on nnU-Net's plans."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_transfer.architectures.analysis_layer_rules import child_names, spread, with_stand_ins
from nnunet_transfer.architectures.conv_settings import ConvSettings
from nnunet_transfer.architectures.stage_settings import check_counts_per_stage, triple
from nnunet_transfer.architectures.transfer_network import TransferNetwork
from nnunet_transfer.errors import UserError

DEFAULT_GROWTH_RATE = 12
DEFAULT_LAYERS_PER_BLOCK = (3, 3, 3, 3, 3)
DEFAULT_DROPOUT = 0.2


class DenseLayer(nn.Sequential):
    """Norm, non-linearity, convolution to `growth_rate` new maps, dropout (the paper's
    BN-ReLU-3x3 conv-dropout 0.2 layer)."""

    def __init__(self, settings: ConvSettings, in_channels: int, growth_rate: int, kernel,
                 dropout_p: float):
        super().__init__()
        self.norm = settings.norm(in_channels)
        self.act = settings.activation()
        self.conv = settings.conv(in_channels, growth_rate, kernel)
        if dropout_p > 0:
            self.dropout = nn.Dropout(dropout_p)


class DenseBlock(nn.Module):
    """Each layer takes the concatenation of the block input and of every earlier layer's
    maps. Returns only the `n_layers * growth_rate` new maps: the down path concatenates them
    to the block input itself, the up path passes them alone to the next transition up (so
    the maps do not pile up along the up path)."""

    def __init__(self, settings: ConvSettings, in_channels: int, growth_rate: int,
                 n_layers: int, kernel, dropout_p: float):
        super().__init__()
        self.out_channels = growth_rate * n_layers
        self.layers = nn.ModuleList(
            DenseLayer(settings, in_channels + i * growth_rate, growth_rate, kernel, dropout_p)
            for i in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = []
        for layer in self.layers:
            new.append(layer(torch.cat([x, *new], dim=1) if new else x))
        return torch.cat(new, dim=1)


class TransitionDown(nn.Sequential):
    """Norm, non-linearity, 1x1x1 convolution keeping the channels, dropout, max pooling by
    the plans' stride (the paper's 2x2 pooling)."""

    def __init__(self, settings: ConvSettings, channels: int, stride, dropout_p: float):
        super().__init__()
        self.norm = settings.norm(channels)
        self.act = settings.activation()
        self.conv = settings.conv(channels, channels, 1)
        if dropout_p > 0:
            self.dropout = nn.Dropout(dropout_p)
        self.pool = nn.MaxPool3d(triple(stride), stride=triple(stride))


class TransitionUp(nn.ConvTranspose3d):
    """Transposed convolution by the plans' stride, keeping the channels. The kernel is
    2 * stride - 1 per axis (the paper's 3x3 for stride 2; 1 where the axis is not
    up-sampled), padded so that the output is exactly stride times the input."""

    def __init__(self, settings: ConvSettings, channels: int, stride):
        stride = triple(stride)
        kernel = tuple(2 * s - 1 for s in stride)
        padding = tuple(s // 2 for s in stride)  # ceil((s - 1) / 2)
        output_padding = tuple(2 * p - (s - 1) for p, s in zip(padding, stride))
        super().__init__(channels, channels, kernel, stride=stride, padding=padding,
                         output_padding=output_padding, bias=settings.conv_bias)


class TiramisuEncoder(nn.Module):
    """First convolution, dense blocks with transitions down, and the bottleneck block."""

    def __init__(self, settings: ConvSettings, input_channels: int, first_channels: int,
                 growth_rate: int, layers: Sequence[int], strides, kernels, dropout_p: float):
        super().__init__()
        self.first_conv = settings.conv(input_channels, first_channels, kernels[0])
        blocks, downs, channels, self.skip_channels = [], [], first_channels, []
        for level, n_layers in enumerate(layers):
            block = DenseBlock(settings, channels, growth_rate, n_layers, kernels[level],
                               dropout_p)
            blocks.append(block)
            if level < len(layers) - 1:
                channels += block.out_channels
                self.skip_channels.append(channels)
                downs.append(TransitionDown(settings, channels, strides[level + 1], dropout_p))
        self.blocks = nn.ModuleList(blocks)
        self.downs = nn.ModuleList(downs)
        self.out_channels = blocks[-1].out_channels

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The skip of every level but the deepest, and the bottleneck block's new maps."""
        x = self.first_conv(x)
        skips = []
        for block, down in zip(self.blocks, self.downs):
            x = torch.cat([x, block(x)], dim=1)
            skips.append(x)
            x = down(x)
        return skips, self.blocks[-1](x)


class TiramisuDecoder(nn.Module):
    """Transitions up and dense blocks in the order they run (index 0 is the deepest)."""

    def __init__(self, settings: ConvSettings, in_channels: int, skip_channels: Sequence[int],
                 growth_rate: int, layers: Sequence[int], strides, kernels, dropout_p: float,
                 deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        ups, blocks = [], []
        for level in range(len(skip_channels) - 1, -1, -1):
            ups.append(TransitionUp(settings, in_channels, strides[level + 1]))
            block_in = in_channels + skip_channels[level]
            blocks.append(DenseBlock(settings, block_in, growth_rate, layers[level],
                                     kernels[level], dropout_p))
            in_channels = blocks[-1].out_channels
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)
        # The last block's input is kept with its new maps for the output layer, as the paper.
        self.out_channels = block_in + in_channels

    def forward(self, skips: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips)):
            stack = torch.cat([up(x), skip], dim=1)
            x = block(stack)
        return torch.cat([stack, x], dim=1)


class Tiramisu(TransferNetwork):
    """FC-DenseNet: S. Jegou, M. Drozdzal, D. Vazquez, A. Romero, Y. Bengio (2017), "The one
    hundred layers Tiramisu: fully convolutional DenseNets for semantic segmentation", CVPR
    workshops 2017; built in 3D.

    What is built (k = `growth_rate`, L = `layers_per_block`, one entry per stage of the
    plans, shallow to deep, entries beyond the plans' stages dropped; the deepest is the
    bottleneck and the up path mirrors the others, as the paper's 4-5-7-10-12-15-12-10-7-5-4):
    - a first convolution (the plans' kernel) to `features_per_stage[0]` maps;
    - down path, at each stage but the deepest: a dense block of L[i] layers (norm, ReLU,
      convolution with the plans' kernel to k maps, dropout), each layer taking all earlier
      maps of the block; the block's input and new maps are concatenated (the skip), then a
      transition down: norm, ReLU, 1x1x1 convolution, dropout, max pooling by the plans'
      stride;
    - bottleneck: a dense block of L[-1] layers, of which only the new maps go on;
    - up path, deepest first: transition up (transposed convolution by the plans' stride on
      the previous block's new maps only), concatenation with the skip, a dense block of L[i]
      layers; only its new maps go on, except at full resolution, where the block's input and
      new maps both reach the 1x1x1 output convolution (as the paper's last block).
    No deep supervision (the paper has none).

    Encoder / decoder / head split: encoder = first convolution, down-path blocks, transitions
    down and the bottleneck block (`encoder`); decoder = transitions up and up-path blocks
    (`decoder`); head = the 1x1x1 output convolution (`head`). Analysis layers: the new maps
    of three encoder dense blocks (shallow to deep, the bottleneck last) and of three
    up-path blocks (deep to shallow).

    Departures from the paper:
    - 3D; the plans' normalisation (nnU-Net: instance norm) instead of batch norm; the
      plans' kernels (3x3x3, or 1x3x3 where nnU-Net plans anisotropic kernels); pooling and
      transposed convolutions by the plans' strides (the transposed convolution's kernel is
      2 * stride - 1: 3 for stride 2 as the paper, 1 on an axis that is not up-sampled);
      the number of stages is the plans' (template: at most 5, the paper has 6 levels).
    - widths: only `features_per_stage[0]` is used (the first convolution's width; the
      later widths follow from k and L). Template: 24 first maps, k = 12, 3 layers per
      block, dropout 0.2 (the paper: 48 first maps, k = 12 or 16, 4 to 15 layers), so that it
      trains on a CPU; the paper's FC-DenseNet103 is k = 16 with
      `layers_per_block` [4, 5, 7, 10, 12, 15] and first width 48.
    - ReLU is set by the template (the paper fixes it); soft-max is left to nnU-Net's loss.
    """

    has_deep_supervision = False

    def __init__(self, input_channels: int, num_classes: int, n_stages: int,
                 features_per_stage: Sequence[int], strides, kernel_sizes, conv_op, norm_op,
                 norm_op_kwargs, nonlin, nonlin_kwargs, conv_bias, deep_supervision: bool = False,
                 growth_rate: int = DEFAULT_GROWTH_RATE,
                 layers_per_block: Sequence[int] = DEFAULT_LAYERS_PER_BLOCK,
                 dropout_p: float = DEFAULT_DROPOUT):
        super().__init__()
        self.check_settings(locals())
        settings = ConvSettings.from_plans(locals())
        layers = list(layers_per_block)[:n_stages]
        self.encoder = TiramisuEncoder(settings, input_channels, features_per_stage[0],
                                       growth_rate, layers, strides, kernel_sizes, dropout_p)
        self.decoder = TiramisuDecoder(settings, self.encoder.out_channels,
                                       self.encoder.skip_channels, growth_rate, layers, strides,
                                       kernel_sizes, dropout_p, deep_supervision)
        self.head = settings.head(self.decoder.out_channels, num_classes)

    def forward(self, x: torch.Tensor):
        return self.outputs([self.head(self.decoder(*self.encoder(x)))])

    def transfer_stages(self) -> dict[str, list[list[nn.Module]]]:
        """A stage is a dense block with its transition (down after it in the encoder, the
        first convolution joining the first block; up before it in the decoder)."""
        encoder, decoder = self.encoder, self.decoder
        downs = [*encoder.downs, None]   # the bottleneck block has no transition down
        stages = [[block] + ([down] if down is not None else [])
                  for block, down in zip(encoder.blocks, downs)]
        stages[0] = [encoder.first_conv, *stages[0]]
        return {"encoder": stages,
                "decoder": [[up, block] for up, block in zip(decoder.ups, decoder.blocks)]}

    def analysis_layers(self) -> dict[str, list[str]]:
        # Spread over the dense blocks; 2- or 3-stage plans add the first transition up and,
        # with a single up block, the output of its first layer.
        encoder = with_stand_ins(child_names("encoder.blocks", self.encoder.blocks),
                                 [(1, "encoder.downs.0")])
        decoder = with_stand_ins(child_names("decoder.blocks", self.decoder.blocks),
                                 [(0, "decoder.ups.0"), (1, "decoder.blocks.0.layers.0")])
        return {"encoder": spread(encoder), "decoder": spread(decoder)}

    @classmethod
    def check_own_settings(cls, settings) -> None:
        growth_rate, dropout_p = settings["growth_rate"], settings["dropout_p"]
        if not isinstance(growth_rate, int) or growth_rate < 1:
            raise UserError(f"Tiramisu: growth_rate must be a positive integer, not "
                            f"{growth_rate!r}")
        check_counts_per_stage("Tiramisu", "layers_per_block", settings["layers_per_block"],
                               settings["n_stages"], "layer", "tiramisu")
        if not 0 <= dropout_p < 1:
            raise UserError(f"Tiramisu: dropout_p must lie in [0, 1), not {dropout_p!r}")
