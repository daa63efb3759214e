"""The source's plans on a target dataset (`plans-transfer`).

nnU-Net can only reuse a pretrained network when the target is preprocessed with the source's
plans (same spacing, normalisation, patch size and network). `transfer_plans` does in one call
what nnU-Net needs several commands for: fingerprint the target if needed, move the plans, fit
them to the target's channels, and preprocess. The plans come from a planned source dataset
(`--source`) or from a model folder (`--source-model`: its plans.json, or an nnU-Net v1
model's plans.pkl converted), so that a model trained elsewhere is rebuilt exactly.
"""

from __future__ import annotations

import os
import shutil

from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.checkpoints.content import FORMAT_NNSSL
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


def transferred_plans_name(source_plans: str, source_dataset: str | None) -> str:
    """The default identifier of a source's plans on a target: <plans>_from<source id>."""
    name = source_dataset or ""
    tag = name[7:10] if name.startswith("Dataset") else name.split("_")[0] or "model"
    return f"{source_plans}_from{tag}"


def model_plans(source_model: str) -> tuple[dict, str]:
    """The plans a model folder (or checkpoint) was trained with (in the current format:
    old-format plans converted), and its configuration. Raises UserError when they name a
    network class that is not installed here."""
    checkpoint = Checkpoint.read(source_model)
    if checkpoint.format == FORMAT_NNSSL:
        raise UserError(
            f"{source_model} is an nnssl checkpoint: it carries no nnU-Net plans. Plan the "
            "target as usual with the architecture it names "
            f"({checkpoint.details.get('architecture')}), e.g. nnUNetv2_plan_and_preprocess -d "
            "<target> -pl nnUNetPlannerResEncL, then train with NNUNET_TRANSFER_LOAD=encoder.")
    if not checkpoint.plans or not checkpoint.configuration:
        raise UserError(f"{source_model} records no plans (no init_args in the checkpoint and "
                        "no plans.json beside its fold folder); give the model folder as "
                        "exported, with plans.json and dataset.json")
    # nnU-Net would accept plans naming a network that is not installed and fail only when
    # training builds it: refuse them here, before anything is written.
    checkpoint.require_installed_network()
    return checkpoint.plans, checkpoint.configuration


def _moved(plans: dict, target_name: str, target_plans: str, raw: str,
           target_json: dict, example: str | None = None) -> dict:
    """`plans` for the target (as nnU-Net's move_plans_between_datasets makes them): its
    dataset name, the new identifier in plans and data identifiers, the target's reader
    (found by reading `example`, an image file of the target; default its first case's)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    source_plans = plans["plans_name"]
    moved = {**plans, "dataset_name": target_name, "plans_name": target_plans,
             "configurations": {name: dict(c) for name, c in plans["configurations"].items()}}
    for configuration in moved["configurations"].values():
        old = configuration.get("data_identifier")
        if old is not None:
            configuration["data_identifier"] = (
                target_plans + old[len(source_plans):] if old.startswith(source_plans)
                else f"{target_plans}_{old}")
    if example is None:
        cases = get_filenames_of_train_images_and_targets(raw, target_json)
        if not cases:
            raise UserError(f"the target {target_name} in {raw} has no training cases")
        example = next(iter(cases.values()))["images"][0]
    moved["image_reader_writer"] = determine_reader_writer_from_dataset_json(
        target_json, example, allow_nonmatching_filename=True, verbose=False).__name__
    return moved


def plans_for_target(plans: dict, target_name: str, target_plans: str, raw: str,
                     target_json: dict, example: str | None = None) -> tuple[dict, list[str]]:
    """`plans` moved to the target dataset in `raw` (named `target_plans`) and fitted to its
    channels, as plans-transfer writes them; with the notes on the channels' normalisation.
    nnU-Net finds the reader by reading one image: `example` (default the first case's)."""
    moved = _moved(plans, target_name, target_plans, raw, target_json, example)
    return moved, _fit_plans_to_channels(moved, len(target_json["channel_names"]))


def transfer_plans(source: str | int | None, target: str | int,
                   source_plans: str = "nnUNetPlans", target_plans: str | None = None,
                   configurations: tuple[str, ...] | None = ("3d_fullres",),
                   num_processes: int = 2,
                   source_model: str | None = None) -> tuple[str, tuple[str, ...]]:
    """Preprocess `target` with the plans of `source` (a dataset, with `source_plans`) or of
    `source_model` (a model folder); returns the target plans identifier and the
    configurations preprocessed."""
    if num_processes < 1:
        raise UserError(f"-np {num_processes}: preprocessing needs at least 1 process")
    if (source is None) == (source_model is None):
        raise UserError("give either --source (a planned dataset) or --source-model (a model "
                        "folder), not both or neither")
    if source_model is not None:
        plans, model_configuration = model_plans(source_model)
        configurations = configurations or (model_configuration,)
        source_label = os.path.abspath(source_model)
        target_name = dataset_name(target)
    else:
        source_name, target_name = dataset_name(source), dataset_name(target)
        if source_name == target_name:
            raise UserError("--source and --target are the same dataset")
        # The identifier names the data, whatever the file's own plans_name says.
        plans = {**load_plans(source_name, source_plans), "plans_name": source_plans}
        configurations = configurations or ("3d_fullres",)
        source_label = source_name
    missing = [c for c in configurations if c not in plans["configurations"]]
    if missing:
        raise UserError(f"configuration(s) {missing} are not in the plans {plans['plans_name']} "
                        f"of {source_label}; they have {sorted(plans['configurations'])}")
    target_plans = target_plans or transferred_plans_name(plans["plans_name"],
                                                          plans.get("dataset_name"))
    raw = os.path.join(os.environ["nnUNet_raw"], target_name)
    target_json = read_json(os.path.join(raw, "dataset.json"), "the target's dataset.json")
    preprocessed = os.path.join(os.environ["nnUNet_preprocessed"], target_name)
    # Imported only now: a refused source is refused without nnU-Net's planning start-up.
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints, preprocess)

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
    moved, notes = plans_for_target(plans, target_name, target_plans, raw, target_json)
    moved["transferred_from"] = {"dataset": plans.get("dataset_name"),
                                 "plans": plans["plans_name"], "notes": notes,
                                 **({"model": source_label} if source_model else {})}
    atomic_write_json(existing, moved)
    preprocess([int(target_name[7:10])], target_plans, configurations,
               num_processes=[num_processes] * len(configurations))
    return target_plans, tuple(configurations)
