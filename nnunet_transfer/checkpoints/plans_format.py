"""Plans in nnU-Net's old format (2.0-2.2: `UNet_class_name`, `conv_kernel_sizes`, ... instead of
an `architecture` entry), as the plans of older published models are written, brought to the
current format once, when a checkpoint is read.

nnU-Net converts them itself every time it reads a configuration, each time with a warning (the
user sees it twice in one command), and names a module that no longer exists for
ResidualEncoderUNet (residual_unet), which it then finds by a search with a warning of its
own. Converting once here, with nnU-Net's own code and its warning kept off the screen, gives
plans that every later step (and the plans `plans-transfer` writes) reads silently; the caller
says in one line that they were converted.
"""

from __future__ import annotations

import copy
import warnings

from nnunet_transfer.checkpoints.network_import import network_class_path


def current_plans_format(plans: dict) -> tuple[dict, list[str]]:
    """`plans` with every configuration of the old format converted (a new dict; `plans`
    itself is left as it is), and the names of the configurations converted ([] and `plans`
    itself when there are none)."""
    configurations = plans.get("configurations") if isinstance(plans, dict) else None
    if not isinstance(configurations, dict):
        return plans, []
    if not any(isinstance(c, dict) and "UNet_class_name" in c for c in configurations.values()):
        return plans, []
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    converted, names = copy.deepcopy(plans), []
    for name in configurations:
        # nnU-Net decides what is old (a configuration may inherit the old keys); it says so
        # with its warning, recorded here instead of shown.
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            try:
                configuration = PlansManager(copy.deepcopy(plans)).get_configuration(name)
            except (KeyError, RuntimeError, TypeError):
                continue  # nnU-Net cannot convert it either; building it says why
        if not any("old nnU-Net plans format" in str(w.message) for w in shown):
            continue
        resolved = dict(configuration.configuration)
        resolved.pop("inherits_from", None)
        architecture = resolved["architecture"]
        architecture["network_class_name"] = (
            network_class_path(architecture["network_class_name"])
            or architecture["network_class_name"])
        converted["configurations"][name] = resolved
        names.append(name)
    return (converted, names) if names else (plans, [])
