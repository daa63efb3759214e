"""Rebuild the network of a run from an nnU-Net checkpoint, the way nnUNetv2_predict does."""

from __future__ import annotations

import torch
from torch import nn

from nnunet_transfer.errors import UserError


def network_from_checkpoint(checkpoint: dict, load_weights: bool = True) -> nn.Module:
    """The network described by a checkpoint's init_args (plans, configuration, dataset.json),
    with its weights loaded unless `load_weights` is False. Deep supervision is on, as in
    training, so every output layer exists."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    init_args = checkpoint.get("init_args")
    if not init_args or "plans" not in init_args:
        raise UserError("the checkpoint has no init_args with plans; it was not written by an "
                        "nnU-Net trainer, so its network cannot be rebuilt")
    plans_manager = PlansManager(init_args["plans"])
    configuration = plans_manager.get_configuration(init_args["configuration"])
    dataset_json = init_args["dataset_json"]
    network = nnUNetTrainer.build_network_architecture(
        plans_manager, configuration,
        determine_num_input_channels(plans_manager, configuration, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads, True)
    if load_weights:
        network.load_state_dict(checkpoint["network_weights"])
    return network


def load_checkpoint_file(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)
