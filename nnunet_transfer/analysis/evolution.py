"""`analyze evolution`: similarity of every snapshot of a run to its snapshot at the convergence
epoch, per layer (Karimi et al. Figs 6-7), with the null baseline from the same capture pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from nnunet_transfer.analysis import figures
from nnunet_transfer.analysis.measure import (
    MEASURE_TITLES, NULL, CaptureOptions, Measurer, null_by_layer, null_pairs, null_text)
from nnunet_transfer.analysis.outputs import Notes, Output, integer_columns, summary_table
from nnunet_transfer.analysis.runs import AnalysedRun, NetworkSet
from nnunet_transfer.analysis.summary import number_cell


def evolution_analysis(runs: Sequence[AnalysedRun], options: CaptureOptions, tolerance: float,
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
    null = null_by_layer(rows, layers, headline)
    header = ["run", "converged after (epochs)", "reference snapshot (epochs)", *layers]
    body = []
    for run in runs:
        start = table[(table["run"] == run.label) & (table["epoch"] == min(run.snapshots))]
        values = {r["layer"]: r[headline] for _, r in start.iterrows()}
        body.append([run.label, references[run.label]["convergence"],
                     references[run.label]["reference"],
                     *(number_cell(values.get(layer, math.nan)) for layer in layers)])
    body.append([NULL, "", "", *(null[layer].cell() for layer in layers)])
    title = f"{MEASURE_TITLES[headline]} of each snapshot vs the convergence snapshot"
    sections = [
        f"Per run, {MEASURE_TITLES[headline]} between every kept snapshot and the reference "
        f"snapshot: the first snapshot at or after the convergence epoch (first epoch whose "
        f"{column} is within {100 * tolerance:g} % of the run's maximum). The reference "
        "snapshot compared with itself is 1 by definition (not measured).",
        measurer.section(),
        f"Similarity of the first snapshot (epoch 0: the weights the run started from) to the "
        f"reference snapshot, {MEASURE_TITLES[headline]}:",
        summary_table(body, header, align_right_from=1),
        null_text(options),
        "All values per snapshot: `evolution.csv`; figure: `evolution.png` (a subplot per "
        "layer, a curve per run, circles at the reference snapshot, the null baseline dashed "
        "with its +- std band)."]
    figure = figures.evolution_figure(table[table["run"] != NULL], layers, headline,
                                      f"{MEASURE_TITLES[headline]} vs reference snapshot",
                                      null, title)
    return Output("Layer evolution", tables={"": table}, figures={"": figure},
                  sections=sections)
