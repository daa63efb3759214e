"""How much of a source fits the network the target would train under the source's plans.

That network is the source's, rebuilt for the target's channels and labels
(`Checkpoint.network(dataset_json=...)`, on the meta device and laid out without
initialising); the load is planned exactly as a fine-tuning run plans it (`plan_load`: tensors
by name, decoder levels by resolution, output channels by label name, input channels by
channel name, kernels fitted). Per part, the fraction of parameter values that would come from
the source: a tensor loaded or adapted counts whole, an output layer that takes some labels by
name counts by the share of the target's output channels it takes, a fresh one not at all.

The geometry: the spacing ratio (source spacing / target median spacing, per axis, in nnU-Net's
axis order) and the patch ratio (source patch / target median shape at the source's spacing):
a ratio far from 1 means the source sees the target at another scale or through a smaller
window than it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_transfer.architectures.parts import PARTS, partition
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.training.pretrained import plan_load
from nnunet_transfer.training.tensor_matching import input_channel_names, output_channel_names


@dataclass(frozen=True)
class Compatibility:
    """Attributes:
        loaded: part -> fraction of its parameter values that would load (0..1).
        shared_labels: the target's label names (background left out) the source also has.
        target_labels: the number of the target's labels (background left out).
        channels_matched: the target's channel names the source also has.
        target_channels: the number of the target's channels.
        spacing_ratio: source spacing / target median spacing, per axis.
        patch_ratio: source patch size / target median shape at the source's spacing, per axis.
    """

    loaded: dict[str, float]
    shared_labels: tuple[str, ...]
    target_labels: int
    channels_matched: tuple[str, ...]
    target_channels: int
    spacing_ratio: tuple[float, ...]
    patch_ratio: tuple[float, ...]


def loaded_fractions(checkpoint: Checkpoint, target_json: dict) -> dict[str, float]:
    """Per part, the fraction of parameter values of the target's network under the source's
    plans that would come from `checkpoint` (see the module's docstring)."""
    network = checkpoint.network(load_weights=False, shapes_only=True, dataset_json=target_json)
    network = network.to_empty(device="cpu")   # values are never read, only shapes and names
    report = plan_load(network, partition(network), checkpoint,
                       num_input_channels=len(target_json["channel_names"]),
                       target_dataset_json=target_json)
    target_outputs = output_channel_names(target_json.get("labels"),
                                          target_json.get("regions_class_order")) or []
    source_outputs = set(output_channel_names(checkpoint.labels,
                                              checkpoint.regions_class_order) or [])
    taken_share = (sum(n in source_outputs for n in target_outputs) / len(target_outputs)
                   if target_outputs else 0.0)
    totals = {p: 0.0 for p in PARTS}
    loaded = {p: 0.0 for p in PARTS}
    for row in report.rows:
        if not row.parameter or row.part not in totals or row.network_shape is None:
            continue
        size = float(np.prod(row.network_shape))
        totals[row.part] += size
        if row.partial:
            loaded[row.part] += size * taken_share
        elif row.from_source:
            loaded[row.part] += size
    return {p: loaded[p] / totals[p] if totals[p] else 0.0 for p in PARTS}


def shared_label_names(checkpoint: Checkpoint, target_json: dict) -> tuple[tuple[str, ...], int]:
    """(the target's label names the source has, the number of target labels), background and
    the ignore label left out."""
    wanted = [n for n in target_json["labels"] if n not in ("background", "ignore")]
    have = set(checkpoint.labels or {})
    return tuple(n for n in wanted if n in have), len(wanted)


def matched_channels(checkpoint: Checkpoint, target_json: dict) -> tuple[tuple[str, ...], int]:
    """(the target's channel names the source has, compared as `plan_load` compares them; the
    number of target channels)."""
    target = input_channel_names(target_json.get("channel_names")) or []
    source = set(input_channel_names(checkpoint.channel_names) or [])
    return tuple(n for n in target if n in source), len(target)


def geometry_ratios(source_spacing: tuple[float, ...], source_patch: tuple[int, ...],
                    case_spacings: list[tuple[float, ...]],
                    case_shapes: list[tuple[int, ...]]) -> tuple[tuple[float, ...],
                                                                 tuple[float, ...]]:
    """(spacing ratio, patch ratio) per axis: source spacing / median of the cases' spacings,
    source patch / median of the cases' shapes at the source's spacing."""
    spacing = np.median(np.asarray(case_spacings, dtype=float), axis=0)
    shape = np.median(np.asarray(case_shapes, dtype=float), axis=0)
    return (tuple(float(s) for s in np.asarray(source_spacing) / spacing),
            tuple(float(p) for p in np.asarray(source_patch) / shape))
