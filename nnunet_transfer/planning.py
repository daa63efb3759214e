"""Plans for transfer: the source's plans on a target dataset, and small plans for CPUs.

nnU-Net can only reuse a pretrained network when the target is preprocessed with the source's
plans (same spacing, normalisation, patch size and network). `transfer_plans` does in one call
what nnU-Net needs several commands for: fingerprint the target if needed, move the plans, fit
them to the target's channels, and preprocess.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil

from nnunet_transfer.errors import UserError
from nnunet_transfer.atomic_files import atomic_write_json


def _env_folder(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise UserError(f"the environment variable {variable} is not set; export it as for "
                        f"nnU-Net (export {variable}=/path/to/folder)")
    return value


def dataset_name(dataset: str | int) -> str:
    """nnU-Net's DatasetXXX_Name for an id or name, with a clear error when it does not exist."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    _env_folder("nnUNet_raw")
    _env_folder("nnUNet_preprocessed")
    try:
        return maybe_convert_to_dataset_name(dataset if isinstance(dataset, str) and
                                             dataset.startswith("Dataset") else int(dataset))
    except ValueError:
        raise UserError(f"{dataset!r} is neither a dataset id (e.g. 501) nor a DatasetXXX_Name") \
            from None
    except RuntimeError as error:
        if "More than one" in str(error):
            raise UserError(f"dataset id {dataset} is used by more than one dataset folder "
                            f"({error}); rename one of them") from None
        known = sorted(set(_listdir(os.environ["nnUNet_raw"])
                           + _listdir(os.environ["nnUNet_preprocessed"])))
        raise UserError(
            f"no dataset with id {dataset} in nnUNet_raw ({os.environ['nnUNet_raw']}) or "
            f"nnUNet_preprocessed ({os.environ['nnUNet_preprocessed']}); known datasets: "
            f"{', '.join(known) or 'none'}") from None


def _entries(folder: str, keep) -> list[str]:
    return sorted(e for e in os.listdir(folder) if keep(e)) if os.path.isdir(folder) else []


def _listdir(folder: str) -> list[str]:
    return _entries(folder, lambda e: e.startswith("Dataset"))


def plans_path(dataset: str, plans: str) -> str:
    return os.path.join(os.environ["nnUNet_preprocessed"], dataset, plans + ".json")


def load_plans(dataset: str, plans: str) -> dict:
    path = plans_path(dataset, plans)
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        available = [f[:-5] for f in
                     _entries(folder, lambda e: e.endswith(".json") and "Plans" in e)]
        raise UserError(
            f"plans {plans} of {dataset} not found ({path}). Available: "
            f"{', '.join(available) or 'none'}. Plan the dataset first: "
            f"nnUNetv2_plan_and_preprocess -d {dataset[7:10]} -c 3d_fullres")
    with open(path) as f:
        return json.load(f)


def _read_json(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    with open(path) as f:
        return json.load(f)


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
    target_json = _read_json(os.path.join(raw, "dataset.json"), "the target's dataset.json")
    preprocessed = os.path.join(os.environ["nnUNet_preprocessed"], target_name)
    existing = plans_path(target_name, target_plans)
    if os.path.isfile(existing) and "transferred_from" not in _read_json(existing, "plans"):
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
    moved = _read_json(moved_path, "the transferred plans")
    notes = _fit_plans_to_channels(moved, len(target_json["channel_names"]))
    moved["transferred_from"] = {"dataset": source_name, "plans": source_plans, "notes": notes}
    atomic_write_json(moved_path, moved)
    preprocess([int(target_name[7:10])], target_plans, configurations,
               num_processes=[num_processes] * len(configurations))
    return target_plans


# Per-stage lists in dynamic_network_architectures' U-Net kwargs (encoder and decoder side).
_STAGE_KEYS = ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
               "n_blocks_per_stage")
_DECODER_STAGE_KEYS = ("n_conv_per_stage_decoder",)


def small_topology(patch: list[int], max_stages: int, min_size: int = 4
                   ) -> tuple[list[int], list[list[int]]]:
    """Strides that halve each axis while it stays >= 2 * min_size, and the patch rounded so
    that every stage divides evenly."""
    sizes, strides = list(patch), [[1] * len(patch)]
    while len(strides) < max_stages:
        stride = [2 if s >= 2 * min_size else 1 for s in sizes]
        if stride == [1] * len(patch):
            break
        strides.append(stride)
        sizes = [s // st for s, st in zip(sizes, stride)]
    factor = [math.prod(s[i] for s in strides) for i in range(len(patch))]
    rounded = [max(f, (p // f) * f) for p, f in zip(patch, factor)]
    return rounded, strides


def make_small_plans(dataset: str | int, base_plans: str = "nnUNetPlans",
                     name: str = "nnUNetPlansSmallCPU", configuration: str = "3d_fullres",
                     patch_size: list[int] | None = None, base_features: int = 8,
                     max_features: int = 64, batch_size: int = 2, max_stages: int = 4) -> str:
    """Write plans `name` for `dataset`: the base configuration with a small network, patch
    and batch, reusing the base's preprocessed data. Returns the path written."""
    dataset = dataset_name(dataset)
    plans = copy.deepcopy(load_plans(dataset, base_plans))
    if configuration not in plans["configurations"]:
        raise UserError(f"configuration {configuration} is not in {base_plans} of {dataset}")
    config = plans["configurations"][configuration]
    if "architecture" not in config:
        raise UserError(f"{configuration} inherits its network; name a configuration that "
                        "defines 'architecture'")
    if name == base_plans:
        raise UserError(f"--name {name} would overwrite the base plans; choose another name")
    for option, value, least in (("--features", base_features, 1),
                                 ("--max-features", max_features, base_features),
                                 ("--batch", batch_size, 1), ("--stages", max_stages, 2)):
        if value < least:
            raise UserError(f"{option} {value}: must be at least {least}")
    base_patch = config["patch_size"]
    patch = patch_size or [min(p, 32) for p in base_patch]
    if len(patch) != len(base_patch) or min(patch) < 1:
        raise UserError(f"--patch needs {len(base_patch)} positive sizes, got {patch}")
    patch, strides = small_topology(patch, max_stages)
    n = len(strides)
    kwargs = config["architecture"]["arch_kwargs"]
    for key in _STAGE_KEYS:
        if key in kwargs:
            kwargs[key] = list(kwargs[key][:n]) + [kwargs[key][-1]] * max(0, n - len(kwargs[key]))
    for key in _DECODER_STAGE_KEYS:
        if key in kwargs:
            kwargs[key] = list(kwargs[key][:n - 1]) + [kwargs[key][-1]] * max(
                0, n - 1 - len(kwargs[key]))
    kwargs.update(n_stages=n, strides=strides,
                  features_per_stage=[min(base_features * 2 ** i, max_features) for i in range(n)],
                  kernel_sizes=[[3] * len(patch) for _ in range(n)])
    config.update(patch_size=patch, batch_size=batch_size)
    # The data identifier stays the base's: spacing and normalisation are unchanged, so the
    # preprocessed data is shared and nothing is preprocessed again.
    plans["plans_name"] = name
    path = plans_path(dataset, name)
    atomic_write_json(path, plans)
    return path


def architecture_configuration_name(base_configuration: str, architecture: str) -> str:
    return f"{base_configuration}_{architecture}"


def add_architectures(dataset: str | int, plans_identifier: str = "nnUNetPlans",
                      architectures: list[str] | None = None,
                      base_configuration: str = "3d_fullres",
                      replace: bool = False) -> list[tuple[str, str]]:
    """Add one configuration per extra architecture to a dataset's plans.

    Each new configuration `<base>_<architecture>` inherits everything from `base` (data
    identifier, patch size, spacing, normalisation, batch size), so nnU-Net trains it on the
    data already preprocessed for `base`; only its `architecture` entry differs. All
    architectures are checked before the plans file is written, and it is written atomically:
    a refusal leaves the file as it was. Returns (configuration, what happened) pairs.
    """
    from nnunet_transfer.architectures.registry import ARCHITECTURES, architecture_entry

    dataset = dataset_name(dataset)
    names = list(architectures or ARCHITECTURES)
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown:
        raise UserError(f"unknown architecture(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(ARCHITECTURES)}")
    plans = load_plans(dataset, plans_identifier)
    configurations = plans["configurations"]
    if base_configuration not in configurations:
        raise UserError(f"configuration {base_configuration} is not in {plans_identifier} of "
                        f"{dataset} (it has {', '.join(sorted(configurations))})")
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    base = PlansManager(plans).get_configuration(base_configuration).configuration
    if base["architecture"]["arch_kwargs"].get("conv_op", "").endswith("Conv2d"):
        raise UserError(f"{base_configuration} is a 2D configuration; the extra architectures "
                        "are 3D: add them to 3d_fullres or 3d_lowres")

    outcome, conflicts = [], []
    for architecture in dict.fromkeys(names):
        name = architecture_configuration_name(base_configuration, architecture)
        entry = {"inherits_from": base_configuration,
                 "architecture": architecture_entry(
                     architecture, base["architecture"]["arch_kwargs"], base["patch_size"])}
        existing = configurations.get(name)
        if existing == entry:
            outcome.append((name, "already present, unchanged"))
        elif existing is not None and not replace:
            conflicts.append(name)
        else:
            configurations[name] = entry
            outcome.append((name, "replaced" if existing is not None else "added"))
    if conflicts:
        raise UserError(
            f"{plans_path(dataset, plans_identifier)} already has configuration(s) "
            f"{', '.join(conflicts)} that differ from what the templates give now (edited by "
            "hand, or made from other base settings); nothing was written. Add --replace to "
            "overwrite them (runs trained with the old ones keep their own plans.json)")
    if any(what != "already present, unchanged" for _, what in outcome):
        atomic_write_json(plans_path(dataset, plans_identifier), plans)
    return outcome
