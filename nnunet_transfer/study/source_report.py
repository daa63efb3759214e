"""The report's "Which source" section and its findings, for a study of two or more sources:
whether `rank-sources`' ranking held after fine-tuning (figure, Kendall tau per strategy and n,
the caveat of few sources), and the sources compared as strategies are (best source against each
other one, difference and p). Also the sentence, per source, of which Scratch runs its runs are
compared with, where the sources bring different plans. The numbers are `source_choice`'s.
"""

from __future__ import annotations

import os

import pandas as pd

from nnunet_transfer.analysis.outputs import save_figure
from nnunet_transfer.analysis.source_figure import source_score_figure
from nnunet_transfer.atomic_files import atomic_write_bytes
from nnunet_transfer.document import Section, markdown_table, md_escape
from nnunet_transfer.document.markdown import md_code
from nnunet_transfer.evaluation.stats import p_text
from nnunet_transfer.study.findings import Finding, ranking_findings, source_findings
from nnunet_transfer.study.grid import (
    StudyLayout, ranked_sources, transferred_plans, unranked_sources)
from nnunet_transfer.study.source_choice import (
    rank_agreement, ranking_caveat, read_ranking, scratch_baselines, source_comparison,
    source_means)
from nnunet_transfer.study.spec import StudySpec
from nnunet_transfer.training.strategies import SCRATCH

KEY = "which-source"


def baseline_note(spec: StudySpec) -> str | None:
    """Which Scratch runs each source's runs are compared with, where the sources bring
    different plans (Markdown); None where there is one baseline, or no Scratch."""
    if not any(s.name == SCRATCH.name for s in spec.strategies):
        return None
    lines = scratch_baselines({source: transferred_plans(spec, source)
                               for source in spec.sources})
    if lines is None:
        return None
    return ("The sources bring different plans, so each source has its own Scratch baseline "
            "(the target trained from scratch under the same plans):\n\n"
            + "\n".join(f"- {md_escape(line)}" for line in lines) + "\n")


def _left_out_text(left_out: dict[str, str]) -> str:
    """The sources the study does not rank, with why (Markdown)."""
    return ("Not ranked by the study, so left out of tau: " + "; ".join(
        f"{md_escape(source)} ({md_escape(why)})" for source, why in left_out.items()) + ".")


def _n(value) -> str:
    return "" if pd.isna(value) else str(int(value))


def _agreement_table(agreement: pd.DataFrame) -> str:
    rows = [[r.architecture, r.strategy, _n(r.n), r.sources,
             "-" if pd.isna(r.tau) else f"{r.tau:+.2f}", p_text(r.p), r.ranked_first or "-",
             r.fine_tuned_best or "-", r.verdict] for r in agreement.itertuples()]
    return markdown_table(rows, ["architecture", "strategy", "n", "sources", "Kendall tau",
                                 "p", "ranked first", "best fine-tuned", "the ranking"],
                          as_text=str)


def _comparison_table(comparison: pd.DataFrame) -> str:
    structures = comparison["structure"].nunique() > 1
    rows = [[r.architecture, r.strategy, _n(r.n), *([r.structure] if structures else []),
             r.source, f"{r.mean:.3f}" + ("" if pd.isna(r.std) else f" ± {r.std:.3f}"),
             "best" if r.source == r.best else f"{r.difference:+.3f}",
             "-" if r.source == r.best else p_text(r.p_ttest)]
            for r in comparison.itertuples()]
    return markdown_table(rows, ["architecture", "strategy", "n",
                                 *(["structure"] if structures else []), "source",
                                 "test DSC", "vs best", "p (paired t-test)"], as_text=str)


def _ranking_held(layout: StudyLayout, spec: StudySpec, left_out: dict[str, str],
                  runs: pd.DataFrame, ranking: pd.DataFrame, shown: str, test_set: str,
                  parts: list, figures: list, tables: list, findings: list) -> None:
    """Whether the ranking held: the figure, the tau table, the caveat, the sources left out
    (`left_out`: `unranked_sources`) and their findings, appended to the section's lists."""
    # Scratch takes nothing from a source but its plans: the score says nothing of it
    means = source_means(runs[runs["strategy"] != SCRATCH.name])
    agreement = rank_agreement(means, ranking)
    if agreement.empty:
        parts.append("No strategy but Scratch has been evaluated: no ranking to test yet.")
        return
    agreement_path = layout.path("tables", test_set, "ranking_agreement.csv")
    atomic_write_bytes(agreement_path, agreement.to_csv(index=False).encode())
    points = means.merge(ranking[["source", "score"]], on="source")
    if not points.empty:
        figure_path = layout.path("figures", "which_source.png")
        order = list(ranking.sort_values("rank")["source"])
        save_figure(source_score_figure(points, order), figure_path)
        figures.append((figure_path, "Each source's transferability score (`rank-sources`, "
                        "computed before any fine-tuning) against its mean test DSC after "
                        "fine-tuning; a line per strategy through its sources by score "
                        "(rising: the ranking held), a marker per source."))
    counts = sorted({int(k) for k in agreement["sources"] if k >= 2})
    parts.append(f"Whether the ranking of {md_code(shown)} (rank 1 = the highest score) "
                 "held after fine-tuning: Kendall tau between it and the sources' mean test "
                 "DSC, per strategy and n (1: the same order, -1: reversed; Scratch left "
                 "out, as it takes nothing from a source but its plans).\n\n"
                 + _agreement_table(agreement) + "\n\n"
                 + " ".join(md_escape(ranking_caveat(k)) for k in counts))
    missing = [s for s in spec.sources if s not in set(ranking["source"]) and s not in left_out]
    if left_out:
        parts.append(_left_out_text(left_out))
    if missing:
        parts.append(f"Not in the ranking, so left out of tau: {md_escape(', '.join(missing))}.")
    tables.append((agreement_path, "tau, p and the verdict per strategy and n"))
    findings += ranking_findings(agreement, os.path.relpath(agreement_path, layout.root))


def which_source(layout: StudyLayout, spec: StudySpec, runs: pd.DataFrame, test_set: str
                 ) -> tuple[Section | None, list[Finding]]:
    """The section and its findings; (None, []) for a study of one source. `runs`: the
    per-case rows of every evaluated run (collect_runs' columns with source and
    architecture)."""
    if len(spec.sources) < 2:
        return None, []
    ranking_path = layout.ranking_csv
    ranking, why_not = read_ranking(ranking_path)
    shown = os.path.relpath(ranking_path, layout.root)
    if runs.empty:
        return Section("Which source", key=KEY, markdown="No run has been evaluated yet."), []
    parts, figures, tables, findings = [], [], [], []
    left_out = unranked_sources(spec)
    if ranking is None and left_out and len(ranked_sources(spec)) < 2:
        parts.append("No ranking of the sources to test: `rank-sources` can score fewer than "
                     "two of them. " + _left_out_text(left_out))
    elif ranking is None:
        parts.append(f"No ranking of the sources to test: {md_code(shown)} {md_escape(why_not)}.")
    else:
        _ranking_held(layout, spec, left_out, runs, ranking, shown, test_set,
                      parts, figures, tables, findings)
    comparison = source_comparison(runs)
    if not comparison.empty:
        comparison_path = layout.path("tables", test_set, "source_comparison.csv")
        atomic_write_bytes(comparison_path, comparison.to_csv(index=False).encode())
        parts.append("The sources compared as the strategies are: per strategy and n, the best "
                     "source and every other source's difference to it, paired by test case "
                     "(mean ± std over the test cases, each averaged over seeds).\n\n"
                     + _comparison_table(comparison))
        tables.append((comparison_path, "every source against the best, per strategy, n and "
                                        "structure, with both p-values"))
        findings += source_findings(comparison, os.path.relpath(comparison_path, layout.root))
    return Section("Which source", key=KEY, markdown="\n\n".join(parts) + "\n",
                   figures=figures, figures_first=True, tables=tables), findings
