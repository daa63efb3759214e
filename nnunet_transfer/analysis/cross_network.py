"""`analyze similarity`: similarity of the final networks of every pair of runs, within and
across groups of runs, with Welch t-tests of within against across (Karimi et al. Table 8) and
the null baseline from the same capture pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import pandas as pd

from nnunet_transfer.analysis import figures
from nnunet_transfer.analysis.measure import (
    MEASURE_TITLES, NULL, CaptureOptions, Measurer, layer_summaries, null_by_layer, null_text)
from nnunet_transfer.analysis.outputs import Notes, Output, summary_table
from nnunet_transfer.analysis.palette import strategy_color
from nnunet_transfer.analysis.runs import AnalysedRun, NetworkSet, check_unique
from nnunet_transfer.analysis.summary import p_cell, summarize, welch_p
from nnunet_transfer.errors import UserError


def _load_final(networks: NetworkSet, runs: Sequence[AnalysedRun], notes: Notes
                ) -> dict[str, str]:
    """Load each run's final snapshot under its label; {label: snapshot path}."""
    paths = {}
    for run in runs:
        note = run.unfinished_note()
        if note:
            notes.add(note)
        paths[run.label] = run.snapshots[run.final_epoch]
        networks.add(run.label, paths[run.label], run.label)
    return paths


def _comparison(group_a: str, group_b: str) -> str:
    return f"within {group_a}" if group_a == group_b else f"across {group_a} / {group_b}"


def similarity_analysis(groups: Mapping[str, Sequence[AnalysedRun]], options: CaptureOptions,
                        alpha: float, notes: Notes) -> Output:
    """Similarity of the final networks of every pair of runs, summarised within each group
    and across each pair of groups, with Welch t-tests of within-group against across-group
    values; all networks and the null ones in one capture pass."""
    if len(groups) < 1:
        raise UserError("give at least one --group NAME FOLD [FOLD ...]")
    runs = [run for members in groups.values() for run in members]
    check_unique(runs)
    group_of = {run.label: name for name, members in groups.items() for run in members}
    if len(runs) < 2:
        raise UserError("similarity needs at least two runs in all (a group of two, or two "
                        "groups)")
    networks = NetworkSet()
    _load_final(networks, runs, notes)
    measurer = Measurer(networks, runs, options, notes)
    null_names = networks.add_null(options.null_networks, options.seed)
    captured = measurer.capture([*(run.label for run in runs), *null_names])
    rows = []
    for label in captured.labels:
        for a, b in itertools.combinations([run.label for run in runs], 2):
            ga, gb = sorted((group_of[a], group_of[b]), key=list(groups).index)
            rows.append({**measurer.row(captured, a, b, label), "group_a": group_of[a],
                         "group_b": group_of[b], "comparison": _comparison(ga, gb)})
    rows += measurer.null_rows(captured, null_names)
    layers = captured.labels
    names = list(groups)
    comparisons = ([_comparison(g, g) for g in names if len(groups[g]) > 1]
                   + [_comparison(g, h) for g, h in itertools.combinations(names, 2)])
    summary_rows, test_rows = [], []
    for measure in options.measures:
        by_comparison = layer_summaries(rows, "comparison", measure)
        for label in layers:
            for comparison in [*comparisons, NULL]:
                s = by_comparison.get(comparison, {}).get(label, summarize([]))
                summary_rows.append({"layer": label, "module": measurer.layer_text[label],
                                     "comparison": comparison, "measure": measure,
                                     "mean": s.mean, "std": s.std, "n": s.n})
            values = {c: [r[measure] for r in rows if r["layer"] == label
                          and r["comparison"] == c] for c in comparisons}
            for g, h in itertools.combinations(names, 2):
                across = _comparison(g, h)
                for side in (g, h):
                    within = _comparison(side, side)
                    p = welch_p(values.get(within, []), values[across])
                    test_rows.append({"layer": label, "measure": measure, "within": within,
                                      "across": across, "p_welch": p,
                                      "significant": bool(p < alpha), "alpha": alpha})
    headline = options.headline
    summaries = layer_summaries(rows, "comparison", headline)
    null = null_by_layer(rows, layers, headline)
    tests = [t for t in test_rows if t["measure"] == headline]
    test_columns = list(dict.fromkeys((t["within"], t["across"]) for t in tests))
    header = ["layer", *comparisons, NULL,
              *(f"p: {within} vs {across}" for within, across in test_columns)]
    body = []
    for label in layers:
        p_values = {(t["within"], t["across"]): t["p_welch"] for t in tests
                    if t["layer"] == label}
        body.append([label, *(summaries.get(c, {}).get(label, summarize([])).cell()
                              for c in comparisons), null[label].cell(),
                     *(p_cell(p_values[key], alpha) for key in test_columns)])
    group_text = "; ".join(f"{name}: {', '.join(run.label for run in members)}"
                           for name, members in groups.items())
    sections = [
        f"{MEASURE_TITLES[headline]} between the final networks of every pair of runs, mean ± "
        f"std over the pairs within each group and across each pair of groups (Karimi et al. "
        f"Table 8). Groups: {group_text}.",
        measurer.section(),
        summary_table(body, header, align_right_from=1),
        f"p: Welch's t-test (two-sided) of the within-group values against the across-group "
        f"values of the layer; * where p < {alpha:g}. Pairs share networks, so the values are "
        "not independent and the p-values are indicative (the papers' protocol).",
        null_text(options),
        "Every pair: `similarity.csv`; mean, std and n of every measure: "
        "`similarity_summary.csv`; all tests: `similarity_tests.csv`; figures: "
        "`similarity.png` (bars), `similarity_heatmap.png`."]
    points = {c: {label: [r[headline] for r in rows if r["comparison"] == c
                          and r["layer"] == label] for label in layers} for c in comparisons}
    figure = figures.bars_figure({c: summaries.get(c, {}) for c in comparisons}, layers, null,
                                 MEASURE_TITLES[headline],
                                 "Similarity of final networks within and across groups",
                                 points=points,
                                 colors={_comparison(g, g): strategy_color(g) for g in names})
    heatmap = figures.heatmap_figure({c: summaries.get(c, {}) for c in comparisons}, layers,
                                     null, MEASURE_TITLES[headline],
                                     "Mean similarity within and across groups, per layer")
    return Output("Similarity of networks within and across groups",
                  tables={"": pd.DataFrame(rows), "summary": pd.DataFrame(summary_rows),
                          "tests": pd.DataFrame(test_rows)},
                  figures={"": figure, "heatmap": heatmap}, sections=sections)
