"""The report's figures: a strategy's colour depends on its name only; the convergence figure
marks phase changes; the accuracy figure is against n or per strategy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
from matplotlib.colors import to_hex

from nnunet_transfer.analysis.accuracy_figure import accuracy_figure
from nnunet_transfer.analysis.figures import convergence_figure
from nnunet_transfer.analysis.palette import FIXED, strategy_color


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
    legend = [t.get_text() for t in by_time.get_legend().get_texts()]
    assert legend == ["Scratch (mean of 2)", "LinearProbeThenFineTune (mean of 2)"]
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
