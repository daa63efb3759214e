"""Checkpoints in the formats users bring, made in tests: an nnU-Net v1 model folder written
by v1's own Generic_UNet, and an nnssl checkpoint with the keys nnssl documents.

nnU-Net 1.7.1 is installed without its (old) dependencies into <venv>/nnunet_v1 by
`make setup`; only its network module is imported from there.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

NNUNET_V1 = os.path.join(sys.prefix, "nnunet_v1")
V1_TRAINER_FOLDER = ("nnUNet", "3d_fullres", "Task099_Toy", "nnUNetTrainerV2__nnUNetPlansv2.1")


V1_MISSING = f"nnunet 1.7.1 is not installed in {NNUNET_V1} (make setup installs it)"


def v1_available() -> bool:
    return os.path.isdir(os.path.join(NNUNET_V1, "nnunet"))


def generic_unet_class():
    """v1's Generic_UNet and its He initialisation; skips (saying why) where v1 is absent."""
    if not v1_available():
        pytest.skip(V1_MISSING)
    if NNUNET_V1 not in sys.path:
        sys.path.append(NNUNET_V1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nnunet.network_architecture.generic_UNet import Generic_UNet
        from nnunet.network_architecture.initialization import InitWeights_He
    return Generic_UNet, InitWeights_He


def v1_network(in_channels: int, classes: int, pools: list, kernels: list,
               features: int = 8) -> nn.Module:
    """A Generic_UNet built as nnUNetTrainerV2.initialize_network builds it, with norm
    weights moved off their init so that a mix-up of them would show."""
    generic_unet, init_he = generic_unet_class()
    network = generic_unet(
        in_channels, features, classes, len(pools), 2, 2, nn.Conv3d, nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, nn.Dropout3d, {"p": 0, "inplace": True}, nn.LeakyReLU,
        {"negative_slope": 1e-2, "inplace": True}, True, False, lambda x: x, init_he(1e-2),
        pools, kernels, False, True, True)
    with torch.no_grad():
        for key, tensor in network.state_dict().items():
            if "instnorm" in key:
                tensor.add_(torch.randn_like(tensor) * 0.1)
    return network.eval()


def v1_plans(patch: list, spacing: list, pools: list, kernels: list, channels: dict) -> dict:
    """plans.pkl content as nnU-Net v1's planner writes it (numpy values, integer keys)."""
    return {
        "plans_per_stage": {0: {
            "batch_size": 2, "patch_size": np.array(patch),
            "current_spacing": np.array(spacing, dtype=float),
            "median_patient_size_in_voxels": np.array(patch) + 4,
            "pool_op_kernel_sizes": pools, "conv_kernel_sizes": kernels}},
        "normalization_schemes": {i: ("CT" if name == "CT" else "nonCT")
                                  for i, name in channels.items()},
        "use_mask_for_norm": {i: False for i in channels},
        "num_modalities": len(channels), "modalities": dict(channels), "all_classes": [1],
        "dataset_properties": {"intensityproperties": {i: {
            "mn": -1000.0, "mx": np.float64(2000.0), "mean": 50.0, "sd": 100.0, "median": 40.0,
            "percentile_00_5": -900.0, "percentile_99_5": 1500.0} for i in channels}},
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "original_spacings": [np.array(spacing, dtype=float)] * 3,
        "original_sizes": [np.array(patch) + 4] * 3,
    }


def write_v1_model(root: str, network: nn.Module, plans: dict,
                   labels: dict | None = None) -> str:
    """A v1 trainer folder (plans.pkl, fold_0/model_final_checkpoint.model + .pkl, and a v1
    dataset.json when `labels` are given, e.g. {"0": "background", "1": "organ"});
    returns the trainer folder."""
    folder = os.path.join(root, *V1_TRAINER_FOLDER)
    os.makedirs(os.path.join(folder, "fold_0"), exist_ok=True)
    with open(os.path.join(folder, "plans.pkl"), "wb") as f:
        pickle.dump(plans, f)
    model = os.path.join(folder, "fold_0", "model_final_checkpoint.model")
    torch.save({"epoch": 1000, "state_dict": network.state_dict(), "optimizer_state_dict": None,
                "plot_stuff": ([np.float64(0.5)], [0.4], [0.3], [np.float64(0.2)])}, model)
    with open(model + ".pkl", "wb") as f:
        pickle.dump({"init": (os.path.join(folder, "plans.pkl"), 0, folder, None, True, None,
                              True, True, True),
                     "name": "nnUNetTrainerV2", "plans": plans}, f)
    if labels is not None:
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            json.dump({"labels": labels, "modality": {
                str(k): v for k, v in plans["modalities"].items()}}, f)
    return folder


def nnssl_checkpoint(network: nn.Module, arch_kwargs: dict, patch: list) -> dict:
    """An nnssl checkpoint of a ResidualEncoderUNet as nnssl's trainers save it: the whole
    pretraining network in network_weights and the adaptation plan (AdaptationPlan.serialize)."""
    return {
        "network_weights": network.state_dict(),
        "trainer_name": "BaseMAETrainer",
        "current_epoch": 1000,
        "nnssl_adaptation_plan": {
            "architecture_plans": {"arch_class_name": "ResidualEncoderUNet",
                                   "arch_kwargs": arch_kwargs,
                                   "arch_kwargs_requiring_import": [
                                       "conv_op", "norm_op", "dropout_op", "nonlin"]},
            "pretrain_plan": {
                "dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                "configurations": {"onemmiso": {
                    "patch_size": patch, "spacing": [1, 1, 1],
                    "normalization_schemes": ["ZScoreNormalization"]}}},
            "pretrain_num_input_channels": 1,
            "recommended_downstream_patchsize": patch,
            "key_to_encoder": "encoder.stages",
            "key_to_stem": "encoder.stem",
            "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"],
            "key_to_lpe": None,
        },
    }
