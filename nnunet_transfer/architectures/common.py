"""What every extra architecture shares: how nnU-Net builds it, its parts, its outputs.

nnU-Net builds a network from the plans with
`NetworkClass(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)`
(`nnunetv2.utilities.get_network_from_plans`), then calls `network.apply(network.initialize)`
and, in training, toggles `network.decoder.deep_supervision`. An extra architecture is a
`TransferNetwork` subclass that:

- takes the layer settings of the plans' `3d_fullres` configuration (`ConvSettings`: conv, norm
  and non-linearity ops, as nnU-Net writes them in `arch_kwargs`) and the per-stage `strides`
  and `kernel_sizes`, so that it down-samples the way nnU-Net planned the patch;
- checks its settings in one place, `check_settings()` (with its own in
  `check_own_settings()`): the constructor calls it on its own arguments
  (`self.check_settings(locals())`), and `check_patch_size()` at plan time on the arch_kwargs
  completed with the constructor's defaults, so that a default is written once;
- has a `decoder` module (nnU-Net sets `decoder.deep_supervision`; `SkipDecoder` is the
  U-Net decoder several architectures share);
- has `encoder`, `decoder` and `head` modules, the default `transfer_parts()` (see parts.py),
  or overrides it, and declares `analysis_layers()` (three encoder and three decoder module
  names, the default layers of the representation analysis, as the six layers of Karimi et
  al.'s Figure 1; `spread` and `with_stand_ins` are the shared rules for choosing them);
- returns its logits at full resolution, and in deep-supervision mode a list of one output per
  resolution of the plans (highest first), as nnU-Net's loss expects. An architecture whose
  original has no deep supervision (`has_deep_supervision = False`) returns a one-element list:
  nnunet-transfer's trainers switch deep supervision off for it; nnU-Net's stock trainers then
  train it on the full-resolution output alone.
"""

from __future__ import annotations

import inspect
import pydoc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from nnunet_transfer.errors import UserError


def _locate(op):
    if isinstance(op, str):
        located = pydoc.locate(op)
        if located is None:
            raise UserError(f"cannot import {op!r} named in the plans' arch_kwargs")
        return located
    return op


@dataclass
class ConvSettings:
    """The plans' layer settings: 3D convolution, normalisation and non-linearity ops."""

    conv_op: Any = nn.Conv3d
    norm_op: Any = nn.InstanceNorm3d
    norm_op_kwargs: dict = field(default_factory=lambda: {"eps": 1e-5, "affine": True})
    nonlin: Any = nn.LeakyReLU
    nonlin_kwargs: dict = field(default_factory=lambda: {"inplace": True})
    conv_bias: bool = True

    def __post_init__(self):
        self.conv_op = _locate(self.conv_op)
        self.norm_op = _locate(self.norm_op)
        self.nonlin = _locate(self.nonlin)
        if self.norm_op_kwargs is None:  # as nnU-Net's plans: affine instance norm
            self.norm_op_kwargs = {"eps": 1e-5, "affine": True}
        self.norm_op_kwargs = dict(self.norm_op_kwargs)
        self.nonlin_kwargs = dict(self.nonlin_kwargs or {})
        if self.conv_op is not nn.Conv3d:
            raise UserError(f"the extra architectures are 3D networks; the plans ask for "
                            f"{getattr(self.conv_op, '__name__', self.conv_op)}. Add them to a "
                            "3d_fullres (or 3d_lowres) configuration")

    @classmethod
    def from_plans(cls, arch_kwargs: Mapping[str, Any]) -> "ConvSettings":
        """The settings named in the plans' arch_kwargs (or among a constructor's arguments,
        its locals()); an op given as None or left out keeps the default above, nnU-Net's
        own."""
        return cls(**{f.name: arch_kwargs[f.name] for f in fields(cls)
                      if arch_kwargs.get(f.name) is not None})

    def conv(self, in_channels: int, out_channels: int, kernel_size, stride=1,
             dilation=1, bias: bool | None = None) -> nn.Conv3d:
        """A 3D convolution that keeps the size (padding = dilation * (kernel - 1) / 2) when
        stride is 1, and divides it by `stride` when the size is a multiple of it."""
        kernel = triple(kernel_size)
        dilation = triple(dilation)
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        return nn.Conv3d(in_channels, out_channels, kernel, stride=triple(stride),
                         padding=padding, dilation=dilation,
                         bias=self.conv_bias if bias is None else bias)

    def norm(self, channels: int) -> nn.Module:
        return self.norm_op(channels, **self.norm_op_kwargs)

    def activation(self, channels: int | None = None) -> nn.Module:
        """The plans' non-linearity; a PReLU gets one slope per channel when `channels` is
        given (V-Net's), one shared slope otherwise."""
        if self.nonlin is nn.PReLU:  # PReLU takes no inplace flag
            kwargs = {k: v for k, v in self.nonlin_kwargs.items() if k != "inplace"}
            if channels is not None:
                kwargs.setdefault("num_parameters", channels)
            return nn.PReLU(**kwargs)
        return self.nonlin(**self.nonlin_kwargs)

    def conv_norm_act(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                      dilation=1) -> nn.Sequential:
        return nn.Sequential(self.conv(in_channels, out_channels, kernel_size, stride, dilation),
                             self.norm(out_channels), self.activation(out_channels))

    def head(self, in_channels: int, num_classes: int) -> nn.Conv3d:
        """1x1x1 output convolution (with bias, as nnU-Net's seg layers)."""
        return nn.Conv3d(in_channels, num_classes, 1, bias=True)


class ResidualBlock(nn.Module):
    """Two convolutions around an identity shortcut: act(x + norm(conv(act(norm(conv(x)))))):
    HRNet's basic block and the residual unit of Karimi et al.'s encoder."""

    def __init__(self, settings: ConvSettings, channels: int, kernel_size):
        super().__init__()
        self.conv1 = settings.conv_norm_act(channels, channels, kernel_size)
        self.conv2 = settings.conv(channels, channels, kernel_size)
        self.norm2 = settings.norm(channels)
        self.act = settings.activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.conv1(x))) + x)


def outputs_of_each_stage(stages: Iterable[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """Run `stages` in turn, each on the previous one's output, and keep every output: the
    skips of an encoder, shallowest first, its deepest map last."""
    outputs = []
    for stage in stages:
        x = stage(x)
        outputs.append(x)
    return outputs


def triple(value) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value,) * 3
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise UserError(f"expected a 3D kernel / stride, got {list(value)}")
    return value


def cumulative_strides(strides: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """Down-sampling factor of each stage relative to the input, per axis."""
    total, factors = (1, 1, 1), []
    for s in strides:
        total = tuple(t * si for t, si in zip(total, triple(s)))
        factors.append(total)
    return factors


class SkipDecoder(nn.Module):
    """The decoder of a U-Net: `stages[0]` takes the encoder's deepest map and its skip one
    resolution finer, every next stage the previous one's output and the next finer skip, up
    to the full resolution, whose map it returns. Lists given besides the skips (one entry per
    skip, e.g. pooling indices) reach each stage after its skip.

    `deep_supervision` is the flag nnU-Net toggles; these decoders have a single output."""

    def __init__(self, stages: Iterable[nn.Module], deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.stages = nn.ModuleList(stages)

    def forward(self, skips: list[torch.Tensor], *per_skip: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for stage, skip, *extra in zip(self.stages, reversed(skips[:-1]),
                                       *map(reversed, per_skip)):
            x = stage(x, skip, *extra)
        return x


class TransferNetwork(nn.Module):
    """Base class of the extra architectures (see the module docstring for the contract)."""

    has_deep_supervision: ClassVar[bool] = False
    # Smallest feature map, in voxels per axis, allowed at the coarsest stage: instance norm
    # cannot normalise a single voxel in training.
    min_coarsest_size: ClassVar[int] = 2

    # -- what subclasses declare ------------------------------------------------------------

    def analysis_layers(self) -> dict[str, list[str]]:
        """{"encoder": [3 module names], "decoder": [3 module names]} (names as in
        `named_modules()`), shallow to deep for the encoder, deep to shallow for the decoder."""
        raise NotImplementedError

    def transfer_parts(self) -> dict[str, list[nn.Module]]:
        """The encoder / decoder / head split (see parts.py): the `encoder`, `decoder` and
        `head` modules; an architecture that keeps its head elsewhere overrides this."""
        return {"encoder": [self.encoder], "decoder": [self.decoder], "head": [self.head]}

    def transfer_stages(self) -> dict[str, list[list[nn.Module]]]:
        """The encoder's and decoder's stages (see parts.py): their `stages`, where these hold
        the whole part; otherwise none declared (the part is one stage). An architecture
        whose stages are something else overrides this."""
        parts, declared = self.transfer_parts(), {}
        for part in ("encoder", "decoder"):
            stages = getattr(getattr(self, part, None), "stages", None)
            held = {id(p) for p in stages.parameters()} if isinstance(stages, nn.Module) else ()
            if held and held == {id(p) for m in parts[part] for p in m.parameters()}:
                declared[part] = [[stage] for stage in stages]
        return declared

    @classmethod
    def check_own_settings(cls, settings: Mapping[str, Any]) -> None:
        """Raise UserError for the architecture's own settings (beyond the per-stage lists)
        when the network cannot be built from them or would fail on them in its first forward
        pass; `settings` as in `check_settings`. Nothing by default."""

    @classmethod
    def check_coarsest_stage(cls, patch_size: Sequence[int], settings: Mapping[str, Any]
                             ) -> None:
        """Raise UserError when the map the patch becomes at the coarsest stage is too small
        for the architecture, beyond the `min_coarsest_size` voxels every one needs. Called
        at plan time after `check_settings`; nothing by default."""

    # -- shared behaviour -------------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any],
                       patch_size: Sequence[int] | None = None) -> None:
        """Raise UserError for settings the network cannot be built from: per-stage lists with
        one entry per stage (at least two), then the architecture's own settings.

        `settings` holds the constructor's arguments by name: the constructor passes its
        `locals()`, `check_patch_size` the plans' arch_kwargs completed with the constructor's
        defaults (`plan_settings`). A per-stage list absent at plan time is not checked; with
        `patch_size` a message names the patch."""
        check_stage_lists(cls.__name__, settings["n_stages"], settings.get("features_per_stage"),
                          settings["strides"], settings.get("kernel_sizes"), patch_size)
        cls.check_own_settings(settings)

    @classmethod
    def check_patch_size(cls, patch_size: Sequence[int], strides: Sequence[Sequence[int]],
                         **arch_kwargs) -> None:
        """Raise UserError when the architecture cannot take `patch_size` with these strides
        and arch_kwargs: the plan-time check, before a configuration is written.

        nnU-Net makes the patch divisible by the product of the strides; then the settings
        are checked as the constructor checks them, then the coarsest stage's map."""
        coarsest = cumulative_strides(strides)[-1]
        for axis, (size, factor) in enumerate(zip(patch_size, coarsest)):
            if size % factor:
                raise UserError(
                    f"{cls.__name__}: patch size {list(patch_size)} is not divisible by the "
                    f"total down-sampling {list(coarsest)} on axis {axis}; use plans whose "
                    "patch size nnU-Net fitted to these strides")
            if size // factor < cls.min_coarsest_size:
                raise UserError(
                    f"{cls.__name__}: patch size {list(patch_size)} leaves {size // factor} "
                    f"voxel(s) on axis {axis} at the coarsest stage (at least "
                    f"{cls.min_coarsest_size} needed); use fewer stages or a larger patch")
        settings = cls.plan_settings(strides, arch_kwargs)
        cls.check_settings(settings, patch_size)
        cls.check_coarsest_stage(patch_size, settings)

    @classmethod
    def plan_settings(cls, strides: Sequence[Sequence[int]], arch_kwargs: Mapping[str, Any]
                      ) -> dict[str, Any]:
        """The constructor's arguments at plan time: `arch_kwargs` and `strides`, with the
        constructor's defaults for what they leave out and one stage per stride unless they
        give `n_stages`."""
        defaults = {name: parameter.default
                    for name, parameter in inspect.signature(cls).parameters.items()
                    if parameter.default is not inspect.Parameter.empty}
        return {**defaults, "n_stages": len(strides), **arch_kwargs, "strides": strides}

    @property
    def deep_supervision(self) -> bool:
        return bool(getattr(self.decoder, "deep_supervision", False))

    def outputs(self, logits_per_resolution: list[torch.Tensor]):
        """Full-resolution logits, or in deep-supervision mode the list nnU-Net's loss takes.

        `logits_per_resolution` holds the full-resolution logits first, then (architectures
        with deep supervision only) one auxiliary output per coarser resolution."""
        if self.deep_supervision:
            return list(logits_per_resolution)
        return logits_per_resolution[0]

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He initialisation (Karimi et al.'s R.I.: zero-mean Gaussian, std sqrt(2 / fan_in)),
        with nnU-Net's negative slope 1e-2, zero biases; norms keep their defaults."""
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight, a=1e-2)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def features_for_stages(n_stages: int, base: int, maximum: int) -> list[int]:
    """nnU-Net's rule: `base` features doubling per stage, capped at `maximum`."""
    return [min(base * 2 ** i, maximum) for i in range(n_stages)]


def check_stage_lists(name: str, n_stages: int, features, strides, kernel_sizes,
                      patch_size: Sequence[int] | None = None) -> None:
    """Refuse plans with fewer than 2 stages, or whose per-stage lists do not have one entry per
    stage: the network could not be built from them, or would fail on them in training.

    A list given as None (absent from the arch_kwargs being checked) is not checked; with
    `patch_size` (at plan time) the message names the patch that gave too few stages."""
    if n_stages < 2:
        source = (f"the plans' patch size {list(patch_size)} gives" if patch_size is not None
                  else "the plans give")
        raise UserError(f"{name}: {source} {n_stages} stage(s), but the network needs at least "
                        "2 stages, that is at least 2 resolutions (one down-sampling step). Use "
                        "plans with a larger patch size")
    for label, values in (("features_per_stage", features), ("strides", strides),
                          ("kernel_sizes", kernel_sizes)):
        if values is not None and len(values) != n_stages:
            raise UserError(f"{name}: {label} has {len(values)} entries for {n_stages} stages; "
                            "the plans' arch_kwargs are inconsistent: give one entry per stage")


def check_counts_per_stage(name: str, key: str, counts, n_stages: int, unit: str,
                           template: str) -> None:
    """Refuse the per-stage counts `counts` (arch_kwargs[key], e.g. convolutions per stage)
    when they are fewer than the stages or one is not a positive integer; the message points
    to the template plans/<template>.json."""
    counts = list(counts)
    if len(counts) < n_stages or any(not isinstance(c, int) or c < 1 for c in counts):
        raise UserError(
            f"{name}: {key} {counts} must give at least one {unit} for each of the {n_stages} "
            f"stages; add entries to arch_kwargs.{key} in plans/{template}.json or lower its "
            "max_stages")


def check_output_at_patch_size(name: str, strides, kernel_sizes) -> None:
    """Refuse a first stage that down-samples, and even kernels: for a network whose logits
    come from its first stage through size-keeping ('same') convolutions, either would make
    the logits miss the patch size."""
    if any(s != 1 for s in triple(strides[0])):
        raise UserError(f"{name}: the first stage must not down-sample: it keeps the full "
                        f"resolution (strides[0] = [1, 1, 1], as nnU-Net plans it), not "
                        f"{list(strides[0])}; the logits would not match the patch size")
    for kernel in kernel_sizes or ():
        if any(k % 2 == 0 for k in triple(kernel)):
            raise UserError(f"{name}: kernel size {list(kernel)} is even; a convolution that "
                            "keeps the size ('same' padding) needs odd kernel sizes")


# -- the default analysis layers ---------------------------------------------------------------

LAYERS_PER_SIDE = 3


def child_names(prefix: str, modules: nn.ModuleList) -> list[str]:
    """The names of the entries of `modules`, registered under `prefix`: prefix.0, prefix.1, ..."""
    return [f"{prefix}.{index}" for index in range(len(modules))]


def spread(names: Sequence[str], count: int = LAYERS_PER_SIDE) -> list[str]:
    """`count` names evenly spread over `names`, first and last included; a position halfway
    between two names rounds to the even one (Python's round). Fewer names are returned as
    they are."""
    if len(names) <= count:
        return list(names)
    return [names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)]


def with_stand_ins(names: Sequence[str], stand_ins: Iterable[tuple[int, str]],
                   count: int = LAYERS_PER_SIDE) -> list[str]:
    """`names`, and while they are fewer than `count`, the next (position, name) of
    `stand_ins` inserted (list.insert): finer layers standing in for the stages a network
    with few stages lacks on one side."""
    names = list(names)
    for position, name in stand_ins:
        if len(names) >= count:
            break
        names.insert(position, name)
    return names
