"""nnU-Net v1 models (`fold_X/model_final_checkpoint.model` + `.model.pkl`, `plans.pkl`) as
nnU-Net v2 PlainConvUNet weights.

v1's Generic_UNet and v2's PlainConvUNet compute the same function with other module names.
The tensors are mapped by structure, not by spelling: each is identified by (stage, conv in
the stage, role, parameter) on both sides and its shape checked against the v2 network
rebuilt from the v1 architecture:

    conv_blocks_context.{s}.blocks.{c}.conv|instnorm      encoder.stages.{s}.0.convs.{c}.conv|norm
    conv_blocks_context.{last}.{j}.blocks.{b}...          (the bottleneck: two stacks, counted on)
    conv_blocks_localization.{u}.{j}.blocks.{b}...        decoder.stages.{u}.convs.{c}...
    tu.{u}.weight                                         decoder.transpconvs.{u}.weight
    seg_outputs.{u}.weight                                decoder.seg_layers.{u}.weight

v1's transposed convolutions and output layers have no bias (nnUNetTrainerV2 builds them
without), v2's do: those biases are zero, which leaves the function unchanged, and
`origins` says so. The architecture (stages, features, kernels, strides, convs per stage, norm)
is read off the weights themselves; the plans give patch size, spacing and normalisation.
One difference is not a naming one: v1's decoder stage u convolves with the kernel of the
stage below it, v2's with the kernel of the stage it joins. Where these differ (anisotropic
plans) the tensor is delivered in its v1 shape under the v2 name, for the loader's kernel
adaptation; where all kernels agree the two networks compute the same function.
"""

from __future__ import annotations

import json
import os
import pydoc
import re

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_transfer.checkpoints.content import FORMAT_V1, Content
from nnunet_transfer.checkpoints.plans_v1 import v2_plans_from_v1
from nnunet_transfer.checkpoints.safe_loading import load_pickle, load_torch
from nnunet_transfer.errors import UserError

V1_SUFFIX = ".model"
V1_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
_CONV = re.compile(r"^(conv_blocks_context|conv_blocks_localization)\.(\d+)\.(?:(\d+)\.)?"
                   r"blocks\.(\d+)\.conv\.weight$")
_V2_CONV = re.compile(r"^(encoder\.stages\.(\d+)\.0|decoder\.stages\.(\d+))\.convs\.(\d+)\."
                      r"(conv|norm)\.(.+)$")
_V2_LAYER = re.compile(r"^decoder\.(transpconvs|seg_layers)\.(\d+)\.(weight|bias)$")
ZERO_BIAS = "bias set to zero: v1 has none"


def _conv_prefixes(weights: dict, path: str) -> dict[str, list[list[str]]]:
    """For the encoder ('conv_blocks_context') and decoder ('conv_blocks_localization'): per
    stage, the v1 prefixes of its convolutions in the order they run."""
    found: dict[str, dict[int, list[tuple[int, int, str]]]] = {}
    for key in weights:
        match = _CONV.match(key)
        if match:
            path_, stage, stack, block = match.groups()
            prefix = key[:-len(".conv.weight")]
            found.setdefault(path_, {}).setdefault(int(stage), []).append(
                (int(stack or 0), int(block), prefix))
    if "conv_blocks_context" not in found or "tu" not in {k.split(".")[0] for k in weights}:
        raise UserError(f"{path} holds no nnU-Net v1 Generic_UNet (no conv_blocks_context / "
                        "tu tensors); only Generic_UNet models are read")
    return {path_: [[p for *_, p in sorted(stages[s])] for s in sorted(stages)]
            for path_, stages in found.items()}


def v1_architecture(weights: dict, path: str) -> tuple[dict, int, int]:
    """The PlainConvUNet arch_kwargs equal to the v1 network, its input channels and classes."""
    prefixes = _conv_prefixes(weights, path)
    encoder, decoder = prefixes["conv_blocks_context"], prefixes.get("conv_blocks_localization", [])
    first = weights[encoder[0][0] + ".conv.weight"]
    dims = first.dim() - 2
    n_stages = len(encoder)
    strides = [[1] * dims] + [list(weights[f"tu.{n_stages - 1 - s}.weight"].shape[2:])
                              for s in range(1, n_stages)]
    batch_norm = any(k.endswith("instnorm.running_mean") for k in weights)
    norm = (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d) if batch_norm else (
        nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d)
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    arch_kwargs = {
        "n_stages": n_stages,
        "features_per_stage": [int(weights[s[-1] + ".conv.weight"].shape[0]) for s in encoder],
        "conv_op": f"{conv.__module__}.{conv.__name__}",
        "kernel_sizes": [list(weights[s[0] + ".conv.weight"].shape[2:]) for s in encoder],
        "strides": strides,
        "n_conv_per_stage": [len(s) for s in encoder],
        "n_conv_per_stage_decoder": [len(s) for s in decoder],
        "conv_bias": encoder[0][0] + ".conv.bias" in weights,
        "norm_op": f"{norm.__module__}.{norm.__name__}",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }
    return arch_kwargs, int(first.shape[1]), int(weights["seg_outputs.0.weight"].shape[0])


def _layout(arch_kwargs: dict, in_channels: int, classes: int) -> nn.Module:
    """The v2 network's layout: built on torch's meta device (shapes, no values), since only
    its tensor names, shapes and aliases are read."""
    kwargs = {k: (pydoc.locate(v) if k in ("conv_op", "norm_op", "nonlin") else v)
              for k, v in arch_kwargs.items()}
    with torch.device("meta"):
        return PlainConvUNet(in_channels, num_classes=classes, deep_supervision=True, **kwargs)


def _v1_name(v2_key: str, prefixes: dict, v1: dict) -> str | None:
    """The v1 tensor that plays `v2_key`'s role; None for a bias v1 does not have."""
    match = _V2_CONV.match(v2_key)
    if match:
        _, enc_stage, dec_stage, conv, role, param = match.groups()
        side, stage = (("conv_blocks_context", enc_stage) if enc_stage is not None
                       else ("conv_blocks_localization", dec_stage))
        stages = prefixes.get(side, [])
        if int(stage) >= len(stages) or int(conv) >= len(stages[int(stage)]):
            return "?"
        return f"{stages[int(stage)][int(conv)]}.{'conv' if role == 'conv' else 'instnorm'}.{param}"
    match = _V2_LAYER.match(v2_key)
    if match:
        layer, index, param = match.groups()
        name = f"{'tu' if layer == 'transpconvs' else 'seg_outputs'}.{index}.{param}"
        return name if name in v1 or param == "weight" else None
    return "?"


def map_v1_weights(v1: dict, path: str) -> tuple[dict, dict, dict, int, int]:
    """v1 Generic_UNet tensors under v2 PlainConvUNet names (every alias of each v2 tensor),
    with their origins; also the arch_kwargs, input channels and classes."""
    arch_kwargs, in_channels, classes = v1_architecture(v1, path)
    prefixes = _conv_prefixes(v1, path)
    state = _layout(arch_kwargs, in_channels, classes).state_dict(keep_vars=True)
    aliases: dict[int, list[str]] = {}
    for key, tensor in state.items():
        aliases.setdefault(id(tensor), []).append(key)
    weights, origins, used = {}, {}, set()
    for keys in aliases.values():
        canonical = keys[0]
        target = state[canonical]
        name = _v1_name(canonical, prefixes, v1)
        if name is None:
            value, origin = torch.zeros(target.shape, dtype=target.dtype), ZERO_BIAS
        elif name not in v1:
            raise UserError(f"{path}: the v2 tensor {canonical} has no counterpart in the v1 "
                            f"network (looked for {name}); the model is not a Generic_UNet "
                            "nnUNetTrainerV2 builds")
        elif v1[name].shape == target.shape:
            value, origin = v1[name], f"v1 {name}"
        elif v1[name].shape[:2] == target.shape[:2] and v1[name].dim() == target.dim():
            # v1's decoder stage u convolves with the kernel of the stage below it, v2's with
            # its own: where those differ the tensor keeps its v1 shape, for the loader's
            # kernel adaptation, and says so.
            value = v1[name]
            origin = (f"v1 {name}, kernel {'x'.join(map(str, v1[name].shape[2:]))} where v2 "
                      f"has {'x'.join(map(str, target.shape[2:]))}")
        else:
            raise UserError(f"{path}: v1 tensor {name} has shape {tuple(v1[name].shape)}, its "
                            f"v2 counterpart {canonical} {tuple(target.shape)}")
        if name is not None:
            used.add(name)
        for key in keys:
            weights[key], origins[key] = value, origin
    left = sorted(set(v1) - used)
    if left:
        raise UserError(f"{path}: {len(left)} v1 tensor(s) have no place in the v2 network "
                        f"(e.g. {left[:3]}); the model is not a plain Generic_UNet")
    return weights, origins, arch_kwargs, in_channels, classes


def _v1_dataset_json(folder: str) -> dict | None:
    """A v1 dataset.json beside the model (the trainer folder or up to two levels above)."""
    for candidate in (folder, os.path.dirname(folder), os.path.dirname(os.path.dirname(folder))):
        path = os.path.join(candidate, "dataset.json")
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    return json.load(f)
            except (OSError, ValueError):
                return None
    return None


def read_v1(path: str) -> Content:
    """The v1 model `path` (…/fold_X/model_final_checkpoint.model), its `.model.pkl` beside it
    and the trainer folder's plans.pkl."""
    fold_folder = os.path.dirname(os.path.abspath(path))
    trainer_folder = os.path.dirname(fold_folder)
    info_path = path + ".pkl"
    info = load_pickle(info_path) if os.path.isfile(info_path) else {}
    plans_path = os.path.join(trainer_folder, "plans.pkl")
    if os.path.isfile(plans_path):
        v1_plans = load_pickle(plans_path)
    elif isinstance(info, dict) and isinstance(info.get("plans"), dict):
        v1_plans, plans_path = info["plans"], info_path
    else:
        raise UserError(f"{path} is an nnU-Net v1 model without its plans: neither "
                        f"{plans_path} nor {info_path} (with 'plans') exists; copy the whole "
                        "trainer folder")
    content = load_torch(path)
    if not isinstance(content, dict) or not isinstance(content.get("state_dict"), dict):
        raise UserError(f"{path} holds no 'state_dict': not an nnU-Net v1 model file")
    v1 = {k[len("module."):] if k.startswith("module.") else k: v
          for k, v in content["state_dict"].items()}
    weights, origins, arch_kwargs, in_channels, classes = map_v1_weights(v1, path)

    init = info.get("init") if isinstance(info, dict) else None
    stage = init[5] if isinstance(init, (tuple, list)) and len(init) > 5 else None
    trainer_name, _, plans_name = os.path.basename(trainer_folder).partition("__")
    task = os.path.basename(os.path.dirname(trainer_folder))
    network = os.path.basename(os.path.dirname(os.path.dirname(trainer_folder)))
    dims = len(arch_kwargs["kernel_sizes"][0])
    configuration = network if network in V1_CONFIGURATIONS else (
        "3d_fullres" if dims == 3 else "2d")
    plans = v2_plans_from_v1(v1_plans, stage, arch_kwargs,
                             dataset_name=task if task.startswith("Task") else "v1_model",
                             plans_name=plans_name or "nnUNetPlansv1", configuration=configuration,
                             source=plans_path)
    dataset_json, labels_known = _dataset_json(_v1_dataset_json(trainer_folder), v1_plans,
                                               in_channels, classes)
    return Content(
        weights=weights, path=os.path.abspath(path), format=FORMAT_V1,
        init_args={"plans": plans, "configuration": configuration, "dataset_json": dataset_json},
        trainer_name=(info.get("name") if isinstance(info, dict) else None) or trainer_name,
        origins=origins,
        details={"plans_file": plans_path, "stage": stage, "classes": classes,
                 "labels_known": labels_known, "epoch": content.get("epoch"),
                 "zero_biases": _canonical(k for k, o in origins.items() if o == ZERO_BIAS),
                 "other_kernels": _canonical(k for k, o in origins.items()
                                             if "where v2 has" in o)})


def _canonical(keys) -> list[str]:
    """Without the aliases a PlainConvUNet's state dict repeats (the encoder under the decoder,
    each conv / norm under all_modules)."""
    return sorted(k for k in keys
                  if "all_modules" not in k and not k.startswith("decoder.encoder."))


def _dataset_json(v1_dataset: dict | None, v1_plans: dict, in_channels: int,
                  classes: int) -> tuple[dict, bool]:
    """A v2 dataset.json from v1's (labels "1": "liver" become "liver": 1), and whether the
    label names are known. Without a v1 dataset.json the plans give the channel names but only
    class numbers: the labels are then placeholders ("class 1"), so that the network can be
    built, and are not offered for matching by name."""
    if v1_dataset and isinstance(v1_dataset.get("labels"), dict):
        labels = {name: int(value) for value, name in sorted(
            v1_dataset["labels"].items(), key=lambda item: int(item[0]))}
        modality = v1_dataset.get("modality") or {}
    else:
        labels = {"background": 0, **{f"class {c}": c for c in range(1, classes)}}
        modality = v1_plans.get("modalities") or {}
    channel_names = {str(k): str(v) for k, v in modality.items()} or {
        str(i): f"channel {i}" for i in range(in_channels)}
    return ({"labels": labels, "channel_names": channel_names, "file_ending": ".nii.gz",
             "numTraining": len(v1_plans.get("original_sizes") or [])},
            bool(v1_dataset and isinstance(v1_dataset.get("labels"), dict)))
