"""What every extra architecture shares: how nnU-Net builds it, its parts, its outputs.

nnU-Net builds a network from the plans with
`NetworkClass(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)`
(`nnunetv2.utilities.get_network_from_plans`), then calls `network.apply(network.initialize)`
and, in training, toggles `network.decoder.deep_supervision`. An extra architecture is a
`TransferNetwork` subclass that:

- takes the layer settings of the plans' `3d_fullres` configuration (`ConvSettings` in
  conv_settings.py: conv, norm and non-linearity ops, as nnU-Net writes them in `arch_kwargs`)
  and the per-stage `strides` and `kernel_sizes` (stage_settings.py), so that it down-samples
  the way nnU-Net planned the patch;
- checks its settings in one place, `check_settings()` (with its own in
  `check_own_settings()`): the constructor calls it on its own arguments
  (`self.check_settings(locals())`), and `check_patch_size()` at plan time on the arch_kwargs
  completed with the constructor's defaults, so that a default is written once;
- has a `decoder` module (nnU-Net sets `decoder.deep_supervision`; `SkipDecoder` in
  blocks.py is the U-Net decoder several architectures share);
- has `encoder`, `decoder` and `head` modules, the default `transfer_parts()` (see parts.py),
  or overrides it, and declares `analysis_layers()` (three encoder and three decoder module
  names, the default layers of the representation analysis, as the six layers of Karimi et
  al.'s Figure 1; `spread` and `with_stand_ins` in analysis_layer_rules.py are the shared
  rules for choosing them);
- returns its logits at full resolution, and in deep-supervision mode a list of one output per
  resolution of the plans (highest first), as nnU-Net's loss expects. An architecture whose
  original has no deep supervision (`has_deep_supervision = False`) returns a one-element list:
  nnunet-transfer's trainers switch deep supervision off for it; nnU-Net's stock trainers then
  train it on the full-resolution output alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from nnunet_transfer.architectures.stage_settings import check_stage_lists, cumulative_strides
from nnunet_transfer.errors import UserError


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
