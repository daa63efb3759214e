"""The target's plans for an nnssl encoder: the target planned by nnU-Net for its own spacing and
normalisation, its configuration's network replaced by the architecture the encoder was
pretrained as.

An nnssl checkpoint carries no nnU-Net plans: its pretraining plan is nnssl's, for nnssl's own
data. What it does carry is the architecture (`architecture_plans` of its adaptation plan: the
class and, for the dynamic U-Nets, their keyword arguments), and only the encoder is reused
(NNUNET_TRANSFER_LOAD=encoder). So the target keeps everything nnU-Net planned for it (spacing,
normalisation, batch size, its preprocessed data) and trains the nnssl network: the encoder's
tensors then have the shapes the checkpoint holds, and the decoder and head start fresh.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from nnunet_transfer.checkpoints.nnssl import NETWORK_CLASSES
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.errors import UserError

# The keyword arguments nnU-Net imports by their dotted names before it builds the network.
IMPORTED = ("conv_op", "norm_op", "dropout_op", "nonlin")
# nnssl's ResEnc-L ("Revisiting MAE pre-training", arXiv 2410.23132), which its adaptation plans
# name without keyword arguments: nnU-Net's ResEnc-L preset with 1x1x1 stride in the stem.
# NoSkipResEncL has the same encoder (only its decoder drops the skips), and only the encoder is
# loaded, so both train as this ResidualEncoderUNet.
_RESENC_L = {
    "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
    "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
    "n_conv_per_stage_decoder": [1] * 5, "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
    "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
PRESETS = {"ResEncL": _RESENC_L, "NoSkipResEncL": _RESENC_L}


@dataclass(frozen=True)
class NnsslArchitecture:
    """The network an nnssl encoder was pretrained in, as nnU-Net's plans describe a network.

    Attributes:
        name: the adaptation plan's architecture (e.g. ResEncL, ResidualEncoderUNet).
        network_class: the dotted class nnU-Net builds (`Checkpoint.network_class`).
        arch_kwargs: its keyword arguments, classes as dotted names (`arch_kwargs`).
        requires_import: the keyword arguments nnU-Net imports (`_kw_requires_import`).
        recommended_patch: the adaptation plan's recommended downstream patch (None: none).
    """

    name: str
    network_class: str
    arch_kwargs: dict
    requires_import: tuple[str, ...]
    recommended_patch: tuple[int, ...] | None

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> NnsslArchitecture:
        """The architecture of an nnssl checkpoint; UserError where nnU-Net's plans cannot
        describe it (a Primus transformer, a U-Net without keyword arguments)."""
        details = checkpoint.details
        name = details.get("architecture")
        kwargs = details.get("arch_kwargs") or PRESETS.get(name)
        if checkpoint.network_class not in NETWORK_CLASSES.values() or not isinstance(
                kwargs, dict) or not kwargs.get("strides"):
            raise UserError(
                f"{checkpoint.path}: the study plans the target for nnssl's U-Net encoders "
                f"({', '.join(NETWORK_CLASSES)}), whose adaptation plan gives their keyword "
                f"arguments; this one is {name} "
                + ("without arch_kwargs" if checkpoint.network_class in NETWORK_CLASSES.values()
                   else f"({checkpoint.network_class})")
                + ". Fine-tune from it by hand: `nnunet-transfer inspect PATH --target ID` "
                "prints the commands")
        given = (checkpoint.details.get("arch_kwargs_requiring_import") or ())
        requires = tuple(k for k in dict.fromkeys([*given, *IMPORTED])
                         if isinstance(kwargs.get(k), str))
        recommended = details.get("recommended_downstream_patchsize")
        return cls(name, checkpoint.network_class, copy.deepcopy(kwargs), requires,
                   tuple(int(p) for p in recommended) if recommended else None)

    def entry(self) -> dict:
        """The configuration's `architecture` in nnU-Net's plans."""
        return {"network_class_name": self.network_class,
                "arch_kwargs": copy.deepcopy(self.arch_kwargs),
                "_kw_requires_import": list(self.requires_import)}

    def divisors(self, dims: int) -> list[int]:
        """Per axis, the product of the stages' strides: a patch axis must be a multiple of
        it for every stage to halve it evenly (and the decoder to undo it)."""
        strides = [[s] * dims if isinstance(s, int) else list(s)
                   for s in self.arch_kwargs["strides"]]
        return [math.prod(int(s[axis]) for s in strides) for axis in range(dims)]

    def patch_for(self, planned: list[int]) -> list[int]:
        """The target's planned patch rounded down, per axis, to a multiple of `divisors` (at
        least one multiple).

        Not the recommended downstream patch: that was chosen for nnssl's pretraining spacing
        and a GPU budget, while the planned one is what nnU-Net fitted to the target's images
        at the target's spacing (and, with `plans.small`, what the study's budget allows); the
        encoder's convolutions take any patch its strides divide."""
        return [max(d, (int(p) // d) * d) for p, d in zip(planned, self.divisors(len(planned)))]


def nnssl_plans(target_plans: dict, configuration: str, architecture: NnsslArchitecture,
                name: str, model: str) -> dict:
    """`target_plans` (nnU-Net's for the target) named `name`, with `configuration`'s network
    the nnssl `architecture` of the checkpoint at `model`, at a patch it accepts."""
    plans = copy.deepcopy(target_plans)
    config = plans["configurations"].get(configuration)
    if config is None or "patch_size" not in config:
        raise UserError(f"the target's plans {target_plans.get('plans_name')} have no "
                        f"configuration {configuration} with a patch size to plan the nnssl "
                        "encoder's network for")
    planned = list(config["patch_size"])
    config["architecture"] = architecture.entry()
    config["patch_size"] = architecture.patch_for(planned)
    # The data_identifier stays the target's: spacing and normalisation are the target's own,
    # so the runs read the data nnU-Net preprocessed for it, and nothing is preprocessed again.
    plans["plans_name"] = name
    plans["transferred_from"] = {
        "model": model, "plans": target_plans.get("plans_name"),
        "notes": [f"{configuration}: the network of the nnssl encoder ({architecture.name}); "
                  f"the target's patch {planned} -> {config['patch_size']} (divisible by the "
                  "strides)" + (f"; nnssl recommends {list(architecture.recommended_patch)} "
                                "for its pretraining's spacing"
                                if architecture.recommended_patch else "")]}
    return plans
