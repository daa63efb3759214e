"""`study report`: the study's tables and figures gathered into report.html / report.md.

Sections, in the order of a paper's results: accuracy per n and strategy (mean +- std over test
cases, paired tests against Scratch at the same n), training cost and convergence, the analyses
(evolution, cross-network RSIM, feature reuse, weight change and filters), generalisation to the
unseen test set, and what failed. Everything is computed from the files the runs left, so the
report can be written at any time, also for a study that is still running (it says what is
missing).
"""

from __future__ import annotations

import glob
import os
import time

import pandas as pd

from nnunet_transfer.analysis.kinds import KINDS
from nnunet_transfer.atomic_files import atomic_write_bytes
from nnunet_transfer.document import Section, markdown_table, md_escape, write_report
from nnunet_transfer.study.grid import GENERALIZATION, TEST, Run, StudyLayout
from nnunet_transfer.study.jobs import StudyJob
from nnunet_transfer.study.spec import StudySpec
from nnunet_transfer.study.state import FAILED, SUCCEEDED, StudyState
from nnunet_transfer.training.strategies import SCRATCH

REFERENCE_STRATEGY = SCRATCH   # the paired tests compare every strategy with it


def _cells(runs: list[Run]) -> dict[tuple, list[Run]]:
    cells: dict[tuple, list[Run]] = {}
    for run in runs:
        cells.setdefault((run.source, run.architecture), []).append(run)
    return cells


def accuracy_section(layout: StudyLayout, runs: list[Run], state: StudyState, test_set: str,
                     title: str) -> Section | None:
    """Per source and architecture: comparison.csv / .md of `compare`, over the runs whose
    evaluation exists."""
    from nnunet_transfer.evaluation.stats import (
        RunSpec, collect_runs, comparison_table, to_markdown, write_comparison)
    subsections = []
    for (source, architecture), cell_runs in _cells(runs).items():
        evaluated = [(RunSpec(r.strategy.name, r.n, r.seed),
                      os.path.join(layout.evaluation(r, test_set), "evaluation_per_case.csv"))
                     for r in cell_runs
                     if state.state(f"predict__{r.key}") == SUCCEEDED]
        if not evaluated:
            continue
        table_runs = collect_runs(evaluated)
        strategies = set(table_runs["strategy"])
        reference = REFERENCE_STRATEGY.name if REFERENCE_STRATEGY.name in strategies and \
            len(strategies) > 1 else None
        table = comparison_table(table_runs, reference)
        markdown = to_markdown(table, reference)
        folder = os.path.join(layout.path("tables", test_set), f"{source}__{architecture}")
        csv_path, _ = write_comparison(folder, table, markdown)
        missing = len(cell_runs) - len(evaluated)
        subsections.append(Section(
            f"source {source}, architecture {architecture}", markdown=markdown,
            tables=[(csv_path, "all metrics, structures, strategies and n, with p-values")],
            status=f"{missing} of {len(cell_runs)} runs have no evaluation yet (not finished "
                   "or failed)" if missing else None))
    if not subsections:
        return None
    return Section(title, subsections=subsections)


def run_costs(layout: StudyLayout, runs: list[Run], state: StudyState,
              tolerance: float) -> pd.DataFrame:
    """One row per finished run: iterations, training time, time per iteration, and when it
    converged (epoch, iterations, seconds; the rule of analysis.weights.convergence_epoch)."""
    from nnunet_transfer.analysis.weights import convergence_epoch
    from nnunet_transfer.training.bookkeeping import RunRecord
    rows = []
    for run in runs:
        if state.state(f"train__{run.key}") != SUCCEEDED:
            continue
        folder = layout.run_folder(run)
        epochs = RunRecord(folder).read_epochs()
        last = epochs[-1]
        converged = convergence_epoch(folder, tolerance)
        iterations = int(last["iterations"])
        train_time = float(last["cumulative_train_time_s"])
        rows.append({"source": run.source, "architecture": run.architecture,
                     "strategy": run.strategy.name, "n": run.n, "seed": run.seed,
                     "epochs": len(epochs), "iterations": iterations,
                     "train_time_s": train_time, "s_per_iteration": train_time / iterations,
                     "best_pseudo_dice": converged.maximum,
                     "convergence_epoch": converged.epoch,
                     "convergence_iterations": converged.iterations,
                     "convergence_time_s": converged.cumulative_train_time_s})
    return pd.DataFrame(rows)


def cost_section(layout: StudyLayout, costs: pd.DataFrame, tolerance: float) -> Section | None:
    if costs.empty:
        return None
    path = layout.path("tables", "training_cost.csv")
    atomic_write_bytes(path, costs.to_csv(index=False).encode())
    summary = costs.groupby(["architecture", "n", "strategy"], sort=False).agg(
        runs=("seed", "size"), s_per_iteration=("s_per_iteration", "median"),
        train_time_s=("train_time_s", "mean"),
        convergence_time_s=("convergence_time_s", "mean"),
        convergence_iterations=("convergence_iterations", "mean")).reset_index()
    text = (f"Training time of the target runs (iterations only, validation excluded) and time "
            f"to convergence: the first epoch whose validation pseudo-Dice is within "
            f"{tolerance * 100:g} % of the run's maximum (Karimi et al.). Means over seeds; "
            "s / iteration is the median over seeds.\n\n"
            + markdown_table(summary))
    return Section("Training cost and time to convergence", markdown=text,
                   tables=[(path, "every run")])


def analysis_sections(layout: StudyLayout, spec: StudySpec, runs: list[Run]) -> list[Section]:
    sections = []
    for kind in spec.analyses:
        subsections = []
        for cell in dict.fromkeys(r.cell for r in runs):
            folder = os.path.join(layout.cell_folder("analysis", cell), kind)
            md = os.path.join(folder, f"{kind}.md")
            name = f"source {cell[0]}, architecture {cell[1]}, n = {cell[2]}"
            if not os.path.isfile(md):
                subsections.append(Section(name, status=f"not computed yet ({md} is missing)"))
                continue
            with open(md, encoding="utf-8") as f:
                text = f.read()
            figures = [(p, os.path.basename(p)) for p in sorted(glob.glob(
                os.path.join(folder, "*.png")))]
            tables = [(p, os.path.basename(p)) for p in sorted(glob.glob(
                os.path.join(folder, "*.csv")))]
            subsections.append(Section(name, markdown=_demote_headings(text), figures=figures,
                                       tables=tables))
        sections.append(Section(KINDS[kind].title, subsections=subsections))
    return sections


def _demote_headings(markdown: str) -> str:
    """An analysis summary's own headings sit below the report's section headings."""
    return "\n".join("###" + line if line.startswith("#") else line
                     for line in markdown.splitlines())


def failure_section(jobs: list[StudyJob], state: StudyState) -> Section | None:
    failed = [(job.key, state.get(job.key)) for job in jobs if state.state(job.key) == FAILED]
    blocked = [job.key for job in jobs if state.state(job.key) == "blocked"]
    if not failed and not blocked:
        return None
    text = markdown_table([{"job": key, "what happened": str(record.get("note") or "")[:400],
                            "log": record.get("log")} for key, record in failed])
    if blocked:
        text += (f"\n\n{len(blocked)} job(s) blocked by these: "
                 f"{md_escape(', '.join(blocked[:20]))}")
    return Section("Failed jobs", markdown=text,
                   status=f"{len(failed)} job(s) failed; the rest of the study went on")


def overview(spec: StudySpec, jobs: list[StudyJob], state: StudyState, runs: list[Run]) -> str:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[state.state(job.key)] = counts.get(state.state(job.key), 0) + 1
    datasets = md_escape(", ".join(f"{k}: {d.folder_name} ({d.kind})"
                                   for k, d in spec.datasets.items()))
    budget = spec.budget
    return (f"Study **{md_escape(spec.name)}** ({md_escape(spec.path)}). Datasets: {datasets}. "
            f"Pretrained on {md_escape(', '.join(spec.sources))}; target "
            f"{md_escape(spec.target)} with {spec.test_cases} held-out test "
            f"cases. Runs: {len(runs)} = strategies {', '.join(s.name for s in spec.strategies)} "
            f"x n "
            f"{sorted({r.n for r in runs})} x seeds {list(spec.seeds)} x architectures "
            f"{', '.join(spec.architectures)}. Budget: {budget.target.epochs} epochs x "
            f"{budget.target.iters} iterations per run, sources {budget.source.epochs} epochs. "
            f"Jobs: {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}.")


def write_study_report(spec: StudySpec, state: StudyState, jobs: list[StudyJob]) -> str:
    """Write <study folder>/report.html and report.md; returns the HTML path."""
    layout = StudyLayout(spec)
    runs = list(dict.fromkeys(r for job in jobs for r in job.runs if job.kind == "train"))
    tolerance = spec.analysis["tolerance"]
    sections = [accuracy_section(layout, runs, state, TEST,
                                 "Accuracy on the held-out test cases of the target"),
                cost_section(layout, run_costs(layout, runs, state, tolerance), tolerance),
                *analysis_sections(layout, spec, runs)]
    if spec.generalization:
        sections.append(accuracy_section(layout, runs, state, GENERALIZATION,
                                         "Generalisation to the unseen test set "
                                         f"({spec.datasets[spec.generalization].folder_name})"))
    sections.append(failure_section(jobs, state))
    html, _ = write_report(layout.root, f"Transfer-learning study {spec.name}",
                           [s for s in sections if s is not None],
                           summary=overview(spec, jobs, state, runs),
                           generated_by=f"nnunet-transfer study report, "
                                        f"{time.strftime('%Y-%m-%d %H:%M')}")
    return html


def report_only(spec: StudySpec) -> str:
    """`study report`: the report of what exists now, without running anything."""
    from nnunet_transfer.errors import UserError
    from nnunet_transfer.study.jobs import StudyJobs
    from nnunet_transfer.study.setup import StudySetup
    layout = StudyLayout(spec)
    if not os.path.isfile(layout.state_file):
        raise UserError(f"the study {spec.name} has not run yet ({layout.state_file} is "
                        "missing); run `nnunet-transfer study run` first")
    state = StudyState(layout.state_file)
    # the device only shapes command lines, and none is run here
    jobs = StudyJobs(spec, StudySetup(spec), state, "cpu").all()
    return write_study_report(spec, state, jobs)
