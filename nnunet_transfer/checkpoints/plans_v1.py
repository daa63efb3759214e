"""nnU-Net v1 plans (plans.pkl) as nnU-Net v2 plans, so that a v1 model's network is rebuilt by
v2 and a target can be preprocessed the way the v1 model saw its data.

What carries over: the stage's patch size, spacing, batch size, transpose order, the
normalisation per channel (v1 'CT' is v2's CTNormalization, 'nonCT' ZScoreNormalization,
'noNorm' NoNormalization), the foreground intensity statistics CT normalisation needs, and
the network (a PlainConvUNet with the v1 Generic_UNet's stages, features, kernels and strides,
which the caller reads off the weights: they are the one record that cannot disagree with the
file). Resampling uses v2's defaults, which are v1's (third order for images, linear for
segmentations, separate z for anisotropic data).
"""

from __future__ import annotations

import numpy as np

from nnunet_transfer.errors import UserError

NORMALISATION_V1_TO_V2 = {"CT": "CTNormalization", "nonCT": "ZScoreNormalization",
                          "noNorm": "NoNormalization"}
PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
_RESAMPLING = "resample_data_or_seg_to_shape"


def _plain(value):
    """numpy values as JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _by_channel(mapping, n_channels: int, default):
    mapping = mapping or {}
    return [mapping.get(i, mapping.get(str(i), default)) for i in range(n_channels)]


def v1_stage(v1_plans: dict, stage: int | None, source: str) -> dict:
    """The v1 plans' stage (`stage`, or the last one: v1's 3d_fullres of a two-stage plan)."""
    stages = v1_plans.get("plans_per_stage")
    if not isinstance(stages, dict) or not stages:
        raise UserError(f"{source} has no 'plans_per_stage': not nnU-Net v1 plans")
    key = stage if stage in stages else max(stages)
    return stages[key]


def v2_plans_from_v1(v1_plans: dict, stage: int | None, arch_kwargs: dict, *,
                     dataset_name: str, plans_name: str, configuration: str,
                     source: str) -> dict:
    """nnU-Net v2 plans with one configuration, `configuration`, equivalent to `stage` of
    the v1 plans read from `source` (named in errors)."""
    chosen = v1_stage(v1_plans, stage, source)
    n_channels = int(v1_plans.get("num_modalities") or len(v1_plans.get("modalities") or {0: 0}))
    dims = len(chosen["patch_size"])
    schemes_v1 = _by_channel(v1_plans.get("normalization_schemes"), n_channels, "nonCT")
    unknown = sorted({s for s in schemes_v1 if s not in NORMALISATION_V1_TO_V2})
    if unknown:
        raise UserError(f"{source} normalises with {unknown}, which nnU-Net v2 has no "
                        f"equivalent for (known: {sorted(NORMALISATION_V1_TO_V2)})")
    properties = (v1_plans.get("dataset_properties") or {}).get("intensityproperties") or {}
    foreground = {}
    for i, props in enumerate(_by_channel(properties, n_channels, None)):
        if props:
            foreground[str(i)] = {"max": props.get("mx"), "mean": props.get("mean"),
                                  "median": props.get("median"), "min": props.get("mn"),
                                  "percentile_00_5": props.get("percentile_00_5"),
                                  "percentile_99_5": props.get("percentile_99_5"),
                                  "std": props.get("sd")}
    spacing = list(chosen["current_spacing"])[-dims:]
    median_shape = list(chosen.get("median_patient_size_in_voxels", chosen["patch_size"]))
    linear = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    config = {
        "data_identifier": f"{plans_name}_{configuration}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(chosen.get("batch_size", 2)),
        "patch_size": list(chosen["patch_size"]),
        "median_image_size_in_voxels": median_shape[-dims:],
        "spacing": spacing,
        "normalization_schemes": [NORMALISATION_V1_TO_V2[s] for s in schemes_v1],
        "use_mask_for_norm": [bool(u) for u in _by_channel(
            v1_plans.get("use_mask_for_norm"), n_channels, False)],
        "resampling_fn_data": _RESAMPLING,
        "resampling_fn_seg": _RESAMPLING,
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0,
                                      "force_separate_z": None},
        "resampling_fn_seg_kwargs": {**linear, "is_seg": True},
        "resampling_fn_probabilities": _RESAMPLING,
        "resampling_fn_probabilities_kwargs": linear,
        "architecture": {"network_class_name": PLAIN_CONV_UNET, "arch_kwargs": arch_kwargs,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": dims == 3,
    }
    transpose_forward = list(v1_plans.get("transpose_forward", range(3)))
    original = v1_plans.get("original_spacings")
    original_median = (np.median(np.array([list(s) for s in original]), 0)[transpose_forward]
                       if original is not None and len(original) else spacing)
    return _plain({
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": list(original_median),
        "original_median_shape_after_transp": median_shape,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": transpose_forward,
        "transpose_backward": list(v1_plans.get("transpose_backward", range(3))),
        "configurations": {configuration: config},
        "experiment_planner_used": "converted from nnU-Net v1 plans by nnunet-transfer",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": foreground,
    })
