"""How nnU-Net finds our trainers: the folder on nnUNet_extTrainer."""

from __future__ import annotations

import os
import shutil
import sys
from importlib import util

from nnunet_transfer.errors import UserError


def trainers_folder() -> str:
    """The folder nnU-Net must search for our trainers (nnUNet_extTrainer)."""
    spec = util.find_spec("nnunet_transfer_trainers")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the trainers folder of nnunet-transfer is not installed; reinstall the "
                        "package (pip install -e .)")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def console_script(name: str) -> str:
    """A command installed with this environment (beside the running Python: the one whose
    packages we import, whatever PATH says), else from PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.path.exists(beside) else shutil.which(name)
    if not found:
        raise UserError(f"{name} is not installed in this environment; install the package with "
                        "its dependencies (make setup)")
    return found


def ext_trainer_value(current: str | None) -> str:
    """nnUNet_extTrainer with our trainers folder first, keeping the folders already there."""
    folder = trainers_folder()
    paths = [p for p in (current or "").split(os.pathsep) if p]
    return os.pathsep.join(paths if folder in paths else [folder, *paths])
