"""Label maps: declared label sets, whole-number checks, and remapping to another label set.

Float-stored labels: a label file stored as float (it happens: tools that save every volume as
float32) is converted when every value is a finite whole number, because then nothing is lost;
it is refused when a value is not whole (0.5, 1.7), because that is a probability map or a label
resampled with linear interpolation, and any rounding we chose would invent a segmentation.
"""

from __future__ import annotations

import numpy as np

from nnunet_transfer.errors import UserError


class LabelValueError(ValueError):
    """A label array that cannot be used as it is; the message names the values."""


def parse_label_names(items: list[str], option: str = "--label-names") -> dict[str, int]:
    """`["background=0", "liver=1"]` or the names in value order `["background", "liver"]`."""
    labels: dict[str, int] = {}
    for position, item in enumerate(items):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not name:
            raise UserError(f"{option} {item!r}: give NAME=VALUE or just NAME (in value order)")
        try:
            labels[name] = int(value) if sep else position
        except ValueError:
            raise UserError(f"{option} {item!r}: the value must be a whole number") from None
    check_label_set(labels, option)
    return labels


def check_label_set(labels: dict[str, int], where: str) -> None:
    """nnU-Net's rule: values 0, 1, ..., K, each once, 0 being the background."""
    values = sorted(labels.values())
    if len(set(values)) != len(values):
        twice = sorted({v for v in values if values.count(v) > 1})
        raise UserError(f"{where}: value(s) {twice} are given to more than one label name")
    if values != list(range(len(values))) or len(values) < 2:
        raise UserError(f"{where}: nnU-Net needs labels 0 (background), 1, 2, ... without gaps; "
                        f"got {labels}. Remap the values (a label map) or fix the names")


def parse_channel_names(items: list[str], option: str = "--channels") -> dict[int, str]:
    """Channel names in channel order, e.g. `["T1", "T2"]`; "CT" selects nnU-Net's CT
    normalisation, anything else per-image z-scoring."""
    if not items or any(not item.strip() for item in items):
        raise UserError(f"{option}: give one non-empty name per channel, e.g. {option} MRI")
    return {i: item.strip() for i, item in enumerate(items)}


def whole_number_labels(array: np.ndarray) -> tuple[np.ndarray, str | None]:
    """The label array as integers, and a note when it had to be converted from floats.

    Raises LabelValueError for non-finite, non-whole or negative values.
    """
    note = None
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise LabelValueError(f"label stored as {array.dtype} holds NaN or infinite values")
        values = np.unique(array)
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise LabelValueError(
                f"label stored as {array.dtype} holds values that are not whole numbers (e.g. "
                f"{', '.join(f'{v:g}' for v in fractional[:3])}): a probability map or a label "
                "resampled with linear interpolation; fix the file (threshold it or resample with "
                "nearest neighbour)")
        note = (f"label stored as {array.dtype}; its values {_list(values.astype(np.int64))} are "
                "whole numbers and were written as integers")
        array = np.round(array).astype(np.int64)
    elif array.dtype.kind not in "iu":
        raise LabelValueError(f"label stored as {array.dtype}, not numbers")
    if array.size and array.min() < 0:
        raise LabelValueError(f"label holds negative values (e.g. {int(array.min())})")
    return array, note


def check_values(array: np.ndarray, labels: dict[str, int]) -> list[int]:
    """The values of `array` that are not among the declared labels (sorted)."""
    return sorted(set(np.unique(array).tolist()) - set(labels.values()))


def declared(labels: dict[str, int]) -> str:
    return ", ".join(f"{v} ({n})" for n, v in sorted(labels.items(), key=lambda kv: kv[1]))


def resolve_label_map(mapping: dict, source_labels: dict[str, int] | None,
                      target_labels: dict[str, int], where: str) -> dict[int, int]:
    """{source value: target value} from a user's mapping whose keys are source values or
    source label names and whose values are target values or target label names."""
    resolved = {}
    for key, value in mapping.items():
        source = _label_value(key, source_labels or {}, f"{where}: source label {key!r}")
        target = _label_value(value, target_labels, f"{where}: target of {key!r}")
        if target not in target_labels.values():
            raise UserError(f"{where}: {key!r} maps to {value!r}, which is not one of the labels "
                            f"{declared(target_labels)}")
        resolved[source] = target
    return resolved


def remap(array: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Apply {source value: target value} to an integer label array (a lookup table)."""
    unmapped = sorted(set(np.unique(array).tolist()) - set(mapping))
    if unmapped:
        raise LabelValueError(f"label holds value(s) {_list(unmapped)} that the label map does "
                              f"not map (it maps {_list(sorted(mapping))})")
    table = np.zeros(max(max(mapping), int(array.max(initial=0))) + 1, dtype=np.int64)
    for source, target in mapping.items():
        table[source] = target
    return table[array]


def smallest_label_dtype(array: np.ndarray) -> type:
    return np.uint8 if array.max(initial=0) <= np.iinfo(np.uint8).max else np.uint16


def _label_value(key, names: dict[str, int], what: str) -> int:
    if isinstance(key, bool):
        raise UserError(f"{what}: expected a label value or name")
    if isinstance(key, int):
        return key
    text = str(key).strip()
    if text in names:
        return names[text]
    try:
        return int(text)
    except ValueError:
        known = f"; known names: {', '.join(names)}" if names else ""
        raise UserError(f"{what} is neither a whole number nor a label name{known}") from None


def _list(values) -> str:
    return ", ".join(str(int(v)) for v in values)
