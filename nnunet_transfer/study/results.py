"""`study report`: the study's tables and figures gathered into report.html / report.md.

Sections, in the order of a paper's results: the findings (the headline accuracy figure and
sentences computed from the tables, `findings`), accuracy per source, architecture, n and
strategy (compact tables: mean +- std over test cases, paired tests against Scratch at the same
n), which source (a study of several sources: `source_report`), convergence and training cost,
the analyses (evolution, cross-network RSIM, feature reuse, weight change and filters: one
comparative figure each, their other figures (per-run galleries) and their own summaries
folded), generalisation to the unseen test set, what failed, and how it was produced (study
file and commands, folded). Paths are relative to the study folder. Everything is computed from
the files the runs left, so the report can be written at any time, also for a study that is
still running (it says what is missing).
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass

import pandas as pd

from nnunet_transfer.analysis.accuracy_figure import accuracy_figure
from nnunet_transfer.analysis.kinds import ANALYSIS_KINDS
from nnunet_transfer.analysis.outputs import figure_name, save_figure
from nnunet_transfer.atomic_files import atomic_write_bytes
from nnunet_transfer.document import Section, markdown_table, md_escape, write_report
from nnunet_transfer.document.markdown import md_code
from nnunet_transfer.study.grid import (
    GENERALIZATION, TEST, Run, StudyLayout, expand, job_keys)
from nnunet_transfer.study.findings import (
    Finding, accuracy_findings, convergence_findings, findings_markdown, reuse_findings,
    weight_findings)
from nnunet_transfer.study.source_report import baseline_note, which_source
from nnunet_transfer.study.spec import StudySpec
from nnunet_transfer.study.state import FAILED, SUCCEEDED, StudyState
from nnunet_transfer.training.strategies import SCRATCH

REFERENCE_STRATEGY = SCRATCH   # the paired tests compare every strategy with it


def _cells(runs: list[Run]) -> dict[tuple, list[Run]]:
    cells: dict[tuple, list[Run]] = {}
    for run in runs:
        cells.setdefault((run.source, run.architecture), []).append(run)
    return cells


@dataclass
class CellAccuracy:
    """The evaluated runs of one source and architecture on one test set."""

    source: str
    architecture: str
    runs: pd.DataFrame          # per-case rows (evaluation.stats.collect_runs)
    table: pd.DataFrame         # comparison_table
    reference: str | None
    csv_path: str
    missing: int                # runs without evaluation
    total: int

    @property
    def title(self) -> str:
        return f"source {self.source}, {self.architecture}"


def cell_accuracies(layout: StudyLayout, runs: list[Run], state: StudyState,
                    test_set: str) -> list[CellAccuracy]:
    """Per source and architecture: the comparison of `compare` over the runs whose evaluation
    exists (written to tables/<test set>/<source>__<architecture>/comparison.csv / .md)."""
    from nnunet_transfer.evaluation.stats import (
        collect_runs, comparison_table, to_markdown, write_comparison)
    cells = []
    for (source, architecture), cell_runs in _cells(runs).items():
        evaluated = [(r.id,
                      os.path.join(layout.evaluation(r, test_set), "evaluation_per_case.csv"))
                     for r in cell_runs
                     if state.state(r.predict_key) == SUCCEEDED]
        if not evaluated:
            continue
        table_runs = collect_runs(evaluated)
        strategies = set(table_runs["strategy"])
        reference = REFERENCE_STRATEGY.name if REFERENCE_STRATEGY.name in strategies and \
            len(strategies) > 1 else None
        table = comparison_table(table_runs, reference)
        folder = os.path.join(layout.path("tables", test_set), f"{source}__{architecture}")
        csv_path, _ = write_comparison(folder, table, to_markdown(table, reference))
        cells.append(CellAccuracy(source, architecture, table_runs, table, reference, csv_path,
                                  len(cell_runs) - len(evaluated), len(cell_runs)))
    return cells


def accuracy_section(layout: StudyLayout, cells: list[CellAccuracy], title: str,
                     key: str, note: str | None = None) -> Section | None:
    """Compact tables per source and architecture (strategy rows; metric and n columns), box
    plots per strategy at each n when there are several n, the full comparison as a file;
    `note` (Markdown) above them."""
    from nnunet_transfer.evaluation.stats import to_markdown
    if not cells:
        return None
    subsections = []
    for cell in cells:
        figures = []
        ns = sorted(cell.runs["n"].dropna().unique())
        if len(ns) > 1:
            path = os.path.join(os.path.dirname(cell.csv_path), "accuracy_per_n.png")
            save_figure(accuracy_figure({f"n = {int(n)}": cell.runs[cell.runs["n"] == n]
                                         for n in ns}), path)
            figures.append((path, f"Test DSC per strategy at each n ({md_escape(cell.title)})"))
        subsections.append(Section(
            cell.title, markdown=to_markdown(cell.table, cell.reference).replace("\n### ",
                                                                                 "\n#### "),
            figures=figures, figures_first=True,
            tables=[(cell.csv_path, "every metric, structure, strategy and n, with both "
                                    "p-values")],
            status=f"{cell.missing} of {cell.total} runs have no evaluation yet (not finished "
                   "or failed)" if cell.missing else None))
    return Section(title, markdown=note or "", subsections=subsections, key=key)


def evaluated_runs(cells: list[CellAccuracy]) -> pd.DataFrame:
    """The per-case rows of every cell, with their source and architecture."""
    if not cells:
        return pd.DataFrame()
    return pd.concat([cell.runs.assign(source=cell.source, architecture=cell.architecture)
                      for cell in cells], ignore_index=True)


def headline_figure(layout: StudyLayout, cells: list[CellAccuracy]) -> tuple[str, str] | None:
    """The study's accuracy per strategy (against n when it has several), one panel per source
    and architecture."""
    if not cells:
        return None
    path = layout.path("figures", "accuracy.png")
    figure = accuracy_figure({cell.title: cell.runs for cell in cells})
    save_figure(figure, path)
    several = any(cell.runs["n"].nunique() > 1 for cell in cells)
    sources = len({cell.source for cell in cells}) > 1
    return path, ("Test DSC of every strategy " + ("against n: mean over the test cases (each "
                  "averaged over seeds), band ± std, dots the seeds' means" if several else
                  "over the test cases (each averaged over seeds): box, dots the cases, "
                  "diamond the mean") + "; a colour per strategy, the same in every figure."
                  + (" A panel per source on one DSC axis, so that the sources compare as the "
                     "strategies do (the best source against each other one, per strategy: "
                     "the findings and Which source)." if sources else ""))


def run_costs(layout: StudyLayout, runs: list[Run], state: StudyState,
              tolerance: float) -> pd.DataFrame:
    """One row per finished run: iterations, training time, time per iteration, and when it
    converged (epoch, iterations, seconds; the rule of analysis.weights.convergence_epoch)."""
    from nnunet_transfer.analysis.weights import convergence_epoch
    from nnunet_transfer.training.bookkeeping import RunRecord
    rows = []
    for run in runs:
        if state.state(run.train_key) != SUCCEEDED:
            continue
        folder = layout.run_folder(run).path
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


def cost_section(layout: StudyLayout, costs: pd.DataFrame, tolerance: float,
                 convergence_figures: list[tuple[str, str]]) -> Section | None:
    if costs.empty:
        return None
    path = layout.path("tables", "training_cost.csv")
    atomic_write_bytes(path, costs.to_csv(index=False).encode())
    summary = costs.groupby(["architecture", "n", "strategy"], sort=False).agg(
        runs=("seed", "size"), s_per_iteration=("s_per_iteration", "median"),
        train_time_s=("train_time_s", "mean"),
        convergence_iterations=("convergence_iterations", "mean"),
        convergence_time_s=("convergence_time_s", "mean")).reset_index()
    rows = [[r.strategy, r.architecture, r.n, r.runs, f"{r.s_per_iteration:.3f}",
             f"{r.train_time_s:.1f}", f"{r.convergence_iterations:.0f}",
             f"{r.convergence_time_s:.1f}"] for r in summary.itertuples()]
    text = (f"Training time of the target runs (iterations only, validation excluded) and time "
            f"to convergence: the first epoch whose validation pseudo-Dice is within "
            f"{tolerance * 100:g} % of the run's maximum (Karimi et al.). Means over seeds; "
            "s / iteration is the median over seeds.\n\n"
            + markdown_table(rows, ["strategy", "architecture", "n", "runs", "s / iteration",
                                    "training (s)", "converged after (iterations)",
                                    "converged after (s)"], as_text=str))
    return Section("Convergence and training cost", markdown=text, key="convergence",
                   figures=convergence_figures, figures_first=True,
                   tables=[(path, "every run: iterations, times, convergence epoch")])


def relative_paths(text: str, root: str) -> str:
    """Absolute paths under the study folder as relative ones, and the work folder above it as
    `..`, so that the report reads the same wherever the study lies."""
    root = os.path.abspath(root)
    return text.replace(root + os.sep, "").replace(os.path.dirname(root) + os.sep, "../")


def _analysis_cells(layout: StudyLayout, runs: list[Run], kind: str):
    for cell in dict.fromkeys(r.cell for r in runs):
        yield cell, os.path.join(layout.cell_folder("analysis", cell), kind)


def analysis_sections(layout: StudyLayout, spec: StudySpec, runs: list[Run]) -> list[Section]:
    """A section per analysis (key: its kind): per cell the kind's comparative figure
    (`AnalysisKind.report_figure`), its other figures folded (per-run galleries), the data
    files as links, the analysis' own summary (tables, notes, command) folded."""
    sections = []
    for kind in spec.analyses:
        if kind == "convergence":      # drawn in the convergence and cost section
            continue
        subsections = []
        for cell, folder in _analysis_cells(layout, runs, kind):
            md = os.path.join(folder, f"{kind}.md")
            name = f"source {cell[0]}, {cell[1]}, n = {cell[2]}"
            if not os.path.isfile(md):
                subsections.append(Section(name, status="not computed yet ("
                                           f"{md_escape(os.path.relpath(md, layout.root))} "
                                           "is missing)"))
                continue
            with open(md, encoding="utf-8") as f:
                text = relative_paths(f.read(), layout.root)
            pngs = sorted(glob.glob(os.path.join(folder, "*.png")))
            shown = os.path.join(folder, figure_name(kind, ANALYSIS_KINDS[kind].report_figure))
            if shown not in pngs and os.path.join(folder, figure_name(kind, "")) in pngs:
                shown = os.path.join(folder, figure_name(kind, ""))   # written before the rule
            more = [p for p in pngs if p != shown]
            subsections.append(Section(
                name, figures=[(shown, _figure_caption(kind, shown))],
                gallery=(f"{len(more)} more figure{'' if len(more) == 1 else 's'} (per run, "
                         "or the same numbers drawn another way)",
                         [(p, _figure_caption(kind, p)) for p in more]) if more else None,
                tables=[(p, os.path.basename(p)) for p in sorted(
                    glob.glob(os.path.join(folder, "*.csv")))],
                details=[("the analysis' tables, notes and command",
                          _demote_headings(text))]))
        sections.append(Section(ANALYSIS_KINDS[kind].title, subsections=subsections, key=kind))
    return sections


def convergence_figures(layout: StudyLayout, runs: list[Run]) -> list[tuple[str, str]]:
    return [(os.path.join(folder, "convergence.png"),
             f"Validation pseudo-Dice against iterations and training time, source {cell[0]}, "
             f"{cell[1]}, n = {cell[2]}: a colour per strategy, thin lines its seeds, bold their "
             "mean; circles mark convergence epochs, triangles changes of training phase")
            for cell, folder in _analysis_cells(layout, runs, "convergence")]


def _figure_caption(kind: str, path: str) -> str:
    name = os.path.splitext(os.path.basename(path))[0]
    title = ANALYSIS_KINDS[kind].title
    return title if name == kind else f"{title}: {name.removeprefix(kind + '_').replace('_', ' ')}"


def _demote_headings(markdown: str) -> str:
    """An analysis summary's own headings sit below the report's section headings."""
    return "\n".join("###" + line if line.startswith("#") else line
                     for line in markdown.splitlines())


def failure_section(layout: StudyLayout, keys: list[str], state: StudyState
                    ) -> Section | None:
    failed = [(key, state.get(key)) for key in keys if state.state(key) == FAILED]
    blocked = [key for key in keys if state.state(key) == "blocked"]
    if not failed and not blocked:
        return None
    text = markdown_table([{"job": key, "what happened": str(record.get("note") or "")[:400],
                            "log": relative_paths(str(record.get("log")), layout.root)}
                           for key, record in failed])
    if blocked:
        text += (f"\n\n{len(blocked)} job(s) blocked by these: "
                 f"{md_escape(', '.join(blocked[:20]))}")
    return Section("Failed jobs", markdown=text, key="failed",
                   status=f"{len(failed)} job(s) failed; the rest of the study went on")


def overview(spec: StudySpec, keys: list[str], state: StudyState, runs: list[Run]) -> str:
    counts: dict[str, int] = {}
    for key in keys:
        counts[state.state(key)] = counts.get(state.state(key), 0) + 1
    budget = spec.budget
    return (f"Pretrained on {md_escape(', '.join(spec.sources))}, transferred to "
            f"{md_escape(spec.datasets[spec.target].folder_name)} and tested on "
            f"{spec.test_cases} held-out cases: {len(runs)} runs = "
            f"{len(spec.strategies)} strategies x n {sorted({r.n for r in runs})} x "
            f"{len(spec.seeds)} seeds x {md_escape(', '.join(spec.architectures))}; "
            f"{budget.target.epochs} epochs x {budget.target.iters} iterations per run. "
            f"Jobs: {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}.")


def setup_section(spec: StudySpec, layout: StudyLayout) -> Section:
    """The study's settings and the commands that made (and remake) this report, folded."""
    study_file = os.path.relpath(os.path.abspath(spec.path), layout.root)
    datasets = markdown_table([{"key": key, "dataset": d.folder_name, "kind": d.kind}
                               for key, d in spec.datasets.items()])
    with open(spec.path, encoding="utf-8") as f:
        text = f.read()
    fence = "~~~~"
    return Section("How this was produced", key="setup", markdown=(
        f"Study **{md_escape(spec.name)}**, study file {md_code(study_file)} (paths here are "
        "relative to the study folder, the one holding this report). Strategies: "
        f"{md_escape(', '.join(s.name for s in spec.strategies))}.\n\n" + datasets),
        details=[("the commands", f"{fence}\nnunet-transfer study run {study_file}\n"
                  f"nnunet-transfer study status {study_file}\n"
                  f"nnunet-transfer study report {study_file}\n{fence}\n\nEach job's exact "
                  "command is the first line of its log, `jobs/<job>/attempt<k>.log`."),
                 ("the study file", f"{fence}yaml\n{text.rstrip()}\n{fence}")])


def study_findings(layout: StudyLayout, spec: StudySpec, cells: list[CellAccuracy],
                   costs: pd.DataFrame, runs: list[Run]) -> list[Finding]:
    several = len(cells) > 1
    findings = []
    for cell in cells:
        findings += accuracy_findings(cell.table, cell.reference,
                                      os.path.relpath(cell.csv_path, layout.root),
                                      cell.title if several else "")
    findings += convergence_findings(costs, REFERENCE_STRATEGY.name,
                                     "tables/training_cost.csv")
    cell_names = dict.fromkeys(r.cell for r in runs)
    for kind, name, read in (("weights", "weights.csv", weight_findings),
                             ("reuse", "reuse_summary.csv", reuse_findings)):
        if kind not in spec.analyses:
            continue
        for cell, folder in _analysis_cells(layout, runs, kind):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                source = f"source {cell[0]}, " if len(spec.sources) > 1 else ""
                where = f"{source}{cell[1]}, n = {cell[2]}" if len(cell_names) > 1 else ""
                findings += read(pd.read_csv(path), os.path.relpath(path, layout.root), where)
    return findings


def write_study_report(spec: StudySpec, state: StudyState, pool_size: int) -> str:
    """Write <study folder>/report.html and report.md; returns the HTML path. The runs are the
    grid's (`pool_size`: the target's training pool), their jobs' outcomes the saved state's."""
    layout = StudyLayout(spec)
    pretrainings, runs = expand(spec, pool_size)
    keys = job_keys(spec, pretrainings, runs)
    tolerance = spec.analysis.tolerance
    cells = cell_accuracies(layout, runs, state, TEST)
    costs = run_costs(layout, runs, state, tolerance)
    baselines = baseline_note(spec)
    sources, source_found = which_source(layout, spec, evaluated_runs(cells), TEST)
    sections = [accuracy_section(layout, cells, "Accuracy on the held-out test cases of the "
                                 "target", "accuracy", baselines),
                sources,
                cost_section(layout, costs, tolerance, convergence_figures(layout, runs)),
                *analysis_sections(layout, spec, runs)]
    if spec.generalization:
        sections.append(accuracy_section(
            layout, cell_accuracies(layout, runs, state, GENERALIZATION),
            f"Generalisation to the unseen test set "
            f"({spec.datasets[spec.generalization].folder_name})", "generalization",
            baselines))
    sections += [failure_section(layout, keys, state), setup_section(spec, layout)]
    sections = [s for s in sections if s is not None]
    anchors = {s.key: s.key for s in sections if s.key}
    headline = headline_figure(layout, cells)
    findings = findings_markdown(study_findings(layout, spec, cells, costs, runs)
                                 + source_found, anchors)
    sections.insert(0, Section("Findings", key="findings", figures_first=True,
                               figures=[headline] if headline else [],
                               markdown=findings or "Nothing to conclude yet: no run has been "
                                                    "evaluated."))
    html, _ = write_report(layout.root, f"Transfer-learning study {spec.name}", sections,
                           summary=overview(spec, keys, state, runs),
                           generated_by=f"nnunet-transfer study report, "
                                        f"{time.strftime('%Y-%m-%d %H:%M')}")
    return html


def report_only(spec: StudySpec) -> str:
    """`study report`: the report of what exists now, without running anything."""
    from nnunet_transfer.errors import UserError
    from nnunet_transfer.study.setup import StudySetup
    layout = StudyLayout(spec)
    if not os.path.isfile(layout.state_file):
        raise UserError(f"the study {spec.name} has not run yet ({layout.state_file} is "
                        "missing); run `nnunet-transfer study run` first")
    return write_study_report(spec, StudyState(layout.state_file), StudySetup(spec).pool_size())
