"""Medical Segmentation Decathlon task folders: their cases, their dataset.json, converting one.

An MSD task folder holds imagesTr/, labelsTr/, optionally imagesTs/ (unlabelled test images) and
MSD's dataset.json, which declares labels as {value: name} and the channels as "modality". Its
4D multi-modal images are split into one file per channel (_0000, _0001, ...) by the converter.
"""

from __future__ import annotations

import json
import os
import re

from nnunet_transfer.data.convert import ConversionReport, ConversionSettings, convert_cases
from nnunet_transfer.data.geometry import GeometryTolerance
from nnunet_transfer.data.raw_dataset import name_of
from nnunet_transfer.data.sources import FoundCases, find_pairs_in_folder, list_files
from nnunet_transfer.errors import UserError


def find_msd_cases(folder: str) -> tuple[FoundCases, dict]:
    """The cases of an MSD task folder, and what its dataset.json (if any) declares."""
    if not os.path.isdir(os.path.join(folder, "imagesTr")):
        raise UserError(f"{folder} has no imagesTr/ folder; an MSD task folder holds imagesTr/, "
                        "labelsTr/ and optionally imagesTs/ and dataset.json")
    files, hidden = list_files(folder)
    training = find_pairs_in_folder(folder, ["imagesTr/{case}.nii.gz"], "labelsTr/{case}.nii.gz",
                                    files=[f for f in files if not f.startswith("imagesTs/")],
                                    hidden=hidden)
    test_files = [f for f in files if f.startswith("imagesTs/")]
    test = find_pairs_in_folder(folder, ["imagesTs/{case}.nii.gz"], None, files=test_files) \
        if any(f.endswith(".nii.gz") for f in test_files) else None
    info = _read_msd_dataset_json(folder)
    ignored = [f for f in training.ignored if f != "dataset.json" and not f.startswith("imagesTs/")]
    if test:
        ignored += test.ignored
    found = FoundCases(training.cases + (test.cases if test else []),
                       training.skipped + (test.skipped if test else []), ignored, folder)
    return found, info


def _read_msd_dataset_json(folder: str) -> dict:
    """labels {name: value}, channel_names {index: name} and descriptive fields, if present.
    MSD writes labels as {value: name}; an nnU-Net v2 dataset.json as {name: value}."""
    path = os.path.join(folder, "dataset.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            content = json.load(f)
        info = {}
        if "labels" in content:
            labels = content["labels"]
            msd_style = all(str(key).isdigit() for key in labels)
            info["labels"] = {str(name): int(value) for value, name in labels.items()} \
                if msd_style else {str(name): int(value) for name, value in labels.items()}
        if "channel_names" in content:
            info["channel_names"] = {int(k): str(v) for k, v in content["channel_names"].items()}
        if "modality" in content:
            info["channel_names"] = {int(k): str(v) for k, v in content["modality"].items()}
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise UserError(f"cannot use {path} ({error}); fix it, or move it away and give "
                        "--label-names and --channels") from None
    for key in ("name", "description", "reference", "licence", "release"):
        if isinstance(content.get(key), str):
            info[key] = content[key]
    return info


def convert_msd(source_folder: str, out_folder: str, labels: dict[str, int] | None = None,
                channel_names: dict[int, str] | None = None,
                tolerance: GeometryTolerance | None = None) -> ConversionReport:
    """Convert an MSD task folder; labels and channel names default to its dataset.json's."""
    found, info = find_msd_cases(source_folder)
    labels = labels or info.get("labels")
    channel_names = channel_names or info.get("channel_names")
    if not labels or not channel_names:
        raise UserError(f"{source_folder} has no dataset.json declaring labels and modalities; "
                        "give them, e.g. --label-names background anterior posterior --channels MRI")
    settings = ConversionSettings(labels, channel_names, tolerance or GeometryTolerance())
    fields = {k: info[k] for k in ("description", "reference", "release") if k in info}
    if "licence" in info:
        fields["license"] = info["licence"]
    return convert_cases(found, out_folder, settings, name_of(out_folder), source_folder,
                         **fields)


def msd_task_name(source_folder: str) -> str | None:
    """The name in an MSD folder's dataset.json or "TaskNN_Name" folder name, if any."""
    name = _read_msd_dataset_json(source_folder).get("name")
    match = re.fullmatch(r"Task\d+_(\w+)", os.path.basename(os.path.normpath(source_folder)))
    candidate = name or (match.group(1) if match else None)
    return re.sub(r"[^A-Za-z0-9_-]", "", candidate) if candidate else None
