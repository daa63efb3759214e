"""The figure of the report's "Which source" section: each source's transferability score
(`rank-sources`, before fine-tuning) against its fine-tuned test accuracy, per strategy.

One panel per n (and architecture, where the study has several). In a panel, a strategy is a
line in its palette colour through its sources, sorted by score, so that a line that rises from
left to right is a ranking that held; a source is a marker shape, the same in every panel. The
legend sits under the panels, never over the data.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.lines import Line2D

from nnunet_transfer.analysis.figures import _figure, readable_height
from nnunet_transfer.analysis.palette import strategy_color
from nnunet_transfer.evaluation.stats import METRIC_TITLES

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def source_score_figure(points: pd.DataFrame, sources: list[str], metric: str = "dsc"):
    """Args: points: one row per (architecture, strategy, n, source) with its `score` and mean
    test `metric`; sources: the sources in the order of the legend (rank-sources' ranking)."""
    architectures = list(dict.fromkeys(points["architecture"]))
    panels = [((architecture, n), rows) for (architecture, n), rows in
              points.groupby(["architecture", "n"], sort=True)]
    columns = min(len(panels), 3)
    rows_count = math.ceil(len(panels) / columns)
    width = min(12.5, max(6.0, 4.2 * columns))
    figure = _figure(width, readable_height(width, 3.4 * rows_count + 1.0))
    axes = figure.subplots(rows_count, columns, squeeze=False, sharey=True)
    for extra in axes.flat[len(panels):]:
        extra.set_visible(False)
    marker = {source: MARKERS[i % len(MARKERS)] for i, source in enumerate(sources)}
    strategies = list(dict.fromkeys(points["strategy"]))
    for axis, ((architecture, n), rows) in zip(axes.flat, panels):
        for strategy in strategies:
            line = rows[rows["strategy"] == strategy].sort_values("score")
            if line.empty:
                continue
            color = strategy_color(strategy)
            axis.plot(line["score"], line[metric], color=color, linewidth=1.5, alpha=0.7)
            for row in line.itertuples():
                axis.plot([row.score], [getattr(row, metric)], color=color,
                          marker=marker.get(row.source, "o"), markersize=7, linestyle="none")
        axis.set_title((f"{architecture}, " if len(architectures) > 1 else "") + f"n = {n}",
                       fontsize="medium")
        axis.set_xlabel("transferability score (rank-sources; higher = ranked better)")
        axis.grid(alpha=0.3)
    for axis in axes[:, 0]:
        axis.set_ylabel(f"fine-tuned test {METRIC_TITLES.get(metric, metric)}")
    handles = [Line2D([], [], color=strategy_color(s), linewidth=2, label=s)
               for s in strategies]
    handles += [Line2D([], [], color="0.3", marker=marker[s], linestyle="none",
                        label=f"source {s}")
                for s in sources if s in set(points["source"])]
    figure.legend(handles=handles, loc="outside lower center",
                  ncols=min(6, len(handles)), fontsize="small")
    figure.suptitle(f"Score before fine-tuning against test "
                    f"{METRIC_TITLES.get(metric, metric)} after it\n(a line per strategy "
                    "through its sources by score, a marker per source)", fontsize="medium")
    return figure
