"""Where nnU-Net keeps a dataset's plans: the dataset's full name from an id, the plans file's
path, and reading it, with errors that list what exists instead."""

from __future__ import annotations

import json
import os

from nnunet_transfer.errors import UserError


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


def read_json(path: str, what: str) -> dict:
    """The JSON object in `path`; UserError naming `what` and the file where it is missing,
    not JSON, or not an object."""
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        with open(path) as f:
            content = json.load(f)
    except (ValueError, OSError) as error:   # JSONDecodeError and UnicodeDecodeError included
        raise UserError(f"{what} cannot be read: {path} ({type(error).__name__}: {error}); "
                        "restore the file or write it again") from None
    if not isinstance(content, dict):
        raise UserError(f"{what} is not a JSON object: {path}; restore the file or write it "
                        "again")
    return content

