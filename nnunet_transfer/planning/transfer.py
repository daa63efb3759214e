"""The source's plans on a target dataset (`plans-transfer`).

nnU-Net can only reuse a pretrained network when the target is preprocessed with the source's
plans (same spacing, normalisation, patch size and network). `transfer_plans` does in one call
what nnU-Net needs several commands for: fingerprint the target if needed, move the plans, fit
them to the target's channels, and preprocess.
"""

from __future__ import annotations

import os
import shutil

from nnunet_transfer.atomic_files import atomic_write_json
from nnunet_transfer.errors import UserError
from nnunet_transfer.planning.plans_files import dataset_name, load_plans, plans_path, read_json


def _fit_plans_to_channels(plans: dict, n_channels: int) -> list[str]:
    """Give every configuration one normalisation scheme per target channel; return notes."""
    notes = []
    for name, configuration in plans["configurations"].items():
        schemes = configuration.get("normalization_schemes")
        if schemes is None or len(schemes) == n_channels:
            continue
        if len(set(schemes)) != 1:
            raise UserError(
                f"the source normalises its {len(schemes)} channels differently ({schemes}) and "
                f"the target has {n_channels}; there is no sound way to map them. Give the "
                "target the source's channels, or plan the target itself.")
        configuration["normalization_schemes"] = schemes[:1] * n_channels
        configuration["use_mask_for_norm"] = configuration["use_mask_for_norm"][:1] * n_channels
        notes.append(f"{name}: {schemes[0]} for each of the target's {n_channels} channels")
    properties = plans.get("foreground_intensity_properties_per_channel")
    if properties and len(properties) != n_channels:
        first = properties[sorted(properties)[0]]
        plans["foreground_intensity_properties_per_channel"] = {
            str(i): first for i in range(n_channels)}
    return notes


def transfer_plans(source: str | int, target: str | int, source_plans: str = "nnUNetPlans",
                   target_plans: str | None = None,
                   configurations: tuple[str, ...] = ("3d_fullres",),
                   num_processes: int = 2) -> str:
    """Preprocess `target` with the plans of `source`; returns the target plans identifier."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints, preprocess)
    from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import (
        move_plans_between_datasets)

    if num_processes < 1:
        raise UserError(f"-np {num_processes}: preprocessing needs at least 1 process")
    source_name, target_name = dataset_name(source), dataset_name(target)
    if source_name == target_name:
        raise UserError("--source and --target are the same dataset")
    plans = load_plans(source_name, source_plans)
    missing = [c for c in configurations if c not in plans["configurations"]]
    if missing:
        raise UserError(f"configuration(s) {missing} are not in {source_plans} of {source_name}; "
                        f"it has {sorted(plans['configurations'])}")
    target_plans = target_plans or f"{source_plans}_from{source_name[7:10]}"
    raw = os.path.join(os.environ["nnUNet_raw"], target_name)
    target_json = read_json(os.path.join(raw, "dataset.json"), "the target's dataset.json")
    preprocessed = os.path.join(os.environ["nnUNet_preprocessed"], target_name)
    existing = plans_path(target_name, target_plans)
    if os.path.isfile(existing) and "transferred_from" not in read_json(existing, "plans"):
        raise UserError(f"{existing} exists and was not made by plans-transfer; overwriting it "
                        "would replace the target's own plans. Choose another --target-plans.")
    if not os.path.isfile(os.path.join(preprocessed, "dataset_fingerprint.json")):
        # nnU-Net's trainer copies the fingerprint into every run folder, so the target needs one.
        try:
            extract_fingerprints([int(target_name[7:10])], num_processes=num_processes,
                                 check_dataset_integrity=True, clean=False)
        except (AssertionError, RuntimeError, StopIteration) as error:
            raise UserError(
                f"the target {target_name} in {raw} does not pass nnU-Net's dataset check: "
                f"{error or type(error).__name__}. Run nnUNetv2_plan_and_preprocess -d "
                f"{target_name[7:10]} --verify_dataset_integrity -no_pp for details.") from None
    # nnU-Net's planner leaves dataset.json beside the plans; preprocessing reads it there.
    shutil.copyfile(os.path.join(raw, "dataset.json"), os.path.join(preprocessed, "dataset.json"))
    move_plans_between_datasets(source_name, target_name, source_plans, target_plans)
    moved_path = plans_path(target_name, target_plans)
    moved = read_json(moved_path, "the transferred plans")
    notes = _fit_plans_to_channels(moved, len(target_json["channel_names"]))
    moved["transferred_from"] = {"dataset": source_name, "plans": source_plans, "notes": notes}
    atomic_write_json(moved_path, moved)
    preprocess([int(target_name[7:10])], target_plans, configurations,
               num_processes=[num_processes] * len(configurations))
    return target_plans
