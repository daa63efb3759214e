"""Whether the network class a model's plans name can be imported here, found out before anything
is built.

nnU-Net imports the class only when it builds the network (`pydoc.locate`, then a search by the
class's name through every module of dynamic_network_architectures), and a class that is not
installed ends in its ImportError after every module has been imported, and after a
`plans-transfer` has already written plans nothing can build. Here the module is looked up
with `importlib.util.find_spec` and the class taken with `getattr`, the way nnU-Net would find
it (its search by name included, by reading the modules' text instead of importing them), and a
missing one is refused with the class and what to install.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re

from nnunet_transfer.errors import UserError

NETWORKS_PACKAGE = "dynamic_network_architectures"
_SEARCHED = f"{NETWORKS_PACKAGE}.architectures"  # where nnU-Net looks for a class by name
_OWN_DISTRIBUTION = "nnunet-transfer"


def _module_found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def locate(dotted: str):
    """The object at `dotted` (module path, then attributes), or None where no module of its
    path is installed or the module lacks it. Imports the module, nothing else."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if _module_found(module):
            found = importlib.import_module(module)
            for attribute in parts[cut:]:
                found = getattr(found, attribute, None)
                if found is None:
                    return None
            return found
    return None


def _found_by_name(class_name: str) -> str | None:
    """Where nnU-Net's search by name would find `class_name` among the modules of
    dynamic_network_architectures.architectures (its fallback for classes that moved, e.g.
    the residual_unet module of old plans), read from their text: a dotted path or None."""
    spec = importlib.util.find_spec(_SEARCHED) if _module_found(_SEARCHED) else None
    if spec is None or not spec.submodule_search_locations:
        return None
    definition = re.compile(rf"^class {re.escape(class_name)}\b", re.MULTILINE)
    for folder in spec.submodule_search_locations:
        for root, _, files in sorted(os.walk(folder)):
            for name in sorted(f for f in files if f.endswith(".py")):
                with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                    if definition.search(f.read()):
                        relative = os.path.relpath(os.path.join(root, name[:-3]), folder)
                        return f"{_SEARCHED}.{relative.replace(os.sep, '.')}.{class_name}"
    return None


def network_class_path(class_name: str) -> str | None:
    """The dotted path nnU-Net would import the network class `class_name` from here: the
    path itself, or where its search by name finds it; None where it would find nothing."""
    if locate(class_name) is not None:
        return class_name
    found = _found_by_name(class_name.rsplit(".", 1)[-1])
    return found if found is not None and locate(found) is not None else None


def _pinned_requirements() -> dict[str, str]:
    """Normalised distribution name -> requirement as nnunet-transfer declares it."""
    try:
        requires = importlib.metadata.requires(_OWN_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    pinned = {}
    for requirement in requires:
        requirement = requirement.split(";")[0].strip()
        name = re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0]
        if name:
            pinned[_normalised(name)] = requirement
    return pinned


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installing(module: str) -> str:
    """What to install so that `module` imports: the requirement nnunet-transfer pins for its
    package, or the package that provides it."""
    top = module.split(".")[0]
    pinned = _pinned_requirements().get(_normalised(top))
    if pinned is not None:
        if _module_found(top):
            return (f"the installed {top} ({_version_of(top)}) lacks it: the model was made with "
                    f"another version or a fork of it; install the one that provides it "
                    f"(nnunet-transfer is tested with `pip install {pinned}`)")
        return f"install it with `pip install {pinned}`"
    return f"install the package that provides the module {module} into this environment"


def _version_of(top: str) -> str:
    for distribution in importlib.metadata.packages_distributions().get(top, []):
        try:
            return f"{distribution} {importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "version unknown"


def require_installed_network(class_name: str | None, arch_kwargs: dict,
                              requires_import: list | tuple, where: str) -> str:
    """The dotted path the network class of a configuration imports from (`class_name`, or
    where nnU-Net's search by name finds it). Raises UserError naming `where` (the plans and
    their configuration), the class and what to install when the class or one of the modules
    its arguments name (`requires_import`: conv_op, norm_op, ...) is not installed here."""
    if not class_name:
        raise UserError(f"{where} name no network class (architecture.network_class_name); "
                        "the plans are incomplete: copy them again from the model's source")
    found = network_class_path(class_name)
    if found is None:
        module = class_name.rsplit(".", 1)[0] if "." in class_name else class_name
        raise UserError(f"{where} name the network class {class_name.rsplit('.', 1)[-1]} "
                        f"({class_name}), which is not installed here, so nnU-Net cannot build "
                        f"the network: {_installing(module)}, then run this again")
    for key in requires_import:
        value = arch_kwargs.get(key)
        if value is not None and locate(str(value)) is None:
            module = str(value).rsplit(".", 1)[0]
            raise UserError(f"{where} build the network with {key} {value}, which is not "
                            f"installed here: {_installing(module)}, then run this again")
    return found
