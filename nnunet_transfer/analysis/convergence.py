"""`analyze convergence`: validation score against iterations and wall time; epoch, iterations
and time to convergence per run (Karimi et al. Figs 3, 5, 11).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from nnunet_transfer.analysis import figures
from nnunet_transfer.analysis.outputs import Output, summary_table
from nnunet_transfer.analysis.runs import AnalysedRun
from nnunet_transfer.analysis.summary import number_cell

TIME_COLUMNS = {"train": "cumulative_train_time_s", "total": "cumulative_time_s"}


def convergence_analysis(runs: Sequence[AnalysedRun], tolerance: float, column: str,
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
              "cumulative_train_time_s", "cumulative_time_s"]
             + (["phase"] if "phase" in log else [])].assign(run=label)
         for label, log in curves.items()], ignore_index=True)
    curve_table = curve_table[["run", *curve_table.columns[:-1]]]
    clock_text = ("training wall time (training iterations only)" if clock == "train"
                  else "total wall time (validation and bookkeeping included)")
    header = ["run", "strategy", "converged after (epochs)", "iterations",
              "time to convergence (s)", f"{column} at convergence", "maximum", "epochs run",
              "total time (s)"]
    body = [[r["run"], r["strategy"], r["epochs_done"], r["iterations_to_convergence"],
             number_cell(r["time_to_convergence_s"], 1), number_cell(r["value_at_convergence"]),
             number_cell(r["maximum"]), r["epochs"], number_cell(r["total_time_s"], 1)]
            for r in rows]
    sections = [
        f"Validation {column} of each run (transfer/epochs.csv) against training iterations "
        f"and {clock_text}. Convergence epoch: the first epoch whose {column} is within "
        f"{100 * tolerance:g} % of the run's maximum (value >= max - {tolerance:g} x |max|, "
        "Karimi et al.).",
        summary_table(body, header, align_right_from=2),
        "No null baseline applies: nothing here is a similarity.",
        "Per-epoch curves: `convergence_curves.csv`; figure: `convergence.png` (circles mark "
        "the convergence epochs, triangles the changes of training phase)."]
    figure = figures.convergence_figure(curves, points, column, time_column,
                                        {run.label: run.strategy for run in runs})
    return Output("Convergence", tables={"": table, "curves": curve_table},
                  figures={"": figure}, sections=sections)
