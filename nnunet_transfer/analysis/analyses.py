"""The analyses behind `nnunet-transfer analyze <kind>`: each returns a `report.Output`
(tables, figures, Markdown sections) for `report.write_output`.

- convergence: validation score against iterations and wall time; epoch, iterations and time
  to convergence per run (Karimi et al. Figs 3, 5, 11).
- evolution: similarity of every snapshot of a run to its snapshot at the convergence epoch,
  per layer (Figs 6-7).
- similarity: similarity of the final networks within and across groups of runs, Welch t-tests
  within vs across (Table 8).
- reuse: similarity of each run's epoch-0 and final networks; feature reuse = mean over transfer
  runs minus mean over scratch runs (Table 9, after Raghu et al. 2019).
- weights: relative change of the weights and filter norms per convolution, pictures of filters
  and of feature maps at start and end (Figs 8-10).

Every similarity analysis adds the null baseline (untrained networks, `measure`) from the same
capture pass as its networks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import pandas as pd

from nnunet_transfer.analysis import figures
from nnunet_transfer.analysis.measure import (
    MEASURE_TITLES,
    NULL,
    CaptureOptions,
    Measurer,
    null_pairs,
    null_summary,
    null_text,
)
from nnunet_transfer.analysis.report import Notes, Output, integer_columns, markdown_table
from nnunet_transfer.analysis.runs import NetworkSet, Run, check_unique
from nnunet_transfer.analysis.summary import Summary, p_cell, summarize, welch_p
from nnunet_transfer.errors import UserError

TIME_COLUMNS = {"train": "cumulative_train_time_s", "total": "cumulative_time_s"}


def _value(number: float, digits: int = 3) -> str:
    return "-" if number is None or (isinstance(number, float) and math.isnan(number)) \
        else f"{number:.{digits}f}"


# -- convergence -------------------------------------------------------------------------------


def convergence_analysis(runs: Sequence[Run], tolerance: float, column: str,
                         clock: str) -> Output:
    """Args: tolerance: relative distance to the run's maximum (0.005 = 0.5 %); column:
    pseudo_dice or ema_pseudo_dice; clock: "train" (training iterations only) or "total"
    (validation and bookkeeping included) wall time, seconds."""
    time_column = TIME_COLUMNS[clock]
    rows, curves, points = [], {}, {}
    for run in runs:
        convergence = run.convergence(tolerance, column)
        log = pd.read_csv(run.record.epochs_path)
        curves[run.label] = log
        time = {"train": convergence.cumulative_train_time_s,
                "total": convergence.cumulative_time_s}
        points[run.label] = {"iterations": convergence.iterations, "time": time[clock],
                             "value": convergence.value}
        last = log.iloc[-1]
        rows.append({
            "run": run.label, "strategy": run.strategy, "fold": run.fold, "folder": run.folder,
            "column": column, "tolerance": tolerance,
            "convergence_epoch": convergence.epoch, "epochs_done": convergence.epochs_done,
            "iterations_to_convergence": convergence.iterations,
            "time_to_convergence_s": time[clock],
            "train_time_to_convergence_s": convergence.cumulative_train_time_s,
            "total_time_to_convergence_s": convergence.cumulative_time_s,
            "value_at_convergence": convergence.value, "maximum": convergence.maximum,
            "epochs": len(log), "final_value": float(last[column]),
            "total_train_time_s": float(last["cumulative_train_time_s"]),
            "total_time_s": float(last["cumulative_time_s"])})
    table = pd.DataFrame(rows)
    curve_table = pd.concat(
        [log[["epoch", "iterations", "pseudo_dice", "ema_pseudo_dice",
              "cumulative_train_time_s", "cumulative_time_s"]].assign(run=label)
         for label, log in curves.items()], ignore_index=True)
    curve_table = curve_table[["run", *curve_table.columns[:-1]]]
    clock_text = ("training wall time (training iterations only)" if clock == "train"
                  else "total wall time (validation and bookkeeping included)")
    header = ["run", "strategy", "converged after (epochs)", "iterations",
              "time to convergence (s)", f"{column} at convergence", "maximum", "epochs run",
              "total time (s)"]
    body = [[r["run"], r["strategy"], r["epochs_done"], r["iterations_to_convergence"],
             _value(r["time_to_convergence_s"], 1), _value(r["value_at_convergence"]),
             _value(r["maximum"]), r["epochs"], _value(r["total_time_s"], 1)] for r in rows]
    sections = [
        f"Validation {column} of each run (transfer/epochs.csv) against training iterations "
        f"and {clock_text}. Convergence epoch: the first epoch whose {column} is within "
        f"{100 * tolerance:g} % of the run's maximum (value >= max - {tolerance:g} x |max|, "
        "Karimi et al.).",
        markdown_table(header, body, align_right_from=2),
        "No null baseline applies: nothing here is a similarity.",
        "Per-epoch curves: `convergence_curves.csv`; figure: `convergence.png` (circles mark "
        "the convergence epochs)."]
    figure = figures.convergence_figure(curves, points, column, time_column)
    return Output("Convergence", tables={"": table, "curves": curve_table},
                  figures={"": figure}, sections=sections)


# -- shared by the similarity analyses ---------------------------------------------------------


def _load_final(networks: NetworkSet, runs: Sequence[Run], notes: Notes) -> dict[str, str]:
    """Load each run's final snapshot under its label; {label: snapshot path}."""
    paths = {}
    for run in runs:
        note = run.unfinished_note()
        if note:
            notes.add(note)
        paths[run.label] = run.snapshots[run.final_epoch]
        networks.add(run.label, paths[run.label], run.label)
    return paths


def _measure_section(measurer: Measurer, options: CaptureOptions) -> str:
    layers = ", ".join(f"{label} = `{module}`" for label, module in measurer.layer_text.items())
    measures = ", ".join(MEASURE_TITLES[m] for m in options.measures)
    return (f"Measures: {measures} of the layers' activations (datapoints = voxels, "
            f"neurons = channels), headline {MEASURE_TITLES[options.headline]}. Input: "
            f"{measurer.blocks_text}. Layers: {layers}. Networks: {measurer.spec.describe()}.")


def _layer_summaries(rows: Sequence[dict], key: str, measure: str
                     ) -> dict[str, dict[str, Summary]]:
    """{value of row[key]: {layer: Summary of row[measure]}}."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        grouped.setdefault(row[key], {}).setdefault(row["layer"], []).append(row[measure])
    return {name: {layer: summarize(values) for layer, values in by_layer.items()}
            for name, by_layer in grouped.items()}


def _null_by_layer(rows: Sequence[dict], layers: Sequence[str], measure: str
                   ) -> dict[str, Summary]:
    return {label: null_summary(rows, label, measure) for label in layers}


# -- evolution ---------------------------------------------------------------------------------


def evolution_analysis(runs: Sequence[Run], options: CaptureOptions, tolerance: float,
                       column: str, notes: Notes) -> Output:
    """Per run, layer and snapshot: similarity to the run's reference snapshot, the first
    snapshot at or after its convergence epoch. One capture pass per run (its snapshots; the
    first pass also holds the null networks), so at most one run's snapshots are in memory."""
    networks = NetworkSet()
    measurer: Measurer | None = None
    null_names: list[str] = []
    rows: list[dict] = []
    references: dict[str, dict] = {}
    for index, run in enumerate(runs):
        convergence = run.convergence(tolerance, column)
        reference = run.snapshot_at_or_after(convergence.epochs_done)
        references[run.label] = {"convergence": convergence.epochs_done, "reference": reference}
        if reference != convergence.epochs_done:
            notes.add(f"run {run.label}: no snapshot after exactly {convergence.epochs_done} "
                      f"epochs (its convergence epoch); the reference is the snapshot after "
                      f"{reference} epochs, the first one later")
        names = {epoch: f"{run.label}@{epoch}" for epoch in run.snapshots}
        for epoch, path in run.snapshots.items():
            networks.add(names[epoch], path, run.label)
        if measurer is None:
            measurer = Measurer(networks, runs, options, notes)
            null_names = networks.add_null(options.null_networks, options.seed)
        pairs = [(names[e], names[reference]) for e in names if e != reference]
        if index == 0:
            pairs += null_pairs(null_names)
        captured = (measurer.capture([*names.values(), *(null_names if index == 0 else [])],
                                     pairs) if pairs else None)
        base = {"run": run.label, "strategy": run.strategy, "reference_epoch": reference,
                "convergence_epochs_done": convergence.epochs_done,
                "comparison": "snapshot vs reference"}
        for label, module in measurer.layer_text.items():
            for epoch in names:
                if epoch == reference:
                    # identical networks: similarity 1 by definition, nothing to measure
                    row = {"layer": label, "module": module, "a": names[epoch],
                           "b": names[reference], **{m: 1.0 for m in options.measures}}
                else:
                    row = measurer.row(captured, names[epoch], names[reference], label)
                rows.append({**base, "epoch": epoch, "is_reference": epoch == reference, **row})
        if index == 0:
            rows += [{"run": NULL, "comparison": NULL, **row}
                     for row in measurer.null_rows(captured, null_names)]
        networks.release([*names.values(), *(null_names if index == 0 else [])])
    table = integer_columns(pd.DataFrame(rows), "epoch", "reference_epoch",
                            "convergence_epochs_done", "datapoints", "channels_a", "channels_b")
    layers = list(measurer.layer_text)
    headline = options.headline
    null = _null_by_layer(rows, layers, headline)
    header = ["run", "converged after (epochs)", "reference snapshot (epochs)", *layers]
    body = []
    for run in runs:
        start = table[(table["run"] == run.label) & (table["epoch"] == min(run.snapshots))]
        values = {r["layer"]: r[headline] for _, r in start.iterrows()}
        body.append([run.label, references[run.label]["convergence"],
                     references[run.label]["reference"],
                     *(_value(values.get(layer, math.nan)) for layer in layers)])
    body.append([NULL, "", "", *(null[layer].cell() for layer in layers)])
    title = f"{MEASURE_TITLES[headline]} of each snapshot vs the convergence snapshot"
    sections = [
        f"Per run, {MEASURE_TITLES[headline]} between every kept snapshot and the reference "
        f"snapshot: the first snapshot at or after the convergence epoch (first epoch whose "
        f"{column} is within {100 * tolerance:g} % of the run's maximum). The reference "
        "snapshot compared with itself is 1 by definition (not measured).",
        _measure_section(measurer, options),
        f"Similarity of the first snapshot (epoch 0: the weights the run started from) to the "
        f"reference snapshot, {MEASURE_TITLES[headline]}:",
        markdown_table(header, body, align_right_from=1),
        null_text(options),
        "All values per snapshot: `evolution.csv`; figure: `evolution.png` (a subplot per "
        "layer, a curve per run, circles at the reference snapshot, the null baseline dashed "
        "with its +- std band)."]
    figure = figures.evolution_figure(table[table["run"] != NULL], layers, headline,
                                      f"{MEASURE_TITLES[headline]} vs reference snapshot",
                                      null, title)
    return Output("Layer evolution", tables={"": table}, figures={"": figure},
                  sections=sections)


# -- similarity within and across groups -------------------------------------------------------


def _comparison(group_a: str, group_b: str) -> str:
    return f"within {group_a}" if group_a == group_b else f"across {group_a} / {group_b}"


def similarity_analysis(groups: Mapping[str, Sequence[Run]], options: CaptureOptions,
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
        by_comparison = _layer_summaries(rows, "comparison", measure)
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
    summaries = _layer_summaries(rows, "comparison", headline)
    null = _null_by_layer(rows, layers, headline)
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
        _measure_section(measurer, options),
        markdown_table(header, body, align_right_from=1),
        f"p: Welch's t-test (two-sided) of the within-group values against the across-group "
        f"values of the layer; * where p < {alpha:g}. Pairs share networks, so the values are "
        "not independent and the p-values are indicative (the papers' protocol).",
        null_text(options),
        "Every pair: `similarity.csv`; mean, std and n of every measure: "
        "`similarity_summary.csv`; all tests: `similarity_tests.csv`; figure: `similarity.png`."]
    points = {c: {label: [r[headline] for r in rows if r["comparison"] == c
                          and r["layer"] == label] for label in layers} for c in comparisons}
    figure = figures.bars_figure({c: summaries.get(c, {}) for c in comparisons}, layers, null,
                                 MEASURE_TITLES[headline],
                                 "Similarity of final networks within and across groups",
                                 points=points)
    return Output("Similarity of networks within and across groups",
                  tables={"": pd.DataFrame(rows), "summary": pd.DataFrame(summary_rows),
                          "tests": pd.DataFrame(test_rows)},
                  figures={"": figure}, sections=sections)


# -- feature reuse -----------------------------------------------------------------------------


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


def reuse_analysis(transfer: Sequence[Run], scratch: Sequence[Run], options: CaptureOptions,
                   alpha: float, notes: Notes) -> Output:
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
        _measure_section(measurer, options),
        markdown_table(header, body, align_right_from=1),
        f"p: Welch's t-test (two-sided) of the transfer runs' values against the scratch runs'; "
        f"* where p < {alpha:g}.",
        null_text(options),
        "Per run: `reuse.csv`; every measure: `reuse_summary.csv`; figure: `reuse.png`."]
    by_role = _layer_summaries([r for r in rows if r["role"] != NULL], "role", headline)
    points = {rl: {label: [r[headline] for r in rows if r["role"] == rl and r["layer"] == label]
                   for label in layers} for rl in ("transfer", "scratch")}
    figure = figures.bars_figure(
        {rl: by_role.get(rl, {}) for rl in ("transfer", "scratch")}, layers,
        _null_by_layer(rows, layers, headline), f"{MEASURE_TITLES[headline]}(epoch 0, final)",
        "Similarity of each run's start and final network; reuse = transfer - scratch",
        points=points)
    table = integer_columns(pd.DataFrame(rows), "start_epoch", "end_epoch", "datapoints",
                            "channels_a", "channels_b")
    return Output("Feature reuse", tables={"": table,
                                           "summary": pd.DataFrame(summary)},
                  figures={"": figure}, sections=sections)
