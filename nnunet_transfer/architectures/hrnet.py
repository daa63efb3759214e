"""HRNet in 3D: parallel streams at every resolution of the plans, fused after every stage."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_transfer.architectures.blocks import ResidualBlock
from nnunet_transfer.architectures.conv_settings import ConvSettings
from nnunet_transfer.architectures.stage_settings import cumulative_strides, triple
from nnunet_transfer.architectures.transfer_network import TransferNetwork
from nnunet_transfer.errors import UserError

UPSAMPLING_MODES = ("trilinear", "nearest")


def upsample(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """Resample `x` to exactly `size`, the size of the map it joins, so that sums and
    concatenations never depend on how a scale factor would round."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


class UpPath(nn.Module):
    """From a coarser stream to a finer one: 1x1x1 conv and norm at the coarse resolution (cheap),
    then up-sampling to the finer stream's size."""

    def __init__(self, settings: ConvSettings, in_channels: int, out_channels: int, mode: str):
        super().__init__()
        self.conv = settings.conv(in_channels, out_channels, 1)
        self.norm = settings.norm(out_channels)
        self.mode = mode

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return upsample(self.norm(self.conv(x)), size, self.mode)


class DownPath(nn.Module):
    """From a finer stream to a coarser one: one strided conv per resolution step, with the
    plans' stride and kernel of that step. Intermediate steps keep the source width; the last
    maps to the target width and has no activation, since the fused sum is activated once."""

    def __init__(self, settings: ConvSettings, in_channels: int, out_channels: int,
                 steps: Sequence[tuple[Sequence[int], Sequence[int]]]):
        super().__init__()
        layers = []
        for index, (stride, kernel) in enumerate(steps):
            if index < len(steps) - 1:
                layers.append(settings.conv_norm_act(in_channels, in_channels, kernel, stride))
            else:
                layers.append(nn.Sequential(
                    settings.conv(in_channels, out_channels, kernel, stride),
                    settings.norm(out_channels)))
        self.steps = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        # No resampling needed: check_patch_size makes every size divisible by the strides.
        return self.steps(x)


class SameStream(nn.Module):
    """A stream's own contribution to its fused output."""

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return x


class FusedStream(nn.Module):
    """One output of a fusion unit: the activated sum of every stream brought to stream `target`'s
    resolution and width. Its output is the fused feature map of that resolution, which is what
    the analysis hooks capture."""

    def __init__(self, settings: ConvSettings, target: int, widths: Sequence[int],
                 strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]],
                 mode: str):
        super().__init__()
        self.target = target
        paths = []
        for source, width in enumerate(widths):
            if source == target:
                paths.append(SameStream())
            elif source > target:
                paths.append(UpPath(settings, width, widths[target], mode))
            else:
                # Step k goes from resolution k - 1 to k, as stage k of nnU-Net's encoder does.
                steps = [(strides[k], kernel_sizes[k]) for k in range(source + 1, target + 1)]
                paths.append(DownPath(settings, width, widths[target], steps))
        self.paths = nn.ModuleList(paths)
        self.act = settings.activation()

    def forward(self, streams: list[torch.Tensor]) -> torch.Tensor:
        size = streams[self.target].shape[2:]
        total = None
        for path, x in zip(self.paths, streams):
            y = path(x, size)
            # Out of place: the first term may be the stream itself, which other outputs read.
            total = y if total is None else total + y
        return self.act(total)


class Fusion(nn.Module):
    """HRNet's exchange unit: every output resolution receives every input stream."""

    def __init__(self, settings: ConvSettings, widths: Sequence[int],
                 strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]],
                 mode: str):
        super().__init__()
        self.outputs = nn.ModuleList(
            FusedStream(settings, target, widths, strides, kernel_sizes, mode)
            for target in range(len(widths)))

    def forward(self, streams: list[torch.Tensor]) -> list[torch.Tensor]:
        return [output(streams) for output in self.outputs]


class HRStage(nn.Module):
    """Stage `index` (0-based) with index + 1 streams: a new, coarsest stream made by a strided
    conv from the previous stage's coarsest output (none in stage 0), `num_blocks` residual
    blocks per stream, then (`fuse`) an exchange unit. The last stage's exchange unit lives in
    the decoder, so its `fuse` is off here."""

    def __init__(self, settings: ConvSettings, index: int, widths: Sequence[int],
                 strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]],
                 num_blocks: int, mode: str, fuse: bool):
        super().__init__()
        self.new_stream = None
        if index > 0:
            self.new_stream = settings.conv_norm_act(widths[index - 1], widths[index],
                                                     kernel_sizes[index], strides[index])
        self.branches = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(settings, widths[s], kernel_sizes[s])
                            for _ in range(num_blocks)))
            for s in range(index + 1))
        # A single stream has nothing to exchange (the original has no fusion there either).
        self.fuse = (Fusion(settings, widths[:index + 1], strides, kernel_sizes, mode)
                     if fuse and index > 0 else None)

    def forward(self, streams: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.new_stream is not None:
            streams = [*streams, self.new_stream(streams[-1])]
        streams = [branch(x) for branch, x in zip(self.branches, streams)]
        return self.fuse(streams) if self.fuse is not None else streams


class HRNetEncoder(nn.Module):
    """Stem and all stages up to, not including, the last exchange unit: returns one feature
    map per resolution of the plans, finest first."""

    def __init__(self, settings: ConvSettings, input_channels: int, widths: Sequence[int],
                 strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]],
                 num_blocks: int, mode: str):
        super().__init__()
        self.stem = nn.Sequential(
            settings.conv_norm_act(input_channels, widths[0], kernel_sizes[0], strides[0]),
            settings.conv_norm_act(widths[0], widths[0], kernel_sizes[0]))
        last = len(widths) - 1
        self.stages = nn.ModuleList(
            HRStage(settings, index, widths, strides, kernel_sizes, num_blocks, mode,
                    fuse=index < last)
            for index in range(len(widths)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        streams = [self.stem(x)]
        for stage in self.stages:
            streams = stage(streams)
        return streams


class HRNetDecoder(nn.Module):
    """The last exchange unit and the HRNetV2 representation head without its classifier:
    every fused stream up-sampled to the finest one, concatenated, mixed by a 1x1x1
    conv-norm-act."""

    def __init__(self, settings: ConvSettings, widths: Sequence[int],
                 strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]],
                 representation_features: int, mode: str, deep_supervision: bool):
        super().__init__()
        self.fuse = Fusion(settings, widths, strides, kernel_sizes, mode)
        self.representation = settings.conv_norm_act(sum(widths), representation_features, 1)
        self.mode = mode
        self.deep_supervision = deep_supervision

    def forward(self, streams: list[torch.Tensor]) -> torch.Tensor:
        streams = self.fuse(streams)
        size = streams[0].shape[2:]
        return self.representation(torch.cat([upsample(x, size, self.mode) for x in streams], 1))


class HRNet3D(TransferNetwork):
    """HRNet with the HRNetV2 segmentation head, in 3D, on the resolutions nnU-Net planned.

    Wang, Sun, Cheng, Jiang, Deng, Zhao, Liu, Mu, Tan, Wang, Liu, Xiao, "Deep High-Resolution
    Representation Learning for Visual Recognition", IEEE TPAMI 43(10):3349-3364, 2021
    (published online 2020).

    What is built (n = n_stages resolutions of the plans, widths = features_per_stage):

    - stem: two conv-norm-act layers at the first stride of the plans (normally 1: full
      resolution);
    - stage s = 0 .. n-1 has s + 1 parallel streams; stream r works at the plans' cumulative
      stride r with width features_per_stage[r] and kernel_sizes[r]. Stage s > 0 first creates
      its new, coarsest stream with a strided conv-norm-act (plans' strides[s]) from the
      coarsest output of stage s - 1; then every stream runs `num_blocks` residual blocks
      (conv-norm-act, conv-norm, + identity, act); then an exchange unit fuses all streams
      (stage 0, a single stream, has none): output r is act(sum over streams q of f_qr(x_q)),
      f_rr the identity, f_qr for a coarser q a 1x1x1 conv-norm and up-sampling to the exact
      size of stream r, for a finer q one strided conv per resolution step (the plans'
      kernel and stride of that step; norm-act between steps, norm after the last);
    - HRNetV2 head: the n fused streams of the last stage up-sampled to the finest one,
      concatenated, a 1x1x1 conv-norm-act (`representation_features`, by default the sum of the
      widths as in the paper) and a 1x1x1 output conv. The logits are up-sampled to the input
      size only if the plans' first stride is not 1.

    No deep supervision (the original has none): forward returns [logits].

    Encoder / decoder / head split (HRNet has no encoder-decoder shape; this is ours):
    encoder = stem, every stage's new-stream conv and residual blocks, and the exchange units of
    all stages but the last, i.e. everything that computes features at each resolution, up
    to and including the coarsest stream's last blocks (what a U-Net encoder computes);
    decoder = the last stage's exchange unit and the representation conv-norm-act, which turn
    the multi-resolution features into the full-resolution representation (what a U-Net
    decoder does); head = the output conv. Freezing the encoder thus leaves the final
    cross-resolution fusion and the head to train.

    Analysis layers: encoder, shallow to deep: the stem, the residual blocks of the coarsest
    stream of stage (n - 1) // 2 and of the last stage (the deepest encoder features);
    decoder, deep to shallow: the last exchange unit's coarsest and finest fused outputs and
    the representation conv-norm-act.

    Departures from the paper, and why:
    - No 4x reduction in the stem (the paper has two stride-2 convs): nnU-Net's patches are
      small (e.g. 40x56x40), so the highest-resolution stream is at the plans' first stride and
      the logits need no 4x up-sampling.
    - Resolutions, down-sampling strides and kernel sizes are the plans' (anisotropic strides
      and 1x3x3 kernels included), not fixed 2x steps with 3x3 kernels; the number of streams is
      the number of stages kept (template: at most 4, as HRNet's 4 resolutions).
    - Small and CPU-trainable: one module per stage (the paper: 1, 1, 4, 3 in stages 1-4),
      `num_blocks` residual blocks per stream (paper: 4) and basic blocks with the stream's
      width in stage 0 (paper: bottleneck blocks 64 -> 256 then a 3x3 transition to 18);
      widths follow nnU-Net's feature rule (template 16, 32, 64, 128; HRNet-W18:
      18, 36, 72, 144), the stem's width is the first stream's (paper: 64).
    - The template narrows the representation conv to 64 features (`representation_features`;
      the paper and the default here keep the sum of the widths, 240 with the template's
      widths): at full resolution that 240 -> 240 conv would be a third of the forward work and
      its input, output, norm and activation four 240-channel full-resolution maps.
    - nnU-Net's norm and non-linearity from the plans (instance norm, leaky ReLU) instead of
      batch norm and ReLU; trilinear up-sampling (`upsampling`, or nearest) for the 2D bilinear.
    - The coarsest stream must be at least as long as its kernel on each down-sampled axis
      (see `check_coarsest_stage`).
    """

    has_deep_supervision = False
    # min_coarsest_size (2) holds on every axis; on a down-sampled axis the coarsest stream must
    # also be at least as long as its kernel: unlike a U-Net's bottleneck it runs residual blocks
    # and feeds every fusion, and on a shorter map no voxel of it sees a full neighbourhood of
    # data, only zero padding around it. nnU-Net's planners never go below 4 voxels there.

    def __init__(self, input_channels: int, num_classes: int, n_stages: int,
                 features_per_stage: Sequence[int], strides: Sequence[Sequence[int]],
                 kernel_sizes: Sequence[Sequence[int]], conv_op, norm_op, norm_op_kwargs,
                 nonlin, nonlin_kwargs, conv_bias: bool, deep_supervision: bool = False,
                 num_blocks: int = 1, upsampling: str = "trilinear",
                 representation_features: int | None = None):
        super().__init__()
        self.check_settings(locals())
        settings = ConvSettings.from_plans(locals())
        widths = [int(f) for f in features_per_stage]
        strides = [list(s) for s in strides]
        kernel_sizes = [list(k) for k in kernel_sizes]
        representation_features = representation_features or sum(widths)
        self.n_stages = n_stages
        self.upsampling = upsampling
        self.encoder = HRNetEncoder(settings, input_channels, widths, strides, kernel_sizes,
                                    num_blocks, upsampling)
        self.decoder = HRNetDecoder(settings, widths, strides, kernel_sizes,
                                    representation_features, upsampling, bool(deep_supervision))
        self.head = settings.head(representation_features, num_classes)

    def forward(self, x: torch.Tensor):
        logits = self.head(self.decoder(self.encoder(x)))
        return self.outputs([upsample(logits, x.shape[2:], self.upsampling)])

    def transfer_stages(self) -> dict[str, list[list[nn.Module]]]:
        """Encoder stage i is the HRNet stage that opens stream i (the stem joins the first);
        the decoder's one fusion and representation stay one stage."""
        encoder = self.encoder
        stages = [[stage] for stage in encoder.stages]
        stages[0] = [encoder.stem, *stages[0]]
        return {"encoder": stages}

    def analysis_layers(self) -> dict[str, list[str]]:
        last, middle = self.n_stages - 1, (self.n_stages - 1) // 2
        return {
            "encoder": ["encoder.stem", f"encoder.stages.{middle}.branches.{middle}",
                        f"encoder.stages.{last}.branches.{last}"],
            "decoder": [f"decoder.fuse.outputs.{last}", "decoder.fuse.outputs.0",
                        "decoder.representation"],
        }

    @classmethod
    def check_own_settings(cls, settings) -> None:
        num_blocks, upsampling = settings["num_blocks"], settings["upsampling"]
        representation_features = settings["representation_features"]
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise UserError(f"HRNet3D: num_blocks must be a positive integer, not {num_blocks!r}")
        if upsampling not in UPSAMPLING_MODES:
            raise UserError(f"HRNet3D: upsampling must be one of {', '.join(UPSAMPLING_MODES)}, "
                            f"not {upsampling!r}")
        if representation_features is not None and (
                not isinstance(representation_features, int) or representation_features < 1):
            raise UserError("HRNet3D: representation_features must be a positive integer or "
                            f"null (the sum of the stream widths), not {representation_features!r}")

    @classmethod
    def check_coarsest_stage(cls, patch_size, settings) -> None:
        strides = settings["strides"]
        coarsest = cumulative_strides(strides)[-1]
        kernel = triple((settings.get("kernel_sizes") or [[3, 3, 3]] * len(strides))[-1])
        for axis, (size, factor) in enumerate(zip(patch_size, coarsest)):
            if factor > 1 and size // factor < kernel[axis]:
                raise UserError(
                    f"HRNet3D: patch size {list(patch_size)} leaves {size // factor} voxel(s) on "
                    f"axis {axis} in the coarsest stream (1/{factor}), fewer than its kernel "
                    f"({kernel[axis]}); use fewer stages (the template's max_stages) or a larger "
                    "patch")
