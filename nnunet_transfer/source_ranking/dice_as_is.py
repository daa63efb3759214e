"""The source's own Dice on the target, as is: its prediction's labels mapped to the target's
by name (nnU-Net dataset.json `labels`), on the patches it saw.

Only labels both datasets name (background left out) are scored, on the voxels inside the
image (labels >= 0, not the patch's padding). Per label, the Dice of each patch where the label
is in the reference or the prediction (nnU-Net leaves the others out), then their mean. Sources
trained on regions (sigmoid outputs) have no argmax labels and get no Dice.
"""

from __future__ import annotations

import numpy as np

from nnunet_transfer.evaluation.metrics import overlap_scores


def label_values(labels: dict | None) -> dict[str, int]:
    """name -> value of the plain labels of a dataset.json `labels` (regions left out)."""
    values = {}
    for name, value in (labels or {}).items():
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                continue
            value = value[0]
        values[name] = int(value)
    return values


def shared_label_pairs(source_labels: dict | None, target_labels: dict,
                       source_regions: bool) -> dict[str, tuple[int, int]]:
    """name -> (source value, target value) for the labels both name, background and ignore
    left out; {} for a source trained on regions."""
    if source_regions:
        return {}
    source, target = label_values(source_labels), label_values(target_labels)
    return {name: (source[name], value) for name, value in target.items()
            if name in source and name not in ("background", "ignore")}


class DiceAsIs:
    """Per shared label, the Dice of each patch, accumulated patch by patch."""

    def __init__(self, pairs: dict[str, tuple[int, int]]):
        self.pairs = pairs
        self._scores: dict[str, list[float]] = {name: [] for name in pairs}

    def add(self, prediction: np.ndarray, seg: np.ndarray) -> None:
        """One patch: the source's argmax labels and the target's labels (-1 outside)."""
        inside = seg >= 0
        for name, (source_value, target_value) in self.pairs.items():
            reference = (seg == target_value) & inside
            predicted = (prediction == source_value) & inside
            if reference.any() or predicted.any():
                self._scores[name].append(overlap_scores(reference, predicted)[0])

    def result(self) -> dict[str, float]:
        """name -> mean Dice over the patches that count (nan when none does)."""
        return {name: float(np.mean(s)) if s else float("nan")
                for name, s in self._scores.items()}
