"""`analyze reuse`: per run, the similarity of its epoch-0 snapshot (the weights it started
from) to its final network; feature reuse per layer = mean over transfer runs minus mean over
scratch runs (Karimi et al. Table 9, after Raghu et al. 2019), with the null baseline from the
same capture pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from nnunet_transfer.analysis import figures
from nnunet_transfer.analysis.measure import (
    MEASURE_TITLES, NULL, CaptureOptions, Measurer, layer_summaries, null_by_layer, null_pairs,
    null_summary, null_text)
from nnunet_transfer.analysis.outputs import Notes, Output, integer_columns, summary_table
from nnunet_transfer.analysis.palette import strategy_color
from nnunet_transfer.analysis.runs import AnalysedRun, NetworkSet, check_unique
from nnunet_transfer.analysis.summary import Summary, p_cell, summarize, welch_p
from nnunet_transfer.training.strategies import SCRATCH


def reuse_table(rows: Sequence[dict], layers: Sequence[str], measure: str, alpha: float
                ) -> list[dict]:
    """Per layer: RSIM(start, end) of the transfer and of the scratch runs (mean, std, n),
    feature reuse = transfer mean - scratch mean, Welch's p and the null baseline.

    `rows` are dicts with "layer", "role" ("transfer", "scratch" or NULL's "comparison") and
    `measure`.
    """
    table = []
    for label in layers:
        values = {role: [r[measure] for r in rows if r["layer"] == label
                         and r.get("role") == role] for role in ("transfer", "scratch")}
        transfer, scratch = summarize(values["transfer"]), summarize(values["scratch"])
        null = null_summary(rows, label, measure)
        p = welch_p(values["transfer"], values["scratch"])
        table.append({"layer": label, "measure": measure,
                      "transfer_mean": transfer.mean, "transfer_std": transfer.std,
                      "transfer_n": transfer.n, "scratch_mean": scratch.mean,
                      "scratch_std": scratch.std, "scratch_n": scratch.n,
                      "reuse": transfer.mean - scratch.mean, "p_welch": p,
                      "significant": bool(p < alpha), "alpha": alpha,
                      "null_mean": null.mean, "null_std": null.std, "null_n": null.n})
    return table


def reuse_analysis(transfer: Sequence[AnalysedRun], scratch: Sequence[AnalysedRun],
                   options: CaptureOptions, alpha: float, notes: Notes) -> Output:
    """Per run and layer: similarity of the epoch-0 snapshot (the weights the run started
    from) to the final one; feature reuse per layer (Raghu et al. 2019; Karimi et al. Table 9)."""
    runs = [*transfer, *scratch]
    check_unique(runs)
    role = {**{r.label: "transfer" for r in transfer}, **{r.label: "scratch" for r in scratch}}
    networks = NetworkSet()
    names = {}
    for run in runs:
        note = run.unfinished_note()
        if note:
            notes.add(note)
        start, end = run.snapshot(0), run.final_epoch
        if end == 0:
            notes.add(f"run {run.label} has only its epoch-0 snapshot: nothing was trained, "
                      "its similarity is 1 by definition")
        names[run.label] = (f"{run.label}@0", f"{run.label}@{end}")
        networks.add(names[run.label][0], start, run.label)
        if end != 0:
            networks.add(names[run.label][1], run.snapshots[end], run.label)
    measurer = Measurer(networks, runs, options, notes)
    null_names = networks.add_null(options.null_networks, options.seed)
    pairs = [names[r.label] for r in runs if r.final_epoch != 0]
    captured = measurer.capture(list(networks.networks), pairs + null_pairs(null_names))
    rows = []
    for label in captured.labels:
        for run in runs:
            base = {"run": run.label, "role": role[run.label], "strategy": run.strategy,
                    "start_epoch": 0, "end_epoch": run.final_epoch}
            if run.final_epoch == 0:
                row = {"layer": label, "module": captured.layers[label][names[run.label][0]],
                       "a": names[run.label][0], "b": names[run.label][1],
                       **{m: 1.0 for m in options.measures}}
            else:
                row = measurer.row(captured, *names[run.label], label)
            rows.append({**base, **row, "comparison": "epoch 0 vs final"})
    rows += [{"run": NULL, "role": NULL, **row} for row in measurer.null_rows(captured,
                                                                              null_names)]
    layers = captured.labels
    summary = [entry for measure in options.measures
               for entry in reuse_table(rows, layers, measure, alpha)]
    headline = options.headline
    header = ["layer", "transfer", "scratch", "feature reuse", "p", NULL]
    body = []
    for entry in (e for e in summary if e["measure"] == headline):
        transfer_s = Summary(entry["transfer_mean"], entry["transfer_std"], entry["transfer_n"])
        scratch_s = Summary(entry["scratch_mean"], entry["scratch_std"], entry["scratch_n"])
        null_s = Summary(entry["null_mean"], entry["null_std"], entry["null_n"])
        body.append([entry["layer"], transfer_s.cell(), scratch_s.cell(),
                     f"{entry['reuse']:+.3f}" if not math.isnan(entry["reuse"]) else "-",
                     p_cell(entry["p_welch"], alpha), null_s.cell()])
    sections = [
        f"Per run, {MEASURE_TITLES[headline]} between the network it started from (epoch-0 "
        "snapshot) and its final network, per layer. Feature reuse = mean over the transfer "
        "runs minus mean over the scratch runs (Raghu et al. 2019; Karimi et al. Table 9): "
        "positive where transfer keeps more of its starting representation than training from "
        "scratch keeps of its random one. Transfer: "
        f"{', '.join(r.label for r in transfer)}; scratch: {', '.join(r.label for r in scratch)}.",
        measurer.section(),
        summary_table(body, header, align_right_from=1),
        f"p: Welch's t-test (two-sided) of the transfer runs' values against the scratch runs'; "
        f"* where p < {alpha:g}.",
        null_text(options),
        "Per run: `reuse.csv`; every measure: `reuse_summary.csv`; figure: `reuse.png`."]
    by_role = layer_summaries([r for r in rows if r["role"] != NULL], "role", headline)
    points = {rl: {label: [r[headline] for r in rows if r["role"] == rl and r["layer"] == label]
                   for label in layers} for rl in ("transfer", "scratch")}
    figure = figures.bars_figure(
        {rl: by_role.get(rl, {}) for rl in ("transfer", "scratch")}, layers,
        null_by_layer(rows, layers, headline), f"{MEASURE_TITLES[headline]}(epoch 0, final)",
        "Similarity of each run's start and final network; reuse = transfer - scratch",
        points=points, colors=_role_colors(transfer))
    table = integer_columns(pd.DataFrame(rows), "start_epoch", "end_epoch", "datapoints",
                            "channels_a", "channels_b")
    return Output("Feature reuse", tables={"": table,
                                           "summary": pd.DataFrame(summary)},
                  figures={"": figure}, sections=sections)


def _role_colors(transfer: Sequence[AnalysedRun]) -> dict[str, str]:
    """Scratch's colour for the scratch runs; the transfer strategy's when there is one."""
    strategies = {run.strategy for run in transfer}
    colors = {"scratch": strategy_color(SCRATCH.name)}
    if len(strategies) == 1:
        colors["transfer"] = strategy_color(strategies.pop())
    return colors
