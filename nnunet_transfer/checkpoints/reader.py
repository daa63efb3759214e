"""One checkpoint type: the weights a run saved, the plans it was trained with, and the network
rebuilt from those plans.

A `Checkpoint` comes from a file (`Checkpoint.read`: an nnU-Net checkpoint such as
checkpoint_final.pth or a snapshot of nnunet-transfer's trainers, a bare state dict, an nnU-Net v1
model, an nnssl encoder, or a model folder holding one; each other format has its reader module,
nnunet_v1 / nnssl / model_folder) or from what torch loaded (`Checkpoint.of`).
Files are read without running pickled code (safe_loading). Tensor names lose the prefixes of
the wrappers they were saved under (`module.` of DistributedDataParallel, `_orig_mod.` of
torch.compile). Training
reads the source of pretrained weights with it, the analysis the snapshots of its runs; both
rebuild the network the way nnUNetv2_predict does (`network()`).

Each reader words its refusals for its own users (`CheckpointUse`): the messages name the file
and say what to do about it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

import torch
from torch import nn

from nnunet_transfer.checkpoints.content import (
    FORMAT_BARE, FORMAT_V2, Content)
from nnunet_transfer.checkpoints.nnssl import is_nnssl, read_nnssl
from nnunet_transfer.checkpoints.nnunet_v1 import V1_SUFFIX, read_v1
from nnunet_transfer.checkpoints.model_folder import (
    checkpoint_file, folder_init_args, folds, trainer_folder_of, trainer_of_folder)
from nnunet_transfer.checkpoints.network_import import require_installed_network
from nnunet_transfer.checkpoints.plans_format import current_plans_format
from nnunet_transfer.checkpoints.safe_loading import load_torch
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
        format: which kind of file it was (content's FORMAT_*).
        details: what the format records beyond these attributes, for `inspect` (version,
            epoch, folds; a v1 model's stage; an nnssl adaptation plan's pretraining).
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
    format: str = FORMAT_V2
    details: dict = field(default_factory=dict, repr=False)
    plans: dict = field(init=False, repr=False)
    configuration: str | None = field(init=False)
    dataset_name: str | None = field(init=False)
    plans_name: str | None = field(init=False)
    labels: dict | None = field(init=False, repr=False)
    regions_class_order: list | None = field(init=False, repr=False)
    channel_names: dict | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        plans, converted = current_plans_format(self.init_args.get("plans") or {})
        if converted:
            # Every later reader (nnU-Net's included) sees the current format, silently.
            self.init_args = {**self.init_args, "plans": plans}
            self.details = {**self.details, "converted_configurations": converted}
        self.plans = self.init_args.get("plans") or {}
        self.configuration = self.init_args.get("configuration")
        self.dataset_name = self.plans.get("dataset_name")
        self.plans_name = self.plans.get("plans_name")
        dataset_json = self.init_args.get("dataset_json") or {}
        self.labels = dataset_json.get("labels")
        self.regions_class_order = dataset_json.get("regions_class_order")
        self.channel_names = dataset_json.get("channel_names") or dataset_json.get("modality")
        if self.details.get("labels_known") is False:
            self.labels = None  # placeholders that only size the network (a v1 model's)
        if self.network_class is None and self.plans:
            try:
                self.network_class = self._plans_and_configuration()[1].network_arch_class_name
            except Exception:  # plans of another nnU-Net version: messages say "unknown"
                pass

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | os.PathLike, use: CheckpointUse = ANY_WEIGHTS) -> Checkpoint:
        """The checkpoint at `path`, loaded on the CPU: an nnU-Net v2 checkpoint (or bare state
        dict), an nnU-Net v1 model (`.model`), an nnssl checkpoint, or a model / fold folder
        holding one of these (its first fold's).

        Raises UserError naming the file when it does not exist, is a folder without a
        checkpoint, is not a readable file of these formats, would run pickled code, holds
        no network weights, or is a bare state dict that `use` refuses."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise UserError(f"{use.noun} {path} does not exist{use.advice}")
        given = path
        if os.path.isdir(path):
            path = checkpoint_file(path)
        try:
            if path.endswith(V1_SUFFIX):
                return cls._from(read_v1(path), given)
            content = load_torch(path)
        except UserError:
            raise
        except Exception as error:  # torch raises many kinds for a damaged file
            detail = str(error).splitlines()[0] if str(error) else "no detail"
            raise UserError(f"{path} is not a readable PyTorch checkpoint "
                            f"({type(error).__name__}: {detail}){use.unreadable_advice}"
                            ) from None
        if is_nnssl(content):
            return cls._from(read_nnssl(content, os.path.abspath(path)), given)
        checkpoint = cls._from_content(content, given, use, os.path.abspath(path))
        if not checkpoint.init_args:
            # Saved without init_args (e.g. stripped for publication): the folder has them.
            found = folder_init_args(path)
            if found:
                checkpoint = replace(checkpoint, init_args=found,
                                     trainer_name=checkpoint.trainer_name
                                     or trainer_of_folder(path))
        epoch = content.get("current_epoch") if isinstance(content, Mapping) else None
        checkpoint.details = {**checkpoint.details, "epoch": epoch,
                              "folds": folds(trainer_folder_of(path))}
        return checkpoint

    @classmethod
    def _from(cls, content: Content, label: str) -> Checkpoint:
        return cls(label, content.weights, content.init_args, content.trainer_name,
                   content.path, False, content.network_class, content.origins,
                   content.encoder_only, content.format, content.details)

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
                   meta.get("init_args") or {}, meta.get("trainer_name"), path, bare,
                   format=FORMAT_BARE if bare else FORMAT_V2)

    # -- derived -----------------------------------------------------------------------------

    @property
    def architecture(self) -> str | None:
        """The network class without its module, e.g. PlainConvUNet (None when unknown)."""
        return self.network_class.rsplit(".", 1)[-1] if self.network_class else None

    @cached_property
    def sha256(self) -> str | None:
        """The SHA-256 of the file read (None for weights in memory)."""
        return None if self.path is None else file_sha256(self.path)

    # -- the network -------------------------------------------------------------------------

    def network(self, load_weights: bool = True, shapes_only: bool = False,
                dataset_json: dict | None = None) -> nn.Module:
        """The network the plans describe (init_args: plans, configuration, dataset.json),
        built as nnUNetv2_predict builds it (nnUNetTrainer.build_network_architecture's call),
        with these weights unless `load_weights` is False. Deep supervision is on, as in
        training, so every output layer exists. `shapes_only` builds it on torch's meta device:
        every tensor has its shape and no values, nothing is initialised (counting parameters
        costs no time); its weights are not loaded. `dataset_json` (another dataset's) builds
        the plans' network for its channels and labels instead, as a target trained under
        these plans gets it; its weights are then not loaded (their shapes may differ).

        Raises UserError, before building anything, when the plans' network class is not
        installed here (`require_installed_network`)."""
        network_class = self.require_installed_network()
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        from nnunetv2.utilities.label_handling.label_handling import (
            determine_num_input_channels,
        )

        plans_manager, configuration = self._plans_and_configuration()
        own = dataset_json is None
        dataset_json = self.init_args["dataset_json"] if own else dataset_json
        with torch.device("meta") if shapes_only else contextlib.nullcontext():
            network = get_network_from_plans(
                network_class, configuration.network_arch_init_kwargs,
                configuration.network_arch_init_kwargs_req_import,
                determine_num_input_channels(plans_manager, configuration, dataset_json),
                plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
                allow_init=not shapes_only, deep_supervision=True)
        if load_weights and own and not shapes_only:
            network.load_state_dict(self.weights)
        return network

    def require_installed_network(self) -> str:
        """The dotted path of the network class the plans name for the configuration, as
        nnU-Net finds it here. Raises UserError naming the file, the class and what to
        install when it (or a module its arguments name) is not installed, and when there
        are no plans to build from."""
        if "plans" not in self.init_args:
            raise UserError("the checkpoint has no init_args with plans; it was not written by "
                            "an nnU-Net trainer, so its network cannot be rebuilt")
        where = (f"{self.path or self.label}: its plans ({self.plans_name}, configuration "
                 f"{self.configuration})")
        try:
            configuration = self._plans_and_configuration()[1]
        except KeyError as error:
            raise UserError(f"{where} lack {error}; they are not plans of this nnU-Net "
                            f"version: copy them again from the model's source") from None
        except RuntimeError as error:  # old-format plans of a class nnU-Net cannot convert
            raise UserError(f"{where} cannot be read by nnU-Net: {error}") from None
        return require_installed_network(
            configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
            configuration.network_arch_init_kwargs_req_import, where)

    def _plans_and_configuration(self):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        plans_manager = PlansManager(self.init_args["plans"])
        return plans_manager, plans_manager.get_configuration(self.init_args["configuration"])


def file_sha256(path: str) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks (a checkpoint may be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _strip_wrapper_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key
