"""Self-supervised encoders from MIC-DKFZ's nnssl: a `.pth` with `network_weights` and an
`nnssl_adaptation_plan`.

The adaptation plan says where the encoder and the stem sit in the saved state dict
(`key_to_encoder`, e.g. "encoder.stages", or "stages" when only the encoder was saved;
`key_to_stem`, e.g. "encoder.stem"), which architecture was pretrained (`architecture_plans`:
ResEncL, ResidualEncoderUNet, PlainConvUNet, Primus*) and on what data (`pretrain_plan`:
spacing, normalisation, patch size). Only encoder and stem are meant for reuse (nnssl's
decoders reconstruct images, not segmentations), so their tensors are renamed to where
nnU-Net v2's ResidualEncoderUNet keeps them (`encoder.stages.*`, `encoder.stem.*`), the rest
is set aside, and the checkpoint is `encoder_only`.
"""

from __future__ import annotations

from nnunet_transfer.architectures.checkpoint_content import FORMAT_NNSSL, Content
from nnunet_transfer.errors import UserError

ADAPTATION_PLAN = "nnssl_adaptation_plan"
_UNETS = "dynamic_network_architectures.architectures.unet"
NETWORK_CLASSES = {
    "ResEncL": f"{_UNETS}.ResidualEncoderUNet",
    "NoSkipResEncL": f"{_UNETS}.ResidualEncoderUNet",
    "ResidualEncoderUNet": f"{_UNETS}.ResidualEncoderUNet",
    "PlainConvUNet": f"{_UNETS}.PlainConvUNet",
}
# Where v2's U-Nets keep what nnssl's plan points at.
V2_ENCODER, V2_STEM = "encoder.stages", "encoder.stem"


def is_nnssl(content) -> bool:
    return isinstance(content, dict) and ADAPTATION_PLAN in content


def _renamed(key: str, source_prefix: str, v2_prefix: str) -> str | None:
    if source_prefix and (key == source_prefix or key.startswith(source_prefix + ".")):
        return v2_prefix + key[len(source_prefix):]
    return None


def read_nnssl(content: dict, path: str) -> Content:
    """The encoder (and stem) of the nnssl checkpoint `content` loaded from `path`."""
    plan = content[ADAPTATION_PLAN]
    weights = content.get("network_weights")
    if not isinstance(plan, dict) or not isinstance(weights, dict):
        raise UserError(f"{path} has an '{ADAPTATION_PLAN}' but no usable 'network_weights' "
                        "or plan; it is not a complete nnssl checkpoint")
    architecture = (plan.get("architecture_plans") or {}).get("arch_class_name")
    key_to_encoder, key_to_stem = plan.get("key_to_encoder"), plan.get("key_to_stem")
    if not key_to_encoder:
        raise UserError(f"{path}: the adaptation plan names no 'key_to_encoder'; without it "
                        "the encoder's tensors cannot be told from the rest")
    mapped, origins, ignored = {}, {}, []
    known_unet = architecture in NETWORK_CLASSES
    for key, tensor in weights.items():
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
        new = (_renamed(key, key_to_stem, V2_STEM) if known_unet else None) or (
            _renamed(key, key_to_encoder, V2_ENCODER) if known_unet else
            key if key.startswith(key_to_encoder) else None)
        if new is None:
            ignored.append(key)
            continue
        mapped[new] = tensor
        if new != key:
            origins[new] = f"nnssl {key}"
    if not mapped:
        raise UserError(f"{path}: no tensor lies under the encoder key {key_to_encoder!r} the "
                        "adaptation plan gives; the checkpoint does not fit its plan")
    pretrain = plan.get("pretrain_plan") or {}
    configurations = pretrain.get("configurations") or {}
    configuration = next(iter(configurations.values()), {}) if isinstance(
        configurations, dict) else {}
    return Content(
        weights=mapped, path=path, format=FORMAT_NNSSL,
        trainer_name=content.get("trainer_name"),
        network_class=NETWORK_CLASSES.get(architecture) or (
            f"dynamic_network_architectures.architectures.primus.{architecture}"
            if str(architecture).startswith("Primus") else architecture),
        origins=origins, encoder_only=True,
        details={"architecture": architecture,
                 "arch_kwargs": (plan.get("architecture_plans") or {}).get("arch_kwargs"),
                 "configuration": next(iter(configurations), None) if isinstance(
                     configurations, dict) else None,
                 "patch_size": configuration.get("patch_size"),
                 "spacing": configuration.get("spacing"),
                 "normalization_schemes": configuration.get("normalization_schemes"),
                 "recommended_downstream_patchsize": plan.get("recommended_downstream_patchsize"),
                 "input_channels": plan.get("pretrain_num_input_channels"),
                 "key_to_encoder": key_to_encoder, "key_to_stem": key_to_stem,
                 "set_aside": len(ignored),
                 "dataset_name": pretrain.get("dataset_name"),
                 "plans_name": pretrain.get("plans_name")})
