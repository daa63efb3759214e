"""nnU-Net raw datasets: their layout, naming and finding them, reading what they declare.

    DatasetXXX_Name/
        imagesTr/<case>_0000.nii.gz ...   labelsTr/<case>.nii.gz   imagesTs/<case>_0000.nii.gz
        dataset.json                      nnU-Net's, written by its generate_dataset_json
        sites.json                        {case: site} (empty when no case has one)
        nnunet_transfer_manifest.json     what each case was made from (raw_dataset_writer.py)

Writing one, case by case, is raw_dataset_writer.py's.
"""

from __future__ import annotations

import json
import os
import re

from nnunet_transfer.errors import UserError
from nnunet_transfer.value_rules import NotAllowed, whole_number

MANIFEST_NAME = "nnunet_transfer_manifest.json"
SITES_NAME = "sites.json"
FILE_ENDING = ".nii.gz"
CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# nnU-Net names a dataset DatasetXXX_Name: three digits.
DATASET_ID = whole_number(1, 999)
SPLIT_FOLDERS = {"Tr": ("imagesTr", "labelsTr"), "Ts": ("imagesTs", None)}


def case_id_problem(case: str) -> str | None:
    if CASE_ID.fullmatch(case):
        return None
    return (f"case id {case!r} has characters unsafe in nnU-Net file names; use letters, digits, "
            "'_', '-' and '.'")


def dataset_folder(raw_folder: str, dataset_id: int, name: str) -> str:
    """`raw_folder`/DatasetXXX_Name, refusing a bad id or name and an id another dataset uses."""
    try:
        DATASET_ID.check(dataset_id)
    except NotAllowed as refusal:
        raise UserError(f"dataset id {refusal}") from None
    if not DATASET_NAME.fullmatch(name or ""):
        raise UserError(f"dataset name {name!r}: use letters, digits, '_' and '-' (e.g. "
                        "Hippocampus)")
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    refuse_taken_id(raw_folder, dataset_id, folder_name)
    return os.path.join(raw_folder, folder_name)


def refuse_taken_id(raw_folder: str, dataset_id: int, folder_name: str) -> None:
    """Refuse a dataset id that a dataset other than `folder_name` uses in `raw_folder`."""
    if os.path.isdir(raw_folder):
        taken = sorted(d for d in os.listdir(raw_folder)
                       if d.startswith(f"Dataset{dataset_id:03d}_") and d != folder_name)
        if taken:
            raise UserError(f"dataset id {dataset_id} is taken by {taken[0]} in {raw_folder}; "
                            "choose another --id")


def name_of(folder: str) -> str:
    """"Hippocampus" for .../Dataset004_Hippocampus."""
    return os.path.basename(os.path.normpath(folder)).split("_", 1)[-1]


def find_dataset(raw_folder: str | None, dataset: str) -> str:
    """The folder of a raw dataset given as a folder path, a DatasetXXX_Name or an id, looked up
    in `raw_folder` (nnUNet_raw)."""
    if os.path.isdir(dataset) and os.path.isfile(os.path.join(dataset, "dataset.json")):
        return os.path.abspath(dataset)
    if not raw_folder:
        raise UserError(f"{dataset!r} is not a dataset folder; to look it up by id or name, give "
                        "--raw or export nnUNet_raw")
    entries = sorted(os.listdir(raw_folder)) if os.path.isdir(raw_folder) else []
    if str(dataset).isdigit():
        found = [e for e in entries if e.startswith(f"Dataset{int(dataset):03d}_")]
    else:
        found = [e for e in entries if e == dataset]
    if len(found) != 1 or not os.path.isfile(os.path.join(raw_folder, found[0], "dataset.json")):
        known = [e for e in entries if e.startswith("Dataset")]
        problem = "more than one dataset has" if len(found) > 1 else "no dataset with"
        raise UserError(f"{problem} id or name {dataset!r} in {raw_folder} (with a dataset.json); "
                        f"known: {', '.join(known) or 'none'}")
    return os.path.join(raw_folder, found[0])


def read_dataset_json(folder: str) -> dict:
    path = os.path.join(folder, "dataset.json")
    try:
        with open(path) as f:
            content = json.load(f)
        content["labels"], content["channel_names"], content["file_ending"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"cannot use {path} ({type(error).__name__}: {error}); nnU-Net's "
                        "dataset.json needs labels, channel_names and file_ending") from None
    return content


def read_sites(folder: str) -> dict[str, str]:
    """{case: site} from the dataset's sites.json; empty when there is none."""
    path = os.path.join(folder, SITES_NAME)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            sites = json.load(f)
        if not isinstance(sites, dict):
            raise ValueError("not a {case: site} object")
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path} ({error}); it should map case ids to sites") \
            from None
    return {str(k): str(v) for k, v in sites.items()}
