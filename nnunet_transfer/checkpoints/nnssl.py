"""Self-supervised encoders from MIC-DKFZ's nnssl: a `.pth` with `network_weights` and an
`nnssl_adaptation_plan`.

The adaptation plan says where the encoder and the stem sit in the saved state dict
(`key_to_encoder`, e.g. "encoder.stages", or "stages" when only the encoder was saved;
`key_to_stem`, e.g. "encoder.stem"), which architecture was pretrained (`architecture_plans`:
ResEncL, ResidualEncoderUNet, PlainConvUNet, Primus*) and on what data (`pretrain_plan`:
spacing, normalisation, patch size). Only encoder and stem are meant for reuse (nnssl's
decoders reconstruct images, not segmentations), so their tensors are renamed to where
nnU-Net v2's ResidualEncoderUNet keeps them (`encoder.stages.*`, `encoder.stem.*`), the rest
is set aside, and the checkpoint is `encoder_only`. (A PlainConvUNet keeps its stem as
`encoder.stages.0`; other architectures, e.g. Primus, keep their own names.)
"""

from __future__ import annotations

from nnunet_transfer.checkpoints.content import FORMAT_NNSSL, Content
from nnunet_transfer.errors import UserError

ADAPTATION_PLAN = "nnssl_adaptation_plan"
_UNETS = "dynamic_network_architectures.architectures.unet"
_RESENC = f"{_UNETS}.ResidualEncoderUNet"
NETWORK_CLASSES = {"ResEncL": _RESENC, "NoSkipResEncL": _RESENC, "ResidualEncoderUNet": _RESENC,
                   "PlainConvUNet": f"{_UNETS}.PlainConvUNet"}
# Where v2's U-Nets keep what the plan's key_to_encoder / key_to_stem point at (their own
# key_to_encoder / key_to_stem attributes: a PlainConvUNet's stem is its first stage).
V2_KEYS = {_RESENC: ("encoder.stages", "encoder.stem"),
           f"{_UNETS}.PlainConvUNet": ("encoder.stages", "encoder.stages.0")}


def is_nnssl(content) -> bool:
    return isinstance(content, dict) and ADAPTATION_PLAN in content


def _rename(key: str, renames: list[tuple[str, str]]) -> str | None:
    """`key` under the first (source prefix, v2 prefix) it lies under; None under none."""
    for source, v2 in renames:
        if key == source or key.startswith(source + "."):
            return v2 + key[len(source):]
    return None


def read_nnssl(content: dict, path: str) -> Content:
    """The encoder (and stem) of the nnssl checkpoint `content` loaded from `path`."""
    plan = content[ADAPTATION_PLAN]
    weights = content.get("network_weights")
    if not isinstance(plan, dict) or not isinstance(weights, dict):
        raise UserError(f"{path} has an '{ADAPTATION_PLAN}' but no usable 'network_weights' "
                        "or plan; it is not a complete nnssl checkpoint")
    architecture_plans = plan.get("architecture_plans") or {}
    architecture = architecture_plans.get("arch_class_name")
    key_to_encoder, key_to_stem = plan.get("key_to_encoder"), plan.get("key_to_stem")
    if not key_to_encoder:
        raise UserError(f"{path}: the adaptation plan names no 'key_to_encoder'; without it "
                        "the encoder's tensors cannot be told from the rest")
    network_class = NETWORK_CLASSES.get(architecture) or (
        f"dynamic_network_architectures.architectures.primus.{architecture}"
        if str(architecture).startswith("Primus") else architecture)
    # The longer source prefix first: a stem inside the encoder is renamed as the stem.
    stem = key_to_stem or key_to_encoder
    v2_encoder, v2_stem = V2_KEYS.get(network_class, (key_to_encoder, stem))
    renames = sorted([(key_to_encoder, v2_encoder), (stem, v2_stem)],
                     key=lambda pair: -len(pair[0]))
    mapped, origins, ignored = {}, {}, []
    for key, tensor in weights.items():
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
        new = _rename(key, renames)
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
        network_class=network_class,
        origins=origins, encoder_only=True,
        details={"architecture": architecture,
                 "arch_kwargs": architecture_plans.get("arch_kwargs"),
                 "arch_kwargs_requiring_import": architecture_plans.get(
                     "arch_kwargs_requiring_import"),
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
