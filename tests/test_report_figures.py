"""The report's figures: a strategy's colour depends on its name only; the convergence figure
marks phase changes; the accuracy figure is against n or per strategy, its boxes in reading
order; every figure, saved as the report saves it, is at most 3:1 either way, with its legend
outside the axes."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from nnunet_transfer.analysis.accuracy_figure import accuracy_figure
from nnunet_transfer.analysis.figures import (
    bars_figure, convergence_figure, evolution_figure, feature_maps_figure, filters_figure,
    heatmap_figure, weights_figure)
from nnunet_transfer.analysis.palette import FIXED, strategy_color
from nnunet_transfer.analysis.summary import Summary


def test_a_strategy_colour_depends_on_its_name_only():
    assert strategy_color("FineTune") == FIXED["FineTune"]
    assert len(set(FIXED.values())) == len(FIXED)
    # a custom strategy: the same colour in another process (no salted hash)
    code = ("from nnunet_transfer.analysis.palette import strategy_color; "
            "print(strategy_color('MyStrategy'))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert other == strategy_color("MyStrategy") and other.startswith("#")


def curves(strategies, phases=None):
    out, points = {}, {}
    for strategy in strategies:
        for seed in (0, 1):
            epochs = np.arange(6)
            curve = pd.DataFrame({"epoch": epochs, "iterations": (epochs + 1) * 10,
                                  "pseudo_dice": 1 - np.exp(-(epochs + 1) / (2 + seed)),
                                  "cumulative_train_time_s": (epochs + 1) * 3.0 + seed})
            if phases and strategy in phases:
                curve["phase"] = phases[strategy]
            label = f"{strategy}_seed{seed}"
            out[label] = curve
            points[label] = {"iterations": 30, "time": 9.0, "value": 0.7}
    return out, points


def line_colors(axis):
    return {to_hex(line.get_color()) for line in axis.get_lines()}


def test_convergence_colours_by_strategy_and_phase_changes():
    phases = {"LinearProbeThenFineTune": ["probe"] * 2 + ["finetune"] * 4}
    runs, points = curves(["Scratch", "LinearProbeThenFineTune"], phases)
    figure = convergence_figure(runs, points, "pseudo_dice", "cumulative_train_time_s")
    by_iterations, by_time = figure.axes[:2]
    assert line_colors(by_iterations) == {strategy_color("Scratch"),
                                          strategy_color("LinearProbeThenFineTune")}
    labels = [text.get_text() for text in by_iterations.texts]
    assert labels == ["finetune"]          # one label for the change at epoch 2 of both seeds
    assert [text.get_text() for text in by_time.texts] == ["finetune"]
    triangles = [line for line in by_iterations.get_lines() if line.get_marker() == "v"]
    assert [list(t.get_xdata()) for t in triangles] == [[30], [30]]   # epoch 2: 30 iterations
    [legend] = figure.legends                 # below the axes, not over the curves
    assert [t.get_text() for t in legend.get_texts()] == \
        ["Scratch (mean of 2)", "LinearProbeThenFineTune (mean of 2)"]
    assert_legends_outside_the_axes(figure)
    # without the column: one phase, nothing marked
    runs, points = curves(["Scratch"])
    plain = convergence_figure(runs, points, "pseudo_dice", "cumulative_train_time_s")
    assert not plain.axes[0].texts


def per_case(ns):
    rows = []
    for strategy, base in (("Scratch", 0.6), ("FineTune", 0.75), ("Custom_1", 0.5)):
        for n in ns:
            for seed in (0, 1):
                rows += [{"case": f"c{c}", "structure": "organ", "strategy": strategy, "n": n,
                          "seed": seed, "dsc": base + 0.01 * n + 0.01 * c} for c in range(4)]
    return pd.DataFrame(rows)


def test_accuracy_against_n_and_per_strategy():
    against = accuracy_figure({"src, unet": per_case([2, 5, 10])})
    axis = against.axes[0]
    assert [t.get_text() for t in axis.get_xticklabels()] == ["2", "5", "10"]
    assert strategy_color("FineTune") in line_colors(axis)
    boxes = accuracy_figure({"src, unet": per_case([5]), "src, vnet": per_case([5])})
    assert len([a for a in boxes.axes if a.get_visible()]) == 2
    assert [t.get_text() for t in boxes.axes[0].get_xticklabels()] == \
        ["Scratch", "FineTune", "Custom_1"]


def test_boxes_in_reading_order():
    """Scratch first, then the others by their mean, best first, whatever the study's order."""
    runs = per_case([5])
    study_order = pd.concat([runs[runs["strategy"] == s]
                             for s in ("Custom_1", "FineTune", "Scratch")])
    study_order.loc[study_order["strategy"] == "Custom_1", "dsc"] += 0.2   # 0.7: between
    figure = accuracy_figure({"src, unet": study_order})
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == \
        ["Scratch", "FineTune", "Custom_1"]
    study_order.loc[study_order["strategy"] == "Custom_1", "dsc"] += 0.2   # 0.9: the best
    figure = accuracy_figure({"src, unet": study_order})
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == \
        ["Scratch", "Custom_1", "FineTune"]


def saved_aspect(figure) -> float:
    """Width / height of the PNG as the report saves it (results.save_figure, outputs)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    with Image.open(buffer) as image:
        return image.width / image.height


def assert_legends_outside_the_axes(figure) -> None:
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)   # constrained layout places the legends when drawn
    for legend in figure.legends:
        box = legend.get_window_extent(renderer)
        for axis in figure.axes:
            if axis.get_visible():
                assert not box.overlaps(axis.get_tightbbox(renderer)), axis.get_title()


def summaries(layers, mean):
    return {layer: Summary(mean, 0.05, 4) for layer in layers}


def study_figures(strategies: int, layers: int):
    names = [f"S{k}" for k in range(strategies)]
    layer_names = [f"layer{k}" for k in range(layers)]
    comparisons = [f"within {a}" for a in names] + [
        f"across {a} / {b}" for i, a in enumerate(names) for b in names[i + 1:]]
    values = {c: summaries(layer_names, 0.6) for c in comparisons}
    null = summaries(layer_names, 0.2)
    runs = [f"{name}_fold{seed}" for name in names for seed in (0, 1)]
    evolution = pd.DataFrame([{"run": run, "layer": layer, "epoch": epoch, "rsim": 0.5,
                               "is_reference": epoch == 2, "module": "m"}
                              for run in runs for layer in layer_names for epoch in range(4)])
    weights = pd.DataFrame([{"run": run, "layer": f"conv{k}", "part": part,
                             "weight_change": 0.1, "filter_norm_change_mean": 0.05}
                            for run in runs for k, part in enumerate(
                                ["encoder"] * 12 + ["decoder"] * 10 + ["head"])])
    curves_, points = curves(names)
    channels = 2 * strategies            # the weights analysis draws 8 by default
    rng = np.random.default_rng(0)
    kernels = rng.normal(size=(2, channels, 2, 3, 3, 3))
    maps = rng.normal(size=(2, channels, 8, 8, 8))
    return {
        "filters": filters_figure(kernels[0], kernels[1], list(range(channels)),
                                  [0] * channels, [0.1] * channels, "filters"),
        "feature maps": feature_maps_figure(rng.normal(size=(16, 16, 16)), maps[0], maps[1],
                                            "feature maps"),
        "bars": bars_figure(values, layer_names, null, "RSIM", "similarity"),
        "heatmap": heatmap_figure(values, layer_names, null, "RSIM", "similarity"),
        "evolution": evolution_figure(evolution, layer_names, "rsim", "RSIM", null, "evolution"),
        "weights": weights_figure(weights),
        "convergence": convergence_figure(curves_, points, "pseudo_dice",
                                          "cumulative_train_time_s"),
        "accuracy": accuracy_figure({f"panel {k}": per_case([5]) for k in range(3)}),
        "accuracy against n": accuracy_figure({"src, unet": per_case([2, 5, 10])}),
    }


@pytest.mark.parametrize("strategies, layers", [(1, 1), (4, 9), (6, 9)])
def test_figures_are_neither_strips_nor_columns(strategies, layers):
    """The demo's grid (6 strategies, 9 layers: 21 comparisons) drew the similarity bars 5:1;
    every figure stays within 3:1 either way, legends off the axes."""
    for name, figure in study_figures(strategies, layers).items():
        aspect = saved_aspect(figure)
        assert 1 / 3 <= aspect <= 3, f"{name}: {aspect:.2f}"
        assert_legends_outside_the_axes(figure)
