"""The checkpoints of a run with low-rank adapters (LoRA).

nnU-Net's checkpoints and the run's snapshots hold the merged weights (what the network
computes, under the keys of the network without adapters), so that `nnUNetv2_predict` and the
analyses read them as any other run's. Beside them, in `<fold folder>/transfer/adapters/`:

    <checkpoint or snapshot file name>   the adapters alone (small), for that checkpoint
    base_<checkpoint file name>   the base weights the adapters act on (the pretrained
                          weights, untouched while the base is frozen), beside nnU-Net's
                          checkpoints only (a snapshot's base is that of epoch 0)

`--c` puts base and adapters back from these two files and the checkpoint's other weights.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from torch import nn

from nnunet_transfer.architectures.parts import unwrap
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.bookkeeping import RunRecord, atomic_torch_save
from nnunet_transfer.training.low_rank import (
    adapter_state_dict, base_state_dict, load_adapter_state_dict, merged_state_dict)

_ORIGINAL = "parametrizations.weight.original"


class AdapterFiles:
    def __init__(self, record: RunRecord):
        self.folder = os.path.join(record.folder, "adapters")

    def adapters_path(self, checkpoint_path: str) -> str:
        return os.path.join(self.folder, os.path.basename(checkpoint_path))

    def base_path(self, checkpoint_path: str) -> str:
        return os.path.join(self.folder, "base_" + os.path.basename(checkpoint_path))

    def save(self, network: nn.Module, checkpoint_path: str, with_base: bool = True) -> None:
        os.makedirs(self.folder, exist_ok=True)
        atomic_torch_save(self.adapters_path(checkpoint_path), adapter_state_dict(network))
        if with_base:
            atomic_torch_save(self.base_path(checkpoint_path), base_state_dict(network))

    @contextmanager
    def merged_state_while_saving(self, network: nn.Module):
        """Within this block the network's `state_dict()` is the merged one, so that nnU-Net's
        save_checkpoint, which takes it, writes the checkpoint once with the merged weights
        (rather than writing it, reading it back and writing it again). The override sits on
        the module nnU-Net asks (the one under DDP or torch.compile), for this block only."""
        module = unwrap(network)
        merged = merged_state_dict(network)
        module.state_dict = lambda *args, **kwargs: merged
        try:
            yield
        finally:
            del module.state_dict

    def _read(self, path: str) -> dict:
        if not os.path.isfile(path):
            raise UserError(f"{path} is missing: a run with low-rank adapters continues from its "
                            "adapters and their base, saved beside each checkpoint. Restore the "
                            "file or start the run anew (without --c).")
        return torch.load(path, map_location="cpu", weights_only=True)

    def adapted_state(self, network: nn.Module, checkpoint_path: str, merged: dict) -> dict:
        """The state dict of `network` (with its adapters) for the checkpoint at
        `checkpoint_path`: the base weights from their file, the other weights from the
        checkpoint's `merged` ones; adapters as the network has them for now."""
        base = self._read(self.base_path(checkpoint_path))
        state = {}
        for key, value in unwrap(network).state_dict().items():
            if key.endswith(_ORIGINAL):
                state[key] = base[key[:-len(_ORIGINAL)] + "weight"]
            elif ".parametrizations." in "." + key:
                state[key] = value
            else:
                state[key] = merged[key]
        return state

    @contextmanager
    def adapted_checkpoint(self, network: nn.Module, checkpoint_path: str, checkpoint: dict):
        """A file holding `checkpoint` with `network`'s own state (base and adapters from
        their files, the rest merged = unadapted) for nnU-Net's load_checkpoint; the adapters
        are put in once it has loaded."""
        path = os.path.join(self.folder, "resume.pth")
        atomic_torch_save(path, dict(checkpoint, network_weights=self.adapted_state(
            network, checkpoint_path, checkpoint["network_weights"])))
        try:
            yield path
            load_adapter_state_dict(network, self._read(self.adapters_path(checkpoint_path)))
        finally:
            os.remove(path)
