"""The extra architectures as configurations of a dataset's plans (`add-architectures`)."""

from __future__ import annotations

from nnunet_transfer.atomic_files import atomic_write_json
from nnunet_transfer.errors import UserError
from nnunet_transfer.planning.plans_files import dataset_name, load_plans, plans_path


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
