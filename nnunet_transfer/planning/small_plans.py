"""Small plans for CPUs (`small-plans`): the base configuration with a small network, patch and
batch that trains in seconds, on the base's preprocessed data."""

from __future__ import annotations

import copy
import math

from nnunet_transfer.atomic_files import atomic_write_json
from nnunet_transfer.errors import UserError
from nnunet_transfer.planning.plans_files import dataset_name, load_plans, plans_path
from nnunet_transfer.value_rules import NotAllowed, whole_number


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
        try:
            whole_number(least).check(value)
        except NotAllowed as refusal:
            raise UserError(f"{option} {refusal}") from None
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
