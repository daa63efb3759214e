"""Weight dynamics of a run: how much each convolution changed between two checkpoints, the
snapshots a run left, and when it converged.

Per convolution or transposed convolution (module name as in `named_modules()`), between the
weights W0 (e.g. epoch 0) and W1 (e.g. the final snapshot), all norms Frobenius, in float64:

    norm_change    = | ||W1|| - ||W0|| | / ||W0||      relative change of the filter norm
    weight_change  = ||W1 - W0|| / ||W0||              relative change of the weights
    filter_norm_change_mean / _median: over the layer's output filters f (W[f] of a
        convolution, W[:, f] of a transposed one), | ||W1_f|| - ||W0_f|| | / ||W0_f||

(dimensionless; 0.25 = 25 %, Karimi et al. report < 25 % at convergence). A layer or filter whose
start norm is 0 has no relative change: NaN, and such filters are left out of the filter
statistics (`zero_filters` counts them).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nnunet_transfer.analysis.defaults import CONVERGENCE_TOLERANCE
from nnunet_transfer.checkpoints.reader import Checkpoint, CheckpointUse
from nnunet_transfer.architectures.parts import partition, unwrap
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.bookkeeping import RunRecord
from nnunet_transfer.training.run_folder import RunFolder

WeightsSource = str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d,
                 nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


# -- reading weights ---------------------------------------------------------------------------


# How the analysis reads a run's snapshot: `Checkpoint.read(path, RUN_SNAPSHOT)`.
RUN_SNAPSHOT = CheckpointUse(bare_refusal="the analysis rebuilds networks from those")


def check_same_architecture(first: WeightsSource, first_label: str, second: WeightsSource,
                            second_label: str) -> None:
    """Refuse two checkpoints (Checkpoints, dicts holding "network_weights", or state dicts)
    whose tensor names or shapes differ; the message names both labels and their network
    classes."""
    _check_same_architecture(Checkpoint.of(first, first_label),
                             Checkpoint.of(second, second_label))


def _describe(weights: Checkpoint) -> str:
    return f"{weights.label} ({weights.architecture or 'architecture not recorded'})"


def _check_same_architecture(first: Checkpoint, second: Checkpoint) -> None:
    """Refuse two state dicts whose tensor names or shapes differ, naming both."""
    only_first = sorted(set(first.weights) - set(second.weights))
    only_second = sorted(set(second.weights) - set(first.weights))
    reshaped = [f"{k}: {tuple(first.weights[k].shape)} vs {tuple(second.weights[k].shape)}"
                for k in sorted(set(first.weights) & set(second.weights))
                if first.weights[k].shape != second.weights[k].shape]
    if not (only_first or only_second or reshaped):
        return
    details = []
    if only_first:
        details.append(f"{len(only_first)} tensors only in the first (e.g. {only_first[0]})")
    if only_second:
        details.append(f"{len(only_second)} only in the second (e.g. {only_second[0]})")
    if reshaped:
        details.append(f"{len(reshaped)} with other shapes (e.g. {reshaped[0]})")
    raise UserError(f"{_describe(first)} and {_describe(second)} hold different "
                    f"architectures: {'; '.join(details)}. Compare weights of runs of the same "
                    "configuration")


# -- weight change -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerWeightChange:
    """Change of one convolution's weights between two checkpoints (see the module docstring).

    Attributes:
        layer: module name, e.g. "encoder.stages.0.0.convs.0.conv".
        part: "encoder", "decoder" or "head" (by module identity, see architectures.parts).
        module_type: "Conv3d", "ConvTranspose3d", ...
        shape: shape of the weight tensor.
        filters: number of output filters.
        norm_start, norm_end: ||W0||, ||W1||.
        norm_change: | ||W1|| - ||W0|| | / ||W0||.
        weight_change: ||W1 - W0|| / ||W0||.
        filter_norm_change_mean, filter_norm_change_median: over output filters with a
            non-zero start norm, | ||W1_f|| - ||W0_f|| | / ||W0_f||.
        zero_filters: output filters whose start norm is 0 (left out of the statistics).
    """

    layer: str
    part: str
    module_type: str
    shape: tuple[int, ...]
    filters: int
    norm_start: float
    norm_end: float
    norm_change: float
    weight_change: float
    filter_norm_change_mean: float
    filter_norm_change_median: float
    zero_filters: int


def _filter_norms(weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    """(output filters,) Frobenius norms; a transposed convolution stores (in, out, *kernel)."""
    per_output = weight.transpose(0, 1) if transposed else weight
    return per_output.reshape(per_output.shape[0], -1).norm(dim=1)


def _relative(change: float, start: float) -> float:
    return change / start if start > 0 else math.nan


def layer_weight_change(layer: str, part: str, module: nn.Module, start: torch.Tensor,
                        end: torch.Tensor) -> LayerWeightChange:
    """The change of one convolution `module` whose weight went from `start` to `end`."""
    w0, w1 = start.detach().double(), end.detach().double()
    transposed = bool(getattr(module, "transposed", False))
    norm0, norm1 = float(w0.norm()), float(w1.norm())
    filters0, filters1 = _filter_norms(w0, transposed), _filter_norms(w1, transposed)
    nonzero = filters0 > 0
    per_filter = ((filters1 - filters0).abs()[nonzero] / filters0[nonzero]).numpy()
    return LayerWeightChange(
        layer=layer, part=part, module_type=type(module).__name__, shape=tuple(w0.shape),
        filters=int(filters0.numel()), norm_start=norm0, norm_end=norm1,
        norm_change=_relative(abs(norm1 - norm0), norm0),
        weight_change=_relative(float((w1 - w0).norm()), norm0),
        filter_norm_change_mean=float(per_filter.mean()) if per_filter.size else math.nan,
        filter_norm_change_median=float(np.median(per_filter)) if per_filter.size else math.nan,
        zero_filters=int((~nonzero).sum()))


def weight_changes(start: WeightsSource, end: WeightsSource,
                   network: nn.Module | None = None) -> list[LayerWeightChange]:
    """Per convolution and transposed convolution, in module order: the change from `start`
    to `end`.

    Args:
        start, end: checkpoint paths (nnU-Net checkpoints or snapshots), checkpoint dicts
            holding "network_weights", or bare state dicts.
        network: a network of the checkpoints' architecture (its weights are not used), for the
            module types and the encoder / decoder / head split. Default: rebuilt from the
            plans in `start`'s (else `end`'s) checkpoint, as nnUNetv2_predict does.

    Raises:
        UserError when the two checkpoints, or a checkpoint and `network`, hold different
        architectures (the message names both), or when there is no network to rebuild.
    """
    first, second = Checkpoint.of(start, "state dict #1"), Checkpoint.of(end, "state dict #2")
    _check_same_architecture(first, second)
    origin = "the given network"
    if network is None:
        network, origin = _network_for(first, second), "the network rebuilt from the plans"
    network = unwrap(network)
    expected = Checkpoint(origin, network.state_dict(), network_class=type(network).__name__)
    _check_same_architecture(expected, first)
    part_of_key = partition(network).state_dict_parts(network)
    return [layer_weight_change(name, part_of_key[f"{name}.weight"], module,
                                first.weights[f"{name}.weight"], second.weights[f"{name}.weight"])
            for name, module in network.named_modules()
            if isinstance(module, _CONVOLUTIONS) and module.weight is not None]


def _network_for(*candidates: Checkpoint) -> nn.Module:
    for checkpoint in candidates:
        if checkpoint.plans:
            return checkpoint.network(load_weights=False)
    raise UserError("neither checkpoint records its plans (init_args), so the network cannot "
                    "be rebuilt; pass network= (a network of the same architecture)")


# -- snapshots and convergence -----------------------------------------------------------------


def require_run_folder(fold_folder: str) -> RunRecord:
    """The bookkeeping of the run in `fold_folder`.

    Raises:
        UserError when the folder does not exist, is a file, or is not the fold folder of a run
        of nnunet-transfer's trainers (no transfer/ folder); for a model folder holding fold_*
        folders the message names them.
    """
    if not os.path.exists(fold_folder):
        raise UserError(f"the run folder {fold_folder} does not exist")
    if not os.path.isdir(fold_folder):
        raise UserError(f"{fold_folder} is a file, not a run folder (an nnU-Net fold folder, "
                        ".../<trainer>__<plans>__<configuration>/fold_N)")
    record = RunRecord(fold_folder)
    if not os.path.isdir(record.folder):
        folds = RunFolder.fold_folders(fold_folder)
        hint = (f" It holds {', '.join(folds)}: give one of those fold folders." if folds else
                " Train with -tr nnUNetTrainer_<strategy> (see `nnunet-transfer strategies`) to "
                "get the snapshots and the epoch log the analysis needs.")
        raise UserError(f"{fold_folder} is not a run of nnunet-transfer's trainers (no "
                        f"transfer/ folder with snapshots).{hint}")
    return record


def run_snapshots(fold_folder: str) -> dict[int, str]:
    """{epochs done: snapshot path} of a run of nnunet-transfer's trainers, sorted by epoch.

    Epoch 0 holds the weights the run started from; the largest key is the final snapshot.

    Raises:
        UserError when the folder does not exist, is not such a run (no transfer/ folder) or
        holds no snapshot.
    """
    record = require_run_folder(fold_folder)
    snapshots = record.files.snapshot_paths()
    if not snapshots:
        raise UserError(f"the run {fold_folder} has no snapshots in {record.snapshot_folder} "
                        "(was it trained with --disable_checkpointing, or interrupted before "
                        "its first epoch?)")
    return snapshots


def snapshot_path(fold_folder: str, epochs_done: int) -> str:
    """The snapshot after `epochs_done` epochs; UserError listing the run's snapshot epochs
    when there is none."""
    snapshots = run_snapshots(fold_folder)
    if epochs_done not in snapshots:
        raise UserError(f"the run {fold_folder} has no snapshot after {epochs_done} epochs; it "
                        f"has snapshots after {', '.join(map(str, snapshots))} epochs "
                        "(NNUNET_TRANSFER_SNAPSHOT_EVERY sets how often they are kept)")
    return snapshots[epochs_done]


@dataclass(frozen=True)
class Convergence:
    """When a run converged, by the rule of `convergence_epoch`.

    Attributes:
        epoch: 0-based index of the epoch (the `epoch` column of epochs.csv).
        epochs_done: epoch + 1, the number of its snapshot (epoch_NNNN.pth) when one was kept.
        value: the column's value at that epoch; maximum: the run's maximum of it.
        column: the column the rule was applied to.
        iterations: training iterations done by the end of that epoch (None if not logged).
        cumulative_train_time_s, cumulative_time_s: wall time until the end of that epoch
            (training iterations only / everything), seconds; NaN if not logged.
    """

    epoch: int
    epochs_done: int
    value: float
    maximum: float
    column: str
    iterations: int | None
    cumulative_train_time_s: float
    cumulative_time_s: float


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def convergence_epoch(epochs_csv: str, tolerance: float = CONVERGENCE_TOLERANCE,
                      column: str = "pseudo_dice") -> Convergence:
    """The first epoch whose validation score is within `tolerance` (relative) of the run's
    maximum: value >= maximum - tolerance * |maximum| (Karimi et al.: 0.5 % of the maximum DSC).

    Args:
        epochs_csv: a run's transfer/epochs.csv, or its fold folder.
        tolerance: relative distance to the maximum, 0.005 = 0.5 %; 0 gives the epoch of the
            maximum.
        column: "pseudo_dice" (nnU-Net's validation pseudo-Dice of the epoch) or
            "ema_pseudo_dice" (its exponential moving average, smoother: converges later but is
            less sensitive to one lucky epoch), or any numeric column of epochs.csv.

    Epochs whose value is missing or NaN are skipped.
    """
    if not tolerance >= 0:
        raise UserError(f"the convergence tolerance must be >= 0, got {tolerance}")
    path = RunRecord(epochs_csv).epochs_path if os.path.isdir(epochs_csv) else epochs_csv
    if not os.path.isfile(path):
        raise UserError(f"no epoch log {path}; runs of nnunet-transfer's trainers write "
                        "transfer/epochs.csv in their fold folder")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames or []
    for needed in ("epoch", column):
        if needed not in columns:
            raise UserError(f"{path} has no column {needed!r}; it has {', '.join(columns)}")
    scored = [(row, _float(row[column])) for row in rows]
    scored = [(row, value) for row, value in scored if not math.isnan(value)]
    if not scored:
        raise UserError(f"{path} has no epoch with a value of {column}")
    maximum = max(value for _, value in scored)
    threshold = maximum - tolerance * abs(maximum)
    row, value = next((row, value) for row, value in scored if value >= threshold)
    epoch = int(row["epoch"])
    iterations = _float(row.get("iterations"))
    return Convergence(epoch=epoch, epochs_done=epoch + 1, value=value, maximum=maximum,
                       column=column,
                       iterations=None if math.isnan(iterations) else int(iterations),
                       cumulative_train_time_s=_float(row.get("cumulative_train_time_s")),
                       cumulative_time_s=_float(row.get("cumulative_time_s")))
