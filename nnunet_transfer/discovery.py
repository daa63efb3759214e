"""How nnU-Net finds our trainers: the folder on nnUNet_extTrainer."""

from __future__ import annotations

import os
from importlib import util

from nnunet_transfer.errors import UserError


def trainers_folder() -> str:
    """The folder nnU-Net must search for our trainers (nnUNet_extTrainer)."""
    spec = util.find_spec("nnunet_transfer_trainers")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the trainers folder of nnunet-transfer is not installed; reinstall the "
                        "package (pip install -e .)")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def ext_trainer_value(current: str | None) -> str:
    """nnUNet_extTrainer with our trainers folder first, keeping the folders already there."""
    folder = trainers_folder()
    paths = [p for p in (current or "").split(os.pathsep) if p]
    return os.pathsep.join(paths if folder in paths else [folder, *paths])
