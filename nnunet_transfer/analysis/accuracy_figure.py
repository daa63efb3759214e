"""The headline figure of a study: test accuracy per strategy (Weatheritt et al. Figs 5-6).

With several n, accuracy against n: per strategy the mean over test cases (each case averaged
over seeds) with its std as a band, and the per-seed means as dots. With one n, a box plot per
strategy over the test cases with every case as a dot, Scratch first and the others by their
mean, best first (`reading_order`). One panel per (source, architecture) and
structure; a strategy has its palette colour in every panel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from nnunet_transfer.analysis.figures import _figure, readable_height
from nnunet_transfer.analysis.palette import strategy_color
from nnunet_transfer.evaluation.stats import METRIC_TITLES
from nnunet_transfer.training.strategies import SCRATCH


def _jitter(count: int, width: float = 0.12) -> np.ndarray:
    """Deterministic spread of `count` dots around 0."""
    return np.linspace(-width, width, count) if count > 1 else np.zeros(count)


def _against_n(axis, runs: pd.DataFrame, metric: str, strategies: list[str]) -> None:
    for strategy in strategies:
        rows = runs[runs["strategy"] == strategy]
        color = strategy_color(strategy)
        cases = rows.groupby(["n", "case"])[metric].mean().groupby("n")
        mean, std = cases.mean(), cases.std(ddof=1).fillna(0)
        axis.plot(mean.index, mean.values, color=color, marker="o", linewidth=2, label=strategy)
        axis.fill_between(mean.index, (mean - std).values, (mean + std).values, color=color,
                          alpha=0.12, linewidth=0)
        seeds = rows.groupby(["n", "seed"], dropna=False)[metric].mean().reset_index()
        axis.plot(seeds["n"], seeds[metric], color=color, marker=".", linestyle="none",
                  alpha=0.6)
    ns = sorted(runs["n"].dropna().unique())
    if ns and ns[-1] / max(ns[0], 1) >= 8:
        axis.set_xscale("log")
    axis.set_xticks(ns, [str(int(n)) for n in ns])
    axis.set_xlabel("n (target training cases)")


def reading_order(runs: pd.DataFrame, metric: str) -> list[str]:
    """The strategies as a reader looks for the best: Scratch (the reference) first, then the
    others by their mean `metric` over the test cases (each case averaged over seeds), best
    first; a strategy without a value last, in the study's order."""
    strategies = list(dict.fromkeys(runs["strategy"]))
    means = runs.groupby(["strategy", "case"])[metric].mean().groupby("strategy").mean()

    def key(strategy: str) -> tuple:
        mean = means.get(strategy, np.nan)
        return (strategy != SCRATCH.name, bool(np.isnan(mean)), -np.nan_to_num(mean))
    return sorted(strategies, key=key)    # stable: ties keep the study's order


def _per_strategy(axis, runs: pd.DataFrame, metric: str, strategies: list[str]) -> None:
    values = [runs[runs["strategy"] == s].groupby("case")[metric].mean().dropna().to_numpy()
              for s in strategies]
    boxes = axis.boxplot(values, widths=0.55, patch_artist=True, showfliers=False,
                         medianprops={"color": "black"})
    for position, (strategy, box, dots) in enumerate(zip(strategies, boxes["boxes"], values), 1):
        color = strategy_color(strategy)
        box.set(facecolor=color, alpha=0.35, edgecolor=color)
        axis.plot(position + _jitter(len(dots)), dots, color=color, marker="o",
                  markersize=4, linestyle="none")
        if len(dots):
            axis.plot([position], [dots.mean()], color="black", marker="D", markersize=4)
    axis.set_xticks(range(1, len(strategies) + 1), strategies, rotation=25, ha="right")
    ns = sorted(runs["n"].dropna().unique())
    axis.set_xlabel(f"strategy (n = {', '.join(str(int(n)) for n in ns)})" if ns
                    else "strategy")


def accuracy_figure(panels: Mapping[str, pd.DataFrame], metric: str = "dsc"):
    """Args: panels: {panel title: the per-case rows of its runs, with strategy, n, seed, case,
    structure and `metric` columns (evaluation.stats.collect_runs)}."""
    items = [(f"{title}, {structure}" if runs["structure"].nunique() > 1 else title,
              runs[runs["structure"] == structure])
             for title, runs in panels.items() for structure in dict.fromkeys(runs["structure"])]
    several_n = any(runs["n"].nunique() > 1 for _, runs in items)
    columns = min(len(items), 2 if several_n else 3)
    rows = math.ceil(len(items) / columns)
    strategies_max = max(runs["strategy"].nunique() for _, runs in items)
    per_panel = 5.5 if several_n else max(3.8, 0.75 * strategies_max + 1.5)
    width = max(8.0, per_panel * columns) if several_n else per_panel * columns
    width = min(width, 12.5)
    figure = _figure(width, readable_height(width, 3.6 * rows + (0.6 if several_n else 0)))
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
    for extra in axes.flat[len(items):]:
        extra.set_visible(False)
    for axis, (title, runs) in zip(axes.flat, items):
        strategies = reading_order(runs, metric)
        (_against_n if several_n else _per_strategy)(axis, runs, metric, strategies)
        axis.set_title(title, fontsize="medium")
        axis.grid(axis="y", alpha=0.3)
    for axis in axes[:, 0]:
        axis.set_ylabel(f"test {METRIC_TITLES.get(metric, metric)}")
    if several_n:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center",
                      ncols=min(6, len(labels)), fontsize="small")
    figure.suptitle(f"Test {METRIC_TITLES.get(metric, metric)} per strategy"
                    + (" against n\n(line: mean over cases, band: ± std, dots: seeds)"
                       if several_n else "\n(box and dots: test cases, diamond: mean)"),
                    fontsize="medium")
    return figure
