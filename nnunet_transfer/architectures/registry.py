"""The extra architectures by name, and the plans configuration each one becomes.

Each architecture has a template in the top-level `plans/` folder (shipped as the
`nnunet_transfer_plans` package): the network class, its own settings, the feature rule and
how many stages it keeps. `architecture_entry` combines a template with the `3d_fullres`
configuration it extends: strides, kernel sizes and layer settings come from the plans, so the
new configuration reuses the same preprocessed data and patch size.
"""

from __future__ import annotations

import copy
import json
import pydoc
from importlib import resources

from nnunet_transfer.architectures.stage_settings import features_for_stages
from nnunet_transfer.errors import UserError

ARCHITECTURES = ("karimi", "hrnet", "unetpp", "tiramisu", "autofocus", "vnet", "weatheritt")

# Keys of the base configuration's arch_kwargs that every extra architecture takes over.
INHERITED_KWARGS = ("conv_op", "norm_op", "norm_op_kwargs", "nonlin", "nonlin_kwargs",
                    "conv_bias")
IMPORTED_KWARGS = ("conv_op", "norm_op", "nonlin", "dropout_op")


def template(name: str) -> dict:
    """The template of architecture `name` (plans/<name>.json)."""
    if name not in ARCHITECTURES:
        raise UserError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    text = resources.files("nnunet_transfer_plans").joinpath(f"{name}.json").read_text()
    return json.loads(text)


def network_class(class_name: str):
    located = pydoc.locate(class_name)
    if located is None:
        raise UserError(f"cannot import the network class {class_name}")
    return located


def architecture_entry(name: str, base_arch_kwargs: dict, patch_size) -> dict:
    """The `architecture` entry of a plans configuration for `name`, derived from the base
    configuration's `arch_kwargs` (nnU-Net's U-Net) and checked against its patch size."""
    spec = template(name)
    strides = [list(s) for s in base_arch_kwargs["strides"]]
    kernel_sizes = [list(k) for k in base_arch_kwargs["kernel_sizes"]]
    n_stages = min(len(strides), spec.get("max_stages", len(strides)))
    base, maximum = spec["features"]["base"], spec["features"]["max"]
    kwargs = {key: copy.deepcopy(base_arch_kwargs[key]) for key in INHERITED_KWARGS
              if key in base_arch_kwargs}
    kwargs.update({
        "n_stages": n_stages,
        "features_per_stage": features_for_stages(n_stages, base, maximum),
        "strides": strides[:n_stages],
        "kernel_sizes": kernel_sizes[:n_stages],
    })
    kwargs.update(copy.deepcopy(spec.get("arch_kwargs", {})))
    cls = network_class(spec["network_class_name"])
    cls.check_patch_size(list(patch_size), kwargs["strides"],
                         **{k: v for k, v in kwargs.items() if k != "strides"})
    return {
        "network_class_name": spec["network_class_name"],
        "arch_kwargs": kwargs,
        "_kw_requires_import": [k for k in IMPORTED_KWARGS if kwargs.get(k) is not None],
    }


def build_network(name: str, base_arch_kwargs: dict, patch_size, input_channels: int,
                  num_classes: int, deep_supervision: bool = False):
    """Build architecture `name` exactly as nnU-Net would from the configuration we write."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    entry = architecture_entry(name, base_arch_kwargs, patch_size)
    return get_network_from_plans(entry["network_class_name"], entry["arch_kwargs"],
                                  entry["_kw_requires_import"], input_channels, num_classes,
                                  allow_init=True, deep_supervision=deep_supervision)
