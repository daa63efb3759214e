"""Model folders: where the checkpoint file of a folder a user points at lies, and what the
folder records beside it.

nnU-Net v2 writes `<trainer>__<plans>__<configuration>/` with plans.json, dataset.json and
`fold_X/checkpoint_final.pth` (public models such as TotalSegmentator's ship that layout);
nnU-Net v1 writes `<trainer>__<plans>/` with plans.pkl and
`fold_X/model_final_checkpoint.model` (+ `.model.pkl`). A user may name the trainer folder,
a fold folder or the file.
"""

from __future__ import annotations

import json
import os
import re

from nnunet_transfer.checkpoints.lfs_pointer import refuse_lfs_pointer
from nnunet_transfer.errors import UserError

# In the order they are preferred: the final weights, then the best, of v2 and of v1.
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth",
                    "model_final_checkpoint.model", "model_best.model")
_FOLD = re.compile(r"^fold_(\d+|all)$")


def _checkpoint_in(folder: str) -> str | None:
    for name in CHECKPOINT_NAMES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def folds(trainer_folder: str) -> list[str]:
    """The fold folders of a trainer folder that hold a checkpoint, fold_0 .. fold_all."""
    if not os.path.isdir(trainer_folder):
        return []
    found = [e for e in os.listdir(trainer_folder) if _FOLD.match(e)
             and _checkpoint_in(os.path.join(trainer_folder, e))]
    return sorted(found, key=lambda e: (e == "fold_all", int(e[5:]) if e[5:].isdigit() else 0))


def checkpoint_file(folder: str) -> str:
    """The checkpoint a folder stands for: its own (a fold folder), else the first fold's."""
    own = _checkpoint_in(folder)
    if own:
        return own
    available = folds(folder)
    if available:
        return _checkpoint_in(os.path.join(folder, available[0]))
    raise UserError(
        f"{folder} is a folder without a checkpoint: no {' / '.join(CHECKPOINT_NAMES[:3])} in "
        "it or in a fold_X folder inside it. Give a model folder (the one with plans.json and "
        "fold_0/), a fold folder or the checkpoint file itself.")


def trainer_folder_of(checkpoint_path: str) -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(checkpoint_path)))


def folder_init_args(checkpoint_path: str) -> dict:
    """plans, configuration and dataset.json as the trainer folder of a v2 checkpoint records
    them (for checkpoints saved without init_args); {} when the folder lacks them."""
    folder = trainer_folder_of(checkpoint_path)
    plans_path, dataset_path = (os.path.join(folder, n) for n in ("plans.json", "dataset.json"))
    if not (os.path.isfile(plans_path) and os.path.isfile(dataset_path)):
        return {}
    plans, dataset_json = (_read_json(p) for p in (plans_path, dataset_path))
    parts = os.path.basename(folder).split("__")
    configuration = parts[2] if len(parts) == 3 else next(iter(plans.get("configurations", {})),
                                                             None)
    return {"plans": plans, "configuration": configuration, "dataset_json": dataset_json}


def trainer_of_folder(checkpoint_path: str) -> str | None:
    """The trainer name a model folder's name records (`<trainer>__<plans>...`)."""
    name = os.path.basename(trainer_folder_of(checkpoint_path))
    return name.split("__")[0] if "__" in name else None


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        refuse_lfs_pointer(path)
        raise UserError(f"{path} is not readable JSON ({error}); copy the model folder "
                        "again") from None
