"""UNet++ (Zhou et al. 2018) on nnU-Net's plans."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunet_transfer.architectures.analysis_layer_rules import with_stand_ins
from nnunet_transfer.architectures.conv_settings import ConvSettings
from nnunet_transfer.architectures.stage_settings import check_output_at_patch_size, triple
from nnunet_transfer.architectures.transfer_network import TransferNetwork


def node_name(i: int, j: int) -> str:
    """Key of node X(i, j) (row i = resolution, column j = position along its skip pathway)."""
    return f"x{i}_{j}"


class ConvUnit(nn.Sequential):
    """The paper's "standard unit" H: two convolutions, each followed by norm and non-linearity."""

    def __init__(self, settings: ConvSettings, in_channels: int, out_channels: int, kernel):
        super().__init__(settings.conv_norm_act(in_channels, out_channels, kernel),
                         settings.conv_norm_act(out_channels, out_channels, kernel))


class NestedEncoder(nn.Module):
    """Backbone column X(i, 0): max-pooling by the plans' stride of row i, then a unit."""

    def __init__(self, settings: ConvSettings, input_channels: int, features: Sequence[int],
                 strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]]):
        super().__init__()
        # Row 0 keeps the input resolution (strides[0] is 1); pooling has no parameters, so
        # this list is the same on every row and the nodes alone carry the weights.
        self.pools = nn.ModuleList(
            nn.Identity() if i == 0 else nn.MaxPool3d(triple(s), stride=triple(s))
            for i, s in enumerate(strides))
        self.nodes = nn.ModuleDict()
        for i, (channels, kernel) in enumerate(zip(features, kernel_sizes)):
            in_channels = input_channels if i == 0 else features[i - 1]
            self.nodes[node_name(i, 0)] = ConvUnit(settings, in_channels, channels, kernel)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        backbone = []
        for i, pool in enumerate(self.pools):
            x = self.nodes[node_name(i, 0)](pool(x))
            backbone.append(x)
        return backbone


class NestedDecoder(nn.Module):
    """The nested, dense skip pathways and the output layers.

    Node X(i, j), j >= 1, is a unit over concat(X(i, 0), ..., X(i, j-1), up(X(i+1, j-1))); each
    node has its own transposed convolution `up[x{i}_{j}]` (kernel = stride = the plans' stride
    between rows i and i+1), as in the authors' code. `seg_layers[i]` is the 1x1x1 output
    convolution on X(i, L-1-i), the last node of row i.
    """

    def __init__(self, settings: ConvSettings, features: Sequence[int],
                 strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]],
                 num_classes: int, deep_supervision: bool):
        super().__init__()
        depth = len(features)
        self.depth = depth
        self.deep_supervision = deep_supervision
        self.up = nn.ModuleDict()
        self.nodes = nn.ModuleDict()
        for j in range(1, depth):
            for i in range(depth - j):
                stride = triple(strides[i + 1])
                self.up[node_name(i, j)] = nn.ConvTranspose3d(
                    features[i + 1], features[i], stride, stride=stride, bias=settings.conv_bias)
                self.nodes[node_name(i, j)] = ConvUnit(
                    settings, (j + 1) * features[i], features[i], kernel_sizes[i])
        # Named as in nnU-Net's U-Nets, so that nnU-Net's own `-pretrained_weights` loader
        # skips the output layers too.
        self.seg_layers = nn.ModuleList(settings.head(features[i], num_classes)
                                        for i in range(depth - 1))

    def output_nodes(self) -> list[str]:
        """The node under each output layer: X(i, L-1-i), full resolution first."""
        return [node_name(i, self.depth - 1 - i) for i in range(self.depth - 1)]

    def forward(self, backbone: list[torch.Tensor]) -> list[torch.Tensor]:
        rows = [[x] for x in backbone]  # rows[i][j] is X(i, j)
        for j in range(1, self.depth):
            for i in range(self.depth - j):
                name = node_name(i, j)
                upsampled = self.up[name](rows[i + 1][j - 1])
                rows[i].append(self.nodes[name](torch.cat([*rows[i], upsampled], dim=1)))
        n_outputs = self.depth - 1 if self.deep_supervision else 1
        return [self.seg_layers[i](rows[i][self.depth - 1 - i]) for i in range(n_outputs)]


class UNetPlusPlus(TransferNetwork):
    """UNet++ of Zhou, Rahman Siddiquee, Tajbakhsh, Liang (2018), "UNet++: a nested U-Net
    architecture for medical image segmentation", DLMIA / ML-CDS (MICCAI workshops), LNCS 11045.

    Built: a grid of nodes X(i, j), row i = resolution, i + j < L (L = n_stages). The backbone
    column X(i, 0) is the encoder: max-pooling then a unit of two conv-norm-act layers with
    `features_per_stage[i]` channels. Every other node X(i, j) is a unit over the concatenation
    of all earlier nodes of its row and the transposed-convolution up-sampling of X(i+1, j-1)
    (the nested dense skip pathways); all nodes of row i have `features_per_stage[i]` channels.

    Deep supervision: the paper puts 1x1 heads on X(0, 1..4), all at full resolution, while
    nnU-Net's loss takes one output per resolution of the plans. Here the full-resolution output
    comes from X(0, L-1), the node that sees every other node, and the auxiliary output at
    resolution i (i = 1 .. L-2) from X(i, L-1-i), the last node of row i; these nodes form the
    decoder path of the deepest U-Net embedded in the grid.

    Split: encoder = the backbone X(i, 0) (pooling has no weights); decoder = every nested node
    X(i, j > 0) and the up-sampling convolutions; head = the output convolutions
    (`decoder.seg_layers`, also the auxiliary ones).

    Departures from the paper (2D, Keras): 3D; kernel sizes and down-sampling factors from
    nnU-Net's plans (anisotropic strides pool and up-sample anisotropically) instead of 3x3
    kernels and 2x2 pooling; the plans' norm and non-linearity (nnU-Net's instance norm and
    leaky ReLU) instead of ELU without norm, and no dropout (the authors' code drops 50 % after
    every conv), so that it trains under nnU-Net's schedule like the other networks; softmax
    logits for nnU-Net's losses instead of a sigmoid output; the feature widths follow the
    template (16 doubling up to 256) instead of 32-512, and the depth follows the plans (at most
    5 rows, as the paper).
    """

    has_deep_supervision = True

    def __init__(self, input_channels: int, num_classes: int, n_stages: int,
                 features_per_stage: Sequence[int], strides: Sequence[Sequence[int]],
                 kernel_sizes: Sequence[Sequence[int]], conv_op=None, norm_op=None,
                 norm_op_kwargs=None, nonlin=None, nonlin_kwargs=None, conv_bias: bool = True,
                 deep_supervision: bool = False):
        super().__init__()
        self.check_settings(locals())
        settings = ConvSettings.from_plans(locals())
        features = [int(f) for f in features_per_stage]
        self.encoder = NestedEncoder(settings, input_channels, features, strides, kernel_sizes)
        self.decoder = NestedDecoder(settings, features, strides, kernel_sizes, num_classes,
                                     deep_supervision)

    def forward(self, x: torch.Tensor):
        return self.outputs(self.decoder(self.encoder(x)))

    def transfer_parts(self) -> dict[str, list[nn.Module]]:
        return {"encoder": [self.encoder], "decoder": [self.decoder.nodes, self.decoder.up],
                "head": [self.decoder.seg_layers]}

    def transfer_stages(self) -> dict[str, list[list[nn.Module]]]:
        """Encoder stage i is the backbone node X(i, 0); decoder stage j is column j of the
        nested pathways (every node X(i, j) with its transposed convolution), in the order
        they run: the last column feeds the full-resolution output."""
        depth, decoder = self.decoder.depth, self.decoder
        columns = [[module for i in range(depth - j)
                    for module in (decoder.up[node_name(i, j)], decoder.nodes[node_name(i, j)])]
                   for j in range(1, depth)]
        return {"encoder": [[self.encoder.nodes[node_name(i, 0)]] for i in range(depth)],
                "decoder": columns}

    def analysis_layers(self) -> dict[str, list[str]]:
        # The first, middle (the shallower of two) and last node of the backbone and of the
        # decoder path X(L-2, 1), ..., X(0, L-1) (deep to shallow); with few rows, X(0, 1) or
        # the layers around it stand in.
        depth = self.decoder.depth
        encoder = [f"encoder.nodes.{node_name(i, 0)}"
                   for i in dict.fromkeys((0, (depth - 1) // 2, depth - 1))]
        path = [f"decoder.nodes.{name}" for name in reversed(self.decoder.output_nodes())]
        decoder = [path[i] for i in dict.fromkeys((0, (len(path) - 1) // 2, len(path) - 1))]
        stand_ins = ([(1, "decoder.nodes.x0_1")] if depth == 3 else
                     [(-1, "decoder.nodes.x0_1.0"), (0, "decoder.up.x0_1")])
        return {"encoder": with_stand_ins(encoder, [(0, "encoder.nodes.x0_0.0")]),
                "decoder": with_stand_ins(decoder, stand_ins)}

    @classmethod
    def check_own_settings(cls, settings) -> None:
        check_output_at_patch_size(cls.__name__, settings["strides"], settings.get("kernel_sizes"))
