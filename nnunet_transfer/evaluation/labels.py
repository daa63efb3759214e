"""Which structures an evaluation scores: the labels (or regions) of a dataset.json, or given.

A structure is a name and the label values whose union it is: a plain label is one value, an
nnU-Net region (dataset.json `"labels": {"whole": [1, 2, 3]}`) several. Background (0) is never
a structure. nnU-Net's optional `"ignore"` label is kept apart: its voxels are left out of the
evaluation (see `metrics.case_metrics`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from nnunet_transfer.errors import UserError


@dataclass(frozen=True)
class Structure:
    name: str
    values: tuple[int, ...]   # label values whose union is the structure (one for a label)

    @property
    def is_region(self) -> bool:
        return len(self.values) > 1


@dataclass(frozen=True)
class LabelSet:
    structures: tuple[Structure, ...]
    ignore_label: int | None = None
    file_ending: str | None = None    # from dataset.json, e.g. ".nii.gz"; None if not known
    source: str = ""                  # where the labels came from, for the summary


def _label_value(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < 0:
        raise UserError(f"{where}: label value {value!r} is not a whole number >= 0; fix the "
                        "label definition")
    return int(value)


def _checked(structures: list[Structure], where: str) -> tuple[Structure, ...]:
    if not structures:
        raise UserError(f"{where} defines no foreground label; give at least one label > 0")
    names = [s.name for s in structures]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"{where}: label name(s) {', '.join(duplicates)} given twice; give each "
                        "structure its own name")
    return tuple(structures)


def labels_from_dataset_json(path: str) -> LabelSet:
    """The structures of an nnU-Net dataset.json: its labels, or its regions if it has any."""
    try:
        with open(path) as f:
            dataset = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read dataset.json {path} ({error}); give a valid nnU-Net "
                        "dataset.json or the labels with --label-values") from None
    labels = dataset.get("labels") if isinstance(dataset, dict) else None
    if not isinstance(labels, dict):
        raise UserError(f"{path} has no \"labels\" mapping (name -> value); give an nnU-Net v2 "
                        "dataset.json or the labels with --label-values")
    structures, ignore = [], None
    for name, value in labels.items():
        where = f"{path}, label {name!r}"
        if name == "ignore":
            ignore = _label_value(value, where)
            continue
        values = tuple(_label_value(v, where) for v in value) if isinstance(value, (list, tuple)) \
            else (_label_value(value, where),)
        values = tuple(v for v in dict.fromkeys(values) if v != 0)
        if values:  # background, or a region made of background only, is no structure
            structures.append(Structure(str(name), values))
    ending = dataset.get("file_ending")
    return LabelSet(_checked(structures, path), ignore,
                    ending if isinstance(ending, str) and ending else None, path)


def labels_from_items(items: list[str]) -> LabelSet:
    """Structures from command-line items: `1`, `anterior=1` or a region `whole=1,2,3`."""
    structures = []
    for item in items:
        name, _, values_text = item.rpartition("=")
        try:
            values = tuple(int(v) for v in values_text.split(","))
        except ValueError:
            raise UserError(f"--label-values {item!r}: give VALUE, NAME=VALUE or NAME=V1,V2 (a "
                            "region) with whole-number values") from None
        if any(v <= 0 for v in values):
            raise UserError(f"--label-values {item!r}: label values must be > 0 (0 is "
                            f"background)")
        structures.append(Structure(name or str(values[0]), tuple(dict.fromkeys(values))))
    return LabelSet(_checked(structures, "--label-values"), None, None, "--label-values")


def find_dataset_json(prediction_folder: str, reference_folder: str) -> str | None:
    """The dataset.json nnU-Net leaves next to its predictions, else the one of the raw dataset
    the references belong to (`Dataset.../labelsTs/..` -> `Dataset.../dataset.json`)."""
    for candidate in (os.path.join(prediction_folder, "dataset.json"),
                      os.path.join(os.path.dirname(os.path.abspath(reference_folder)),
                                   "dataset.json")):
        if os.path.isfile(candidate):
            return candidate
    return None


def resolve_labels(prediction_folder: str, reference_folder: str, dataset_json: str | None,
                   label_items: list[str] | None) -> LabelSet:
    """Labels given on the command line win, then an explicit dataset.json, then one found."""
    if label_items:
        return labels_from_items(label_items)
    if dataset_json:
        if not os.path.isfile(dataset_json):
            raise UserError(f"--dataset-json {dataset_json} does not exist; give the dataset.json "
                            "of the dataset or the labels with --label-values")
        return labels_from_dataset_json(dataset_json)
    found = find_dataset_json(prediction_folder, reference_folder)
    if found is None:
        raise UserError(f"no dataset.json in {prediction_folder} or next to {reference_folder}; "
                        "give --dataset-json or the labels with --label-values (e.g. "
                        "--label-values 1 2)")
    return labels_from_dataset_json(found)
