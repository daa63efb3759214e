"""`analyze weights`: per run, the relative change of every convolution between two snapshots,
pictures of selected 3D filters at start and end, and a layer's feature maps on one block at
start and end (Karimi et al. Figs 8-10).

Units: the changes are dimensionless ratios of Frobenius norms (0.25 = 25 %), see `weights`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from nnunet_transfer.analysis.defaults import CONVERGENCE_TOLERANCE
from nnunet_transfer.analysis import figures
from nnunet_transfer.analysis.blocks import BlockSampler
from nnunet_transfer.analysis.layers import default_layers, find_layer
from nnunet_transfer.analysis.outputs import Notes, Output, summary_table
from nnunet_transfer.analysis.runs import AnalysedRun, block_cases, data_spec, slug
from nnunet_transfer.analysis.weights import RUN_SNAPSHOT, LayerWeightChange, weight_changes
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.architectures.parts import PARTS
from nnunet_transfer.devices import torch_device
from nnunet_transfer.errors import UserError


@dataclasses.dataclass(frozen=True)
class PictureOptions:
    """filter_layer: convolution whose filters are drawn (None: the encoder's first);
    filters: how many filters (and feature-map channels) are drawn; feature_layer: module whose
    output maps are drawn (None: the first default encoder layer); seed, cases: the block;
    device: where the two networks run."""

    filter_layer: str | None = None
    filters: int = 8
    feature_layer: str | None = None
    seed: int = 0
    cases: tuple[str, ...] | None = None
    device: str = "auto"


def _filter_layer(changes: Sequence[LayerWeightChange], network: nn.Module,
                  name: str | None, run: AnalysedRun) -> LayerWeightChange:
    if name is None:
        encoder = [c for c in changes if c.part == "encoder"]
        if not encoder:
            raise UserError(f"run {run.label}: its network has no convolution in the encoder; "
                            "name one with --filter-layer")
        return encoder[0]
    module = find_layer(network, name, f"the network of run {run.label}")
    for change in changes:
        if change.layer == name:
            return change
    convolutions = ", ".join(c.layer for c in changes[:8])
    raise UserError(f"--filter-layer {name} is a {type(module).__name__}, not a convolution; "
                    f"convolutions of run {run.label}: {convolutions}, ...")


def _out_in(weight: torch.Tensor, transposed: bool) -> np.ndarray:
    """(out, in, kz, ky, kx) float64; a transposed convolution stores (in, out, ...)."""
    array = weight.detach().double().numpy()
    array = array.transpose(1, 0, *range(2, array.ndim)) if transposed else array
    if array.ndim != 5:
        raise UserError(f"filter pictures need 3D kernels, got a weight of shape "
                        f"{list(weight.shape)}")
    return array


def select_filters(start: np.ndarray, end: np.ndarray, count: int
                   ) -> tuple[list[int], list[int], list[float]]:
    """`count` output filters evenly spread over (out, in, kz, ky, kx) weights, for each the
    input channel with the largest start norm (the one drawn), and the filter's relative norm
    change | ||W1_f|| - ||W0_f|| | / ||W0_f|| over all its input channels (NaN for norm 0)."""
    out = start.shape[0]
    filters = sorted({int(round(i)) for i in np.linspace(0, out - 1, min(count, out))})
    channels = [int(np.argmax(np.linalg.norm(start[f].reshape(start.shape[1], -1), axis=1)))
                for f in filters]
    changes = []
    for f in filters:
        n0, n1 = np.linalg.norm(start[f]), np.linalg.norm(end[f])
        changes.append(abs(n1 - n0) / n0 if n0 > 0 else math.nan)
    return filters, channels, changes


def _feature_maps(networks: Sequence[nn.Module], layer: str, block: np.ndarray,
                  device: torch.device, channels: int) -> list[np.ndarray]:
    """The output of `layer` of each network on one block: (channels, z, y, x) each."""
    maps = []
    for network in networks:
        module = find_layer(network, layer)
        kept: list[torch.Tensor] = []
        handle = module.register_forward_hook(
            lambda _m, _i, output: kept.append(output.detach()[0, :channels].float().cpu()))
        try:
            network.to(device).eval()
            with torch.no_grad():
                network(torch.from_numpy(block[None]).to(device))
        finally:
            handle.remove()
            network.cpu()
        if not kept or kept[0].ndim != 4:
            raise UserError(f"layer {layer} does not return a 3D feature map; choose another "
                            "--feature-layer")
        maps.append(kept[0].numpy())
    return maps


def weights_analysis(runs: Sequence[AnalysedRun], start: str, end: str, pictures: PictureOptions,
                     notes: Notes, tolerance: float = CONVERGENCE_TOLERANCE,
                     column: str = "pseudo_dice"
                     ) -> Output:
    """Weight change of every convolution of each run between snapshots `start` and `end`
    (epochs done, "final" or "convergence"), and the filter and feature-map pictures."""
    device = torch_device(pictures.device)
    rows, figures_out, sampled, block_notes = [], {}, {}, []
    for run in runs:
        first = run.epoch_spec(start, tolerance, column)
        last = run.epoch_spec(end, tolerance, column)
        if first == last:
            notes.add(f"run {run.label}: start and end are the same snapshot (after {first} "
                      "epochs); every change is 0")
        begin, finish = (Checkpoint.read(run.snapshot(e), RUN_SNAPSHOT) for e in (first, last))
        start_net = begin.network()
        changes = weight_changes(begin, finish, network=start_net)
        rows += [{"run": run.label, "strategy": run.strategy, "start_epoch": first,
                  "end_epoch": last, **dataclasses.asdict(change)} for change in changes]

        chosen = _filter_layer(changes, start_net, pictures.filter_layer, run)
        transposed = chosen.module_type.startswith("ConvTranspose")
        w0 = _out_in(begin.weights[f"{chosen.layer}.weight"], transposed)
        w1 = _out_in(finish.weights[f"{chosen.layer}.weight"], transposed)
        indices, channels, filter_changes = select_filters(w0, w1, pictures.filters)
        figures_out[f"filters_{slug(run.label)}"] = figures.filters_figure(
            w0, w1, indices, channels, filter_changes,
            f"{run.label}: {chosen.layer} ({chosen.part}), epochs {first} -> {last}")

        spec = data_spec(begin)
        key = (spec.folder, spec.patch_size, run.fold)
        if key not in sampled:
            cases, cases_text = block_cases([run], spec, pictures.cases)
            sampler = BlockSampler(spec.folder, spec.patch_size, 1, seed=pictures.seed,
                                   identifiers=cases)
            sampled[key] = (sampler, cases_text)
        sampler, cases_text = sampled[key]
        block = sampler.blocks[0]
        image = sampler.read(block)
        feature_layer = pictures.feature_layer or default_layers(start_net)["encoder-1"]
        end_net = finish.network()
        maps = _feature_maps([start_net, end_net], feature_layer, image, device,
                             pictures.filters)
        figures_out[f"features_{slug(run.label)}"] = figures.feature_maps_figure(
            image[0], maps[0], maps[1],
            f"{run.label}: {feature_layer} on a block of case {block.case}, epochs {first} -> "
            f"{last}")
        block_notes.append(f"{run.label}: case {block.case}, from {cases_text}")
        del start_net, end_net, begin, finish
    table = pd.DataFrame(rows)
    table["shape"] = table["shape"].map(lambda s: "x".join(map(str, s)))
    return Output("Weight change", tables={"": table},
                  figures={"": figures.weights_figure(table), **figures_out},
                  sections=[*_sections(table, runs, pictures),
                            "Feature-map blocks (seed " f"{pictures.seed}): "
                            + "; ".join(block_notes) + "."])


def _sections(table: pd.DataFrame, runs: Sequence[AnalysedRun], pictures: PictureOptions
              ) -> list[str]:
    header = ["run", "snapshots", *(f"{part} weight change" for part in PARTS),
              *(f"{part} filter-norm change" for part in PARTS), "largest filter-norm change"]
    body = []
    for run in runs:
        rows = table[table["run"] == run.label]
        means = {(part, column): rows[rows["part"] == part][column].mean()
                 for part in PARTS for column in ("weight_change", "filter_norm_change_mean")}
        largest = rows.loc[rows["filter_norm_change_mean"].idxmax()] \
            if rows["filter_norm_change_mean"].notna().any() else None
        body.append([
            run.label, f"{rows['start_epoch'].iloc[0]} -> {rows['end_epoch'].iloc[0]}",
            *(_percent(means[(p, "weight_change")]) for p in PARTS),
            *(_percent(means[(p, "filter_norm_change_mean")]) for p in PARTS),
            "-" if largest is None else
            f"{_percent(largest['filter_norm_change_mean'])} ({largest['layer']})"])
    return [
        "Per convolution (module order; `weights.csv`), between two snapshots of each run: "
        "relative change of the weights ||W1 - W0|| / ||W0|| and of the filter norms, mean over "
        "output filters f of | ||W1_f|| - ||W0_f|| | / ||W0_f|| (Frobenius norms). The table "
        "gives their means over the convolutions of each part, in %. Frozen parts stay at 0. "
        "Karimi et al. found filter-norm changes mostly below 25 % at convergence.",
        summary_table(body, header, align_right_from=2),
        f"No null baseline applies: nothing here is a similarity. Figures: `weights.png` (both "
        f"changes per convolution, a line per run); per run `weights_filters_<run>.png` "
        f"({pictures.filters} filters of {pictures.filter_layer or 'the first encoder convolution'}"
        f" evenly spread over its output filters, central slices at start, end and their "
        f"difference; the input channel drawn is the filter's largest at start) and "
        f"`weights_features_<run>.png` (the first {pictures.filters} channels of "
        f"{pictures.feature_layer or 'the first default encoder layer'} on one block, central "
        "axial slice, at start and end)."]


def _percent(value: float) -> str:
    """0.0123 -> '1.2%'; below 1 % two significant digits ('0.034%'), so that small changes
    are not shown as the 0 of a frozen part."""
    if value is None or math.isnan(value):
        return "-"
    percent = 100 * value
    return f"{percent:.1f}%" if percent >= 1 or percent == 0 else f"{percent:.2g}%"
