"""Checkpoints in the formats users bring, made in tests: an nnU-Net v1 model folder written
by v1's own Generic_UNet, and an nnssl checkpoint with the keys nnssl documents.

nnU-Net 1.7.1 is installed without its (old) dependencies into <venv>/nnunet_v1 by
`make setup`; only its network module is imported from there.
"""

from __future__ import annotations

import json
import os
import pickle
import pydoc
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


def write_nnssl_encoder(path: str, features=(4, 8), seed: int = 0) -> str:
    """An nnssl checkpoint at `path` of a small ResidualEncoderUNet (one block per stage, 3x3x3
    kernels, stride 2 below the first stage: patch axes divisible by 2 ** (stages - 1));
    returns `path`."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    kwargs = plain_arch_kwargs(list(features))
    kwargs.pop("n_conv_per_stage")
    kwargs.update(n_blocks_per_stage=[1] * len(features),
                  n_conv_per_stage_decoder=[1] * (len(features) - 1))
    built = {k: (pydoc.locate(v) if k in ("conv_op", "norm_op", "nonlin") else v)
             for k, v in kwargs.items()}
    torch.manual_seed(seed)
    network = ResidualEncoderUNet(1, num_classes=2, deep_supervision=True, **built)
    torch.save(nnssl_checkpoint(network, kwargs, [32, 32, 32]), path)
    return path


PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def plain_arch_kwargs(features: list[int], patch_dims: int = 3) -> dict:
    """arch_kwargs of a PlainConvUNet as nnU-Net's planner writes them (3x3x3 kernels,
    stride 2 below the first stage, two convolutions per stage)."""
    n = len(features)
    return {"n_stages": n, "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3] * patch_dims] * n,
            "strides": [[1] * patch_dims] + [[2] * patch_dims] * (n - 1),
            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1),
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}


def v2_plans(arch_kwargs: dict, patch: list, network_class: str = PLAIN_CONV_UNET,
             dataset_name: str = "Dataset123_Elsewhere", plans_name: str = "nnUNetPlans",
             configuration: str = "3d_fullres",
             requires_import: tuple = ("conv_op", "norm_op", "dropout_op", "nonlin")) -> dict:
    """plans.json as nnU-Net v2 (2.3 on) writes it, with one configuration."""
    linear = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": dataset_name, "plans_name": plans_name,
        "original_median_spacing_after_transp": [1.0] * len(patch),
        "original_median_shape_after_transp": [p + 8 for p in patch],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {configuration: {
            "data_identifier": f"{plans_name}_{configuration}",
            "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": list(patch), "median_image_size_in_voxels": [p + 8 for p in patch],
            "spacing": [1.0] * len(patch), "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {**linear, "order": 3},
            "resampling_fn_seg_kwargs": {**linear, "is_seg": True},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": linear,
            "architecture": {"network_class_name": network_class, "arch_kwargs": arch_kwargs,
                             "_kw_requires_import": list(requires_import)},
            "batch_dice": True}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0,
            "percentile_99_5": 1.0, "std": 1.0}},
    }


def old_format_plans(plans: dict) -> dict:
    """`plans` in the format of nnU-Net 2.0-2.2 (UNet_class_name and friends instead of
    `architecture`), as the plans of older published models are written."""
    old = json.loads(json.dumps(plans))
    for configuration in old["configurations"].values():
        architecture = configuration.pop("architecture")
        kwargs = architecture["arch_kwargs"]
        configuration.update({
            "UNet_class_name": architecture["network_class_name"].rsplit(".", 1)[-1],
            "UNet_base_num_features": kwargs["features_per_stage"][0],
            "unet_max_num_features": max(kwargs["features_per_stage"]),
            "n_conv_per_stage_encoder": kwargs.get("n_conv_per_stage")
            or kwargs["n_blocks_per_stage"],
            "n_conv_per_stage_decoder": kwargs["n_conv_per_stage_decoder"],
            "num_pool_per_axis": [sum(s[d] > 1 for s in kwargs["strides"])
                                  for d in range(len(kwargs["strides"][0]))],
            "pool_op_kernel_sizes": kwargs["strides"], "conv_kernel_sizes": kwargs["kernel_sizes"]})
    return old


def write_v2_model(root: str, plans: dict, dataset_json: dict, weights: dict,
                   trainer: str = "nnUNetTrainer", with_init_args: bool = True) -> str:
    """A v2 model folder as nnU-Net exports it: <trainer>__<plans>__<configuration>/ with
    plans.json, dataset.json and fold_0/checkpoint_final.pth; returns the folder."""
    configuration = next(iter(plans["configurations"]))
    folder = os.path.join(root, f"{trainer}__{plans['plans_name']}__{configuration}")
    os.makedirs(os.path.join(folder, "fold_0"), exist_ok=True)
    for name, content in (("plans.json", plans), ("dataset.json", dataset_json)):
        with open(os.path.join(folder, name), "w") as f:
            json.dump(content, f)
    init_args = {"plans": plans, "configuration": configuration, "fold": 0,
                 "dataset_json": dataset_json}
    torch.save({"network_weights": weights, "current_epoch": 1000, "trainer_name": trainer,
                **({"init_args": init_args} if with_init_args else {})},
               os.path.join(folder, "fold_0", "checkpoint_final.pth"))
    return folder
