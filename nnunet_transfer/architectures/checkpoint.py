"""One checkpoint type: the weights a run saved, the plans it was trained with, and the network
rebuilt from those plans.

A `Checkpoint` comes from a file (`Checkpoint.read`: an nnU-Net checkpoint such as
checkpoint_final.pth or a snapshot of nnunet-transfer's trainers, or a bare state dict) or from
what torch loaded (`Checkpoint.of`). Tensor names lose the prefixes of the wrappers they were
saved under (`module.` of DistributedDataParallel, `_orig_mod.` of torch.compile). Training
reads the source of pretrained weights with it, the analysis the snapshots of its runs; both
rebuild the network the way nnUNetv2_predict does (`network()`).

Each reader words its refusals for its own users (`CheckpointUse`): the messages name the file
and say what to do about it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

import torch
from torch import nn

from nnunet_transfer.errors import UserError

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class CheckpointUse:
    """What a checkpoint is read for, as the refusals of a file word it.

    Attributes:
        noun: names a file that does not exist ("<noun> <path> does not exist").
        advice: follows the refusal of a missing file or of a folder.
        unreadable_advice: follows the refusal of a file torch cannot load.
        lacking: says what a file without network weights is not.
        bare_refusal: why a bare state dict (weights without plans) will not do; None when it
            will.
    """

    noun: str = "the checkpoint"
    advice: str = ""
    unreadable_advice: str = ""
    lacking: str = "(neither an nnU-Net checkpoint with 'network_weights' nor a state dict)"
    bare_refusal: str | None = None


ANY_WEIGHTS = CheckpointUse()


@dataclass(eq=False)  # equal only to itself: tensors compare element by element
class Checkpoint:
    """Network weights and what is known of where they came from.

    Attributes:
        label: what messages call it: the path as given, or a name for weights in memory.
        weights: tensor name -> tensor, wrapper prefixes stripped.
        init_args: the saving nnU-Net trainer's init_args (plans, configuration, dataset_json);
            {} when not recorded.
        trainer_name: the class of the trainer that saved it, when recorded.
        path: the absolute path of the file read; None for weights in memory.
        bare: whether it was a bare state dict rather than an nnU-Net checkpoint.
        network_class: the network class the plans give the configuration (dotted name), found
            from init_args unless given; None when they tell none.
        origins: tensor name -> where the tensor came from when it is not the file's own
            tensor of that name (e.g. mapped from an nnU-Net v1 name, or a bias set to zero
            where the source had none); the preflight table shows it. {} for nnU-Net v2 files.
        encoder_only: the file holds an encoder (and stem) only, e.g. a self-supervised one:
            the decoder and head start fresh, as NNUNET_TRANSFER_LOAD=encoder makes them.
        plans, configuration, dataset_name, plans_name, labels, regions_class_order,
            channel_names: what init_args record of them ({} or None when nothing).
    """

    label: str
    weights: dict[str, torch.Tensor] = field(repr=False)
    init_args: dict = field(default_factory=dict, repr=False)
    trainer_name: str | None = None
    path: str | None = None
    bare: bool = False
    network_class: str | None = None
    origins: dict[str, str] = field(default_factory=dict, repr=False)
    encoder_only: bool = False
    plans: dict = field(init=False, repr=False)
    configuration: str | None = field(init=False)
    dataset_name: str | None = field(init=False)
    plans_name: str | None = field(init=False)
    labels: dict | None = field(init=False, repr=False)
    regions_class_order: list | None = field(init=False, repr=False)
    channel_names: dict | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.plans = self.init_args.get("plans") or {}
        self.configuration = self.init_args.get("configuration")
        self.dataset_name = self.plans.get("dataset_name")
        self.plans_name = self.plans.get("plans_name")
        dataset_json = self.init_args.get("dataset_json") or {}
        self.labels = dataset_json.get("labels")
        self.regions_class_order = dataset_json.get("regions_class_order")
        self.channel_names = dataset_json.get("channel_names") or dataset_json.get("modality")
        if self.network_class is None and self.plans:
            try:
                self.network_class = self._plans_and_configuration()[1].network_arch_class_name
            except Exception:  # plans of another nnU-Net version: messages say "unknown"
                pass

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | os.PathLike, use: CheckpointUse = ANY_WEIGHTS) -> Checkpoint:
        """The checkpoint in the file at `path`, loaded on the CPU.

        Raises UserError naming the file when it does not exist, is a folder, is not a
        readable PyTorch file, holds no network weights, or is a bare state dict that `use`
        refuses."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise UserError(f"{use.noun} {path} does not exist{use.advice}")
        if os.path.isdir(path):
            raise UserError(f"{path} is a folder, not a checkpoint file{use.advice}")
        try:
            content = _load(path)
        except Exception as error:  # torch raises many kinds for a damaged file
            detail = str(error).splitlines()[0] if str(error) else "no detail"
            raise UserError(f"{path} is not a readable PyTorch checkpoint "
                            f"({type(error).__name__}: {detail}){use.unreadable_advice}"
                            ) from None
        return cls._from_content(content, path, use, os.path.abspath(path))

    @classmethod
    def of(cls, source: str | os.PathLike | Mapping | Checkpoint, label: str = "the checkpoint",
           use: CheckpointUse = ANY_WEIGHTS) -> Checkpoint:
        """A checkpoint from a path (read, and named by its path), from loaded content (an
        nnU-Net checkpoint dict or a bare state dict, named `label`), or a Checkpoint renamed
        `label`."""
        if isinstance(source, Checkpoint):
            return replace(source, label=label)
        if isinstance(source, (str, os.PathLike)):
            return cls.read(source, use)
        return cls._from_content(source, label, use)

    @classmethod
    def _from_content(cls, content, label: str, use: CheckpointUse,
                      path: str | None = None) -> Checkpoint:
        if isinstance(content, Mapping) and "network_weights" in content:
            weights, meta, bare = content["network_weights"], content, False
        elif isinstance(content, Mapping) and content and all(
                isinstance(v, torch.Tensor) for v in content.values()):
            weights, meta, bare = content, {}, True
        else:
            raise UserError(f"{label} holds no network weights {use.lacking}")
        if bare and use.bare_refusal is not None:
            raise UserError(f"{label} holds a bare state dict, not an nnU-Net checkpoint with "
                            f"its plans (init_args); {use.bare_refusal}")
        return cls(label, {_strip_wrapper_prefixes(k): v for k, v in weights.items()},
                   meta.get("init_args") or {}, meta.get("trainer_name"), path, bare)

    # -- derived -----------------------------------------------------------------------------

    @property
    def architecture(self) -> str | None:
        """The network class without its module, e.g. PlainConvUNet (None when unknown)."""
        return self.network_class.rsplit(".", 1)[-1] if self.network_class else None

    @cached_property
    def sha256(self) -> str | None:
        """The SHA-256 of the file read (None for weights in memory)."""
        if self.path is None:
            return None
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    # -- the network -------------------------------------------------------------------------

    def network(self, load_weights: bool = True) -> nn.Module:
        """The network the plans describe (init_args: plans, configuration, dataset.json),
        built as nnUNetv2_predict builds it, with these weights unless `load_weights` is False.
        Deep supervision is on, as in training, so every output layer exists."""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunetv2.utilities.label_handling.label_handling import (
            determine_num_input_channels,
        )

        if "plans" not in self.init_args:
            raise UserError("the checkpoint has no init_args with plans; it was not written by "
                            "an nnU-Net trainer, so its network cannot be rebuilt")
        plans_manager, configuration = self._plans_and_configuration()
        dataset_json = self.init_args["dataset_json"]
        network = nnUNetTrainer.build_network_architecture(
            plans_manager, configuration,
            determine_num_input_channels(plans_manager, configuration, dataset_json),
            plans_manager.get_label_manager(dataset_json).num_segmentation_heads, True)
        if load_weights:
            network.load_state_dict(self.weights)
        return network

    def _plans_and_configuration(self):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        plans_manager = PlansManager(self.init_args["plans"])
        return plans_manager, plans_manager.get_configuration(self.init_args["configuration"])


def _load(path: str):
    """What torch saved at `path`, on the CPU. Pickled code is refused where the file allows
    (weights_only); nnU-Net's checkpoints hold numpy values besides tensors and need the full
    unpickler, whose error is the one reported when neither loads the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not loadable with the restricted unpickler; the full one says why
        return torch.load(path, map_location="cpu", weights_only=False)


def _strip_wrapper_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key
