"""The figures of the analyses (matplotlib, drawn off-screen with the Agg canvas).

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot, so nothing
global (backend, open figures) is touched; `outputs.write_output` saves them as PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nnunet_transfer.analysis.palette import label_color, strategy_color, strategy_of_label
from nnunet_transfer.analysis.summary import Summary

NULL_COLOR = "0.55"
# A figure is drawn at most this much wider than tall, so that a page that fits it to its width
# does not show it as a strip (below the report's 3:1: the tight box adds the labels' margins)
MAX_DRAWN_ASPECT = 2.8
BARS_PER_ROW = 36      # bars one row of a bar chart holds and still reads


def readable_height(width: float, height: float) -> float:
    """`height`, raised where it would make a figure `width` wide a strip."""
    return max(height, width / MAX_DRAWN_ASPECT)


def legend_below(figure: Figure, axis, columns: int = 4) -> None:
    """The legend of `axis`'s lines under the axes, outside them, so that it covers neither data
    nor axis labels."""
    handles, labels = axis.get_legend_handles_labels()
    if labels:
        figure.legend(handles, labels, loc="outside lower center",
                      ncols=max(1, min(columns, len(labels))), fontsize="small")


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _colors(count: int) -> list:
    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _run_styles(runs: Sequence[str]) -> dict[str, dict]:
    """Per run label: its strategy's colour, and a line style per run of that strategy (the
    seeds), so that runs of one strategy share a colour and still tell apart."""
    styles, seen = {}, {}
    for run in runs:
        color = label_color(run)
        index = seen[color] = seen.get(color, -1) + 1
        styles[run] = {"color": color, "linestyle": ("-", "--", ":", "-.")[index % 4]}
    return styles


def _grid(figure: Figure, count: int, columns: int = 3):
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    axes = figure.subplots(rows, columns, squeeze=False)
    for extra in axes.flat[count:]:
        extra.set_visible(False)
    return list(axes.flat[:count])


def _null_band(axis, summary: Summary | None, horizontal: bool = True) -> None:
    """The null baseline as a dashed line with a +- std band."""
    if summary is None or summary.n == 0:
        return
    axis.axhline(summary.mean, color=NULL_COLOR, linestyle="--", linewidth=1,
                 label="null baseline")
    if not math.isnan(summary.std):
        axis.axhspan(summary.mean - summary.std, summary.mean + summary.std,
                     color=NULL_COLOR, alpha=0.15, linewidth=0)


def _phase_changes(curve: pd.DataFrame) -> list[tuple[int, str]]:
    """(row, phase name) of each row whose `phase` differs from the row before; a run without
    the column is one phase."""
    if "phase" not in curve or len(curve) < 2:
        return []
    phases = curve["phase"].astype(str).tolist()
    return [(i, phases[i]) for i in range(1, len(phases)) if phases[i] != phases[i - 1]]


def convergence_figure(curves: Mapping[str, pd.DataFrame], points: Mapping[str, dict],
                       column: str, time_column: str,
                       strategies: Mapping[str, str] | None = None) -> Figure:
    """Validation score against iterations and against wall time: a colour per strategy (its
    runs thin, their mean by epoch bold), circles at the convergence epochs, and a triangle with
    the phase's name where a run's training phase changes (epochs.csv's `phase` column).

    Args:
        curves: {run label: epochs.csv rows with iterations, `column`, `time_column`}.
        points: {run label: {"iterations", "time", "value"}} of its convergence epoch.
        column: the score column (pseudo_dice or ema_pseudo_dice).
        time_column: cumulative seconds (cumulative_train_time_s or cumulative_time_s).
        strategies: {run label: strategy}; default: read from the label.
    """
    strategies = strategies or {label: strategy_of_label(label) for label in curves}
    figure = _figure(11, 4.6)
    by_iterations, by_time = figure.subplots(1, 2, sharey=True)
    groups: dict[str, list[str]] = {}
    for label in curves:
        groups.setdefault(strategies[label], []).append(label)
    for strategy, labels in groups.items():
        color = strategy_color(strategy)
        marked: set[tuple[str, int, str]] = set()
        for axis, x, key in ((by_iterations, "iterations", "iterations"),
                             (by_time, time_column, "time")):
            for label in labels:
                curve, point = curves[label], points[label]
                axis.plot(curve[x], curve[column], color=color, linewidth=0.8, alpha=0.45)
                at = point[key]
                if at is not None and not math.isnan(at):
                    axis.plot([at], [point["value"]], color=color, marker="o", markersize=8,
                              markerfacecolor="none", linestyle="none")
                for row, phase in _phase_changes(curve):
                    axis.plot([curve[x].iloc[row]], [curve[column].iloc[row]], color=color,
                              marker="v", markersize=8, linestyle="none")
                    if (x, row, phase) not in marked:     # one label for the seeds
                        axis.annotate(phase, (curve[x].iloc[row], curve[column].iloc[row]),
                                      xytext=(0, 7), textcoords="offset points", ha="center",
                                      fontsize="x-small", color=color,
                                      bbox={"facecolor": "white", "edgecolor": "none",
                                            "alpha": 0.8, "pad": 0.5})
                        marked.add((x, row, phase))
            mean = pd.concat([curves[label][["epoch", x, column]] for label in labels]) \
                .groupby("epoch").mean()
            axis.plot(mean[x], mean[column], color=color, linewidth=2.4,
                      label=f"{strategy} (mean of {len(labels)})" if len(labels) > 1
                      else strategy)
    by_iterations.set_xlabel("training iterations")
    by_time.set_xlabel("training wall time (s)" if time_column == "cumulative_train_time_s"
                       else "wall time, validation included (s)")
    by_iterations.set_ylabel(f"validation {column.replace('_', ' ')}")
    for axis in (by_iterations, by_time):
        axis.grid(alpha=0.3)
    legend_below(figure, by_time)
    figure.suptitle("Convergence (thin: runs, bold: mean per strategy; circles: convergence "
                    "epochs; triangles: phase changes)")
    return figure


def evolution_figure(rows: pd.DataFrame, layers: Sequence[str], measure: str, ylabel: str,
                     null: Mapping[str, Summary], title: str) -> Figure:
    """Per layer a subplot: similarity of each snapshot to the run's convergence snapshot
    against epochs done, a curve per run; the reference snapshot marked by a circle."""
    columns = min(3, len(layers))
    figure = _figure(4.3 * columns + 0.5, 3.4 * math.ceil(len(layers) / columns) + 1.2)
    runs = list(dict.fromkeys(rows["run"]))
    styles = _run_styles(runs)
    for axis, label in zip(_grid(figure, len(layers)), layers):
        layer_rows = rows[rows["layer"] == label]
        for run in runs:
            curve = layer_rows[layer_rows["run"] == run].sort_values("epoch")
            axis.plot(curve["epoch"], curve[measure], marker=".", label=run, **styles[run])
            reference = curve[curve["is_reference"]]
            axis.plot(reference["epoch"], reference[measure], marker="o", markersize=9,
                      markerfacecolor="none", color=styles[run]["color"])
        _null_band(axis, null.get(label))
        module = layer_rows["module"].iloc[0] if len(layer_rows) else ""
        axis.set_title(f"{label}\n{module}", fontsize="medium")
        axis.set_xlabel("epochs done")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    figure.axes[0].set_ylabel(ylabel)
    legend_below(figure, figure.axes[0], columns=min(6, columns * 2))
    figure.suptitle(title)
    return figure


def bars_figure(values: Mapping[str, Mapping[str, Summary]], layers: Sequence[str],
                null: Mapping[str, Summary], ylabel: str, title: str,
                points: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                colors: Mapping[str, str] | None = None) -> Figure:
    """Grouped bars: per layer one bar (mean, error bar = std) per series, the null baseline as
    a grey bar, optional individual values as dots.

    Args:
        values: {series name: {layer: Summary}}.
        points: {series name: {layer: values}} drawn over the bars.
        colors: {series name: colour} (e.g. a strategy's); the others from a cycle.
    """
    series = list(values) + ["null baseline"]
    # many layers x series: the layers go on several rows of axes instead of one long strip
    rows = max(1, math.ceil(len(layers) * len(series) / BARS_PER_ROW))
    per_row = math.ceil(len(layers) / rows) if layers else 0
    chunks = [list(layers[i:i + per_row]) for i in range(0, len(layers), per_row or 1)] or [[]]
    width = min(12.0, max(7.0, 0.35 * per_row * len(series) + 1.5))
    figure = _figure(width, readable_height(width, 3.4 * len(chunks) + 0.4 * len(series) / 3
                                            + 0.8))
    axes = figure.subplots(len(chunks), 1, squeeze=False)[:, 0]
    bar = 0.8 / len(series)
    given = colors or {}
    # series without a colour of their own (e.g. across two strategies): a muted palette,
    # hatched when others carry strategy colours, so that none is taken for a strategy
    muted = colormaps["Set2"]
    cycle = iter([muted(i % muted.N) for i in range(len(series))] if given
                 else _colors(len(series)))
    hatches = ["//" if given and name not in given else None for name in series[:-1]] + [None]
    colors = [given.get(name) or next(cycle) for name in series[:-1]] + [NULL_COLOR]
    for axis, chunk in zip(axes, chunks):
        x = np.arange(len(chunk))
        for index, (name, color) in enumerate(zip(series, colors)):
            summaries = null if name == "null baseline" else values[name]
            means = [summaries[layer].mean if layer in summaries else np.nan for layer in chunk]
            stds = [summaries[layer].std if layer in summaries else np.nan for layer in chunk]
            positions = x - 0.4 + bar * (index + 0.5)
            axis.bar(positions, means, bar, yerr=np.nan_to_num(stds), color=color, label=name,
                     hatch=hatches[index], edgecolor="white" if hatches[index] else None,
                     capsize=2, alpha=0.85)
            for position, layer in zip(positions, chunk):
                dots = (points or {}).get(name, {}).get(layer)
                if dots:
                    axis.plot([position] * len(dots), dots, linestyle="none", marker=".",
                              color="black", markersize=3)
        axis.set_xticks(x, chunk)
        axis.set_xlim(-0.5, per_row - 0.5)      # bars as wide in a short last row
        axis.set_ylabel(ylabel)
        axis.set_ylim(0, 1.05)
        axis.grid(axis="y", alpha=0.3)
    legend_below(figure, axes[0], columns=4)
    figure.suptitle(title)
    return figure


def heatmap_figure(values: Mapping[str, Mapping[str, Summary]], layers: Sequence[str],
                   null: Mapping[str, Summary], label: str, title: str) -> Figure:
    """A row per series (e.g. within / across groups) and the null baseline, a column per
    layer, the mean written in each cell (Karimi et al. Table 8 as a picture)."""
    series = [*values, "null baseline"]
    grid = np.array([[(null if name == "null baseline" else values[name]).get(
        layer, Summary(np.nan, np.nan, 0)).mean for layer in layers] for name in series], float)
    width = max(6.0, 0.9 * len(layers) + 3)
    figure = _figure(width, readable_height(width, 0.42 * len(series) + 1.6))
    axis = figure.subplots()
    image = axis.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (row, column), value in np.ndenumerate(grid):
        if not math.isnan(value):
            axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize="small",
                      color="white" if value < 0.6 else "black")
    axis.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
    axis.set_yticks(range(len(series)), series)
    figure.colorbar(image, ax=axis, label=label)
    axis.set_title(title)
    return figure


def weights_figure(table: pd.DataFrame) -> Figure:
    """Relative weight change and mean relative filter-norm change per convolution, a line per
    run, x = the convolutions in module order, background shaded by part."""
    width = min(14.0, max(9.0, 0.28 * table.groupby("run").size().max()))
    figure = _figure(width, readable_height(width, 7))
    top, bottom = figure.subplots(2, 1, sharex=True)
    runs = list(dict.fromkeys(table["run"]))
    first = table[table["run"] == runs[0]]
    same_layers = all(list(table[table["run"] == r]["layer"]) == list(first["layer"])
                      for r in runs)
    styles = _run_styles(runs)
    for run in runs:
        rows = table[table["run"] == run]
        x = np.arange(len(rows))
        top.plot(x, rows["weight_change"], marker=".", label=run, **styles[run])
        bottom.plot(x, rows["filter_norm_change_mean"], marker=".", label=run, **styles[run])
    if same_layers:
        parts = list(first["part"])
        shades = {"encoder": "#dbe9f6", "decoder": "#fbe5d6", "head": "#e2f0d9"}
        for axis in (top, bottom):
            start = 0
            for index in range(1, len(parts) + 1):
                if index == len(parts) or parts[index] != parts[start]:
                    axis.axvspan(start - 0.5, index - 0.5, color=shades.get(parts[start], "white"),
                                 zorder=0)
                    if axis is top:
                        axis.text((start + index - 1) / 2, 1.0, parts[start], ha="center",
                                  va="bottom", transform=axis.get_xaxis_transform(),
                                  fontsize="small")
                    start = index
        bottom.set_xticks(np.arange(len(first)), list(first["layer"]), rotation=90,
                          fontsize="x-small")
    else:
        bottom.set_xlabel("convolution (module order; the runs' architectures differ)")
    top.set_ylabel("||W1 - W0|| / ||W0||")
    bottom.set_ylabel("mean over filters of\n| ||W1_f|| - ||W0_f|| | / ||W0_f||")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    legend_below(figure, top, columns=min(6, len(runs)))
    figure.suptitle("Relative change of weights and filter norms per convolution")
    return figure


def _tile_central_slices(kernel: np.ndarray) -> np.ndarray:
    """(kz, ky, kx) -> the three central slices (axial, coronal, sagittal) side by side,
    separated by a NaN column (drawn blank)."""
    kz, ky, kx = kernel.shape
    slices = [kernel[kz // 2], kernel[:, ky // 2], kernel[:, :, kx // 2]]
    height = max(s.shape[0] for s in slices)
    padded = []
    for s in slices:
        block = np.full((height, s.shape[1]), np.nan)
        block[:s.shape[0]] = s
        padded += [block, np.full((height, 1), np.nan)]
    return np.concatenate(padded[:-1], axis=1)


def filters_figure(start: np.ndarray, end: np.ndarray, filters: Sequence[int],
                   input_channels: Sequence[int], changes: Sequence[float], title: str) -> Figure:
    """Selected 3D filters at start, end and their difference, as central slices.

    Args:
        start, end: the convolution's weights, (out, in, kz, ky, kx).
        filters: output filter indices, one row each.
        input_channels: per row, the input channel shown.
        changes: per row, the filter's relative norm change (written in the row title).
    """
    figure = _figure(7.5, 1.15 * len(filters) + 0.8)
    axes = figure.subplots(len(filters), 3, squeeze=False)
    for row, (f, c, change) in enumerate(zip(filters, input_channels, changes)):
        w0, w1 = start[f, c], end[f, c]
        limit = float(np.abs(np.concatenate([w0.ravel(), w1.ravel()])).max()) or 1.0
        difference = w1 - w0
        dlimit = float(np.abs(difference).max()) or limit
        for column, (kernel, cmap, vmax) in enumerate(
                ((w0, "gray", limit), (w1, "gray", limit), (difference, "RdBu_r", dlimit))):
            axis = axes[row, column]
            image = axis.imshow(_tile_central_slices(kernel), cmap=cmap, vmin=-vmax, vmax=vmax,
                                interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 2:
                figure.colorbar(image, ax=axis, fraction=0.05)
        axes[row, 0].set_ylabel(f"filter {f}\nin {c}\n{100 * change:.2g}%", fontsize="x-small",
                                rotation=0, ha="right", va="center")
    for column, name in enumerate(("start", "end", "end - start")):
        axes[0, column].set_title(name, fontsize="medium")
    figure.suptitle(f"{title}\n(central axial | coronal | sagittal slices; "
                    "% = relative change of the filter norm)", fontsize="medium")
    return figure


def feature_maps_figure(image: np.ndarray, start: np.ndarray, end: np.ndarray,
                        title: str) -> Figure:
    """The input block and a layer's feature maps at start and end (central axial slices; one
    colour scale per channel, shared by start and end).

    Args:
        image: (z, y, x) the block's first input channel.
        start, end: (channels shown, z', y', x') the layer's maps for the block.
    """
    channels = start.shape[0]
    # at most 4 channels a row (a start row and an end row each), so that 8 channels are not
    # a strip
    per_row = min(4, channels)
    groups = math.ceil(channels / per_row)
    figure = _figure(1.5 * (per_row + 1), 1.6 * 2 * groups + 0.6)
    axes = figure.subplots(2 * groups, per_row + 1, squeeze=False)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for axis in axes[1:, 0]:
        axis.set_visible(False)
    axes[0, 0].imshow(image[image.shape[0] // 2], cmap="gray")
    axes[0, 0].set_title("input", fontsize="small")
    for channel in range(per_row * groups):
        group, column = divmod(channel, per_row)
        for row, (name, maps) in enumerate((("start", start), ("end", end))):
            axis = axes[2 * group + row, column + 1]
            if channel >= channels:
                axis.set_visible(False)
                continue
            # one colour scale per channel, so that start and end compare by eye
            both = np.stack([start[channel], end[channel]])
            axis.imshow(maps[channel, maps.shape[1] // 2], cmap="viridis",
                        vmin=float(both.min()), vmax=float(both.max()))
            if row == 0:
                axis.set_title(f"channel {channel}", fontsize="small")
            if column == 0:
                axis.set_ylabel(name)
    figure.suptitle(title, fontsize="medium")
    return figure
