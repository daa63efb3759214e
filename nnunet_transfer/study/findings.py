"""What a study found, as sentences computed from its tables (the report's first section).

Every sentence is built from the numbers of one table and says what they say: the direction
words ("higher", "sooner", "no strategy beats") come from the signs and the significance, never
from a template that assumes transfer helps. Each `Finding` names the figure (its section's
anchor) and the CSV behind it, so that a reader, and the tests, can check it.

The inputs are the study's own files: `comparison.csv` (evaluation.stats.comparison_table),
`training_cost.csv` (results.run_costs), an analysis cell's `weights.csv` and
`reuse_summary.csv`, and the sources' tables of `source_choice` (`source_comparison.csv`,
`ranking_agreement.csv`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from nnunet_transfer.document.markdown import md_code, md_escape
from nnunet_transfer.evaluation.stats import METRIC_TITLES, p_text
from nnunet_transfer.study.source_choice import NO_TEST, ranking_caveat

FRONT_STRATEGY = "FrozenRandomEncoder"   # the papers' control: a random encoder, frozen
HEADLINE_METRIC = "dsc"                  # higher is better


@dataclass(frozen=True)
class Finding:
    text: str      # Markdown, one or two sentences
    figure: str    # the anchor of the section whose figure shows it
    source: str    # the CSV it was computed from (relative to the study folder)


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def p_phrase(p: float | None) -> str:
    """A p-value as a sentence says it ("p = 0.012", "p < 0.0001"); "" when there is none."""
    if p is None or pd.isna(p):
        return ""
    text = p_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _significance(row: pd.Series, alpha: float) -> str:
    p = row["p_ttest"]
    if pd.isna(p):
        return "no test"
    return f"{p_phrase(p)}, {'significant' if p < alpha else 'not significant'} at {alpha:g}"


def accuracy_findings(comparison: pd.DataFrame, reference: str | None, source: str,
                      where: str = "", alpha: float = 0.05, figure: str = "accuracy"
                      ) -> list[Finding]:
    """Per structure and n: the best strategy against the reference (the transfer gain), which
    strategies are significantly better or worse, and the FrozenRandomEncoder control."""
    metric = HEADLINE_METRIC
    name = METRIC_TITLES[metric]
    rows = comparison[(comparison["metric"] == metric) & (comparison["n_cases"] > 0)]
    findings = []
    for (structure, n), group in rows.groupby(["structure", "n"], sort=True, dropna=False):
        at = _prefix(where) + (f"n = {int(n)}, " if not pd.isna(n) else "") + f"{structure}: "
        ref = group[group["strategy"] == reference]
        others = group[group["strategy"] != reference].sort_values("mean", ascending=False)
        if ref.empty or others.empty:
            best = group.sort_values("mean", ascending=False).iloc[0]
            findings.append(Finding(f"{at}the highest {name} is {best['strategy']}'s "
                                    f"({best['mean']:.3f}).", figure, source))
            continue
        ref_row, best = ref.iloc[0], others.iloc[0]
        gain = best["mean"] - ref_row["mean"]
        if gain > 0:
            text = (f"{at}{best['strategy']} has the highest {name}, {best['mean']:.3f} against "
                    f"{ref_row['mean']:.3f} for {reference} ({gain:+.3f}; "
                    f"{_significance(best, alpha)}).")
        else:
            text = (f"{at}no strategy beats {reference} ({name} {ref_row['mean']:.3f}); the "
                    f"closest, {best['strategy']}, reaches {best['mean']:.3f} ({gain:+.3f}; "
                    f"{_significance(best, alpha)}).")
        diff = others["mean"] - ref_row["mean"]
        tested = others["p_ttest"] < alpha
        better = list(others[tested & (diff > 0)]["strategy"])
        worse = list(others[tested & (diff < 0)]["strategy"])
        text += (f" Significantly better than {reference}: {', '.join(better) or 'none'}; "
                 f"significantly worse: {', '.join(worse) or 'none'} "
                 f"(of {len(others)} {'strategy' if len(others) == 1 else 'strategies'}).")
        findings.append(Finding(text, figure, source))
        control = others[others["strategy"] == FRONT_STRATEGY]
        if not control.empty:
            row = control.iloc[0]
            gap = row["mean"] - ref_row["mean"]
            findings.append(Finding(
                f"{at}{FRONT_STRATEGY} (a random encoder, frozen) is "
                f"{abs(gap):.3f} {'above' if gap > 0 else 'below' if gap < 0 else 'level with'} "
                f"{reference} in {name} ({row['mean']:.3f} vs {ref_row['mean']:.3f}; "
                f"{_significance(row, alpha)}).", figure, source))
    return findings


def convergence_findings(costs: pd.DataFrame, reference: str | None, source: str,
                         figure: str = "convergence") -> list[Finding]:
    """Per architecture and n: how much sooner (or later) each strategy converged than the
    reference, in iterations and training seconds (means over seeds)."""
    if costs.empty or reference is None:
        return []
    findings = []
    means = costs.groupby(["architecture", "n", "strategy"], sort=True)[
        ["convergence_iterations", "convergence_time_s"]].mean()
    for (architecture, n), group in means.groupby(level=[0, 1], sort=True):
        group = group.droplevel([0, 1])
        if reference not in group.index:
            continue
        ref = group.loc[reference]
        parts = []
        for strategy, row in group.drop(index=reference).iterrows():
            d_iter = ref["convergence_iterations"] - row["convergence_iterations"]
            d_time = ref["convergence_time_s"] - row["convergence_time_s"]
            when = ("sooner" if d_iter > 0 else "later" if d_iter < 0 else
                    "after as many iterations")
            amount = f"{_count(abs(d_iter))} iterations {when}" if d_iter else when
            parts.append(f"{strategy} after {_count(row['convergence_iterations'])} iterations "
                         f"({row['convergence_time_s']:.1f} s), {amount} "
                         f"({'-' if d_time > 0 else '+'}{abs(d_time):.1f} s)")
        if parts:
            findings.append(Finding(
                f"{architecture}, n = {n}: {reference} converged after "
                f"{_count(ref['convergence_iterations'])} iterations "
                f"({ref['convergence_time_s']:.1f} s of training); " + "; ".join(parts) + ".",
                figure, source))
    return findings


def _count(value: float) -> str:
    """A mean of whole numbers: whole when it is, else one decimal."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def weight_findings(weights: pd.DataFrame, source: str, where: str = "",
                    figure: str = "weights") -> list[Finding]:
    """Per strategy: the median relative filter-norm change of each part, and the largest."""
    findings = []
    for strategy, rows in weights.groupby("strategy", sort=True):
        medians = rows.groupby("part", sort=False)["filter_norm_change_mean"].median().dropna()
        if medians.empty:
            continue
        text = ", ".join(f"{part} {100 * value:.3g} %" for part, value in medians.items())
        findings.append(Finding(
            f"{_prefix(where)}median relative filter-norm change of {strategy}: {text}; "
            f"largest in the {medians.idxmax()}.", figure, source))
    return findings


def reuse_findings(summary: pd.DataFrame, source: str, where: str = "",
                   figure: str = "reuse") -> list[Finding]:
    """The layers with the largest and the smallest feature reuse (the headline measure)."""
    if summary.empty:
        return []
    rows = summary[summary["measure"] == summary["measure"].iloc[0]].dropna(subset=["reuse"])
    if rows.empty:
        return []
    top, low = rows.loc[rows["reuse"].idxmax()], rows.loc[rows["reuse"].idxmin()]
    top_numbers = "; ".join(part for part in (f"{top['reuse']:+.3f}", p_phrase(top["p_welch"]))
                            if part)
    text = (f"{_prefix(where)}feature reuse ({top['measure']}, transfer minus scratch) is "
            f"largest in {top['layer']} ({top_numbers}) "
            f"and smallest in {low['layer']} ({low['reuse']:+.3f}).")
    if top["reuse"] <= 0:
        text += " No layer of the transfer runs stayed closer to its start than scratch's did."
    return [Finding(text, figure, source)]


def _cell_prefix(row, several_architectures: bool) -> str:
    n = "" if pd.isna(row["n"]) else f", n = {int(row['n'])}"
    return (f"{row['architecture']}, " if several_architectures else "") + \
        f"{row['strategy']}{n}"


def source_findings(comparison: pd.DataFrame, source: str, alpha: float = 0.05,
                    figure: str = "which-source") -> list[Finding]:
    """Per architecture, strategy, n and structure, the sources compared as strategies are: the
    best source's test DSC, every other source's difference to it and its p, and which are
    significantly worse (`source_choice.source_comparison`'s table)."""
    if comparison.empty:
        return []
    name = METRIC_TITLES[HEADLINE_METRIC]
    several = comparison["architecture"].nunique() > 1
    structures = comparison["structure"].nunique() > 1
    findings = []
    for _, group in comparison.groupby(["architecture", "strategy", "n", "structure"],
                                       sort=False, dropna=False):
        first = group.iloc[0]
        best = group[group["source"] == first["best"]].iloc[0]
        others = group[group["source"] != first["best"]].sort_values("mean", ascending=False)
        if others.empty:
            continue
        at = _cell_prefix(first, several) + (f", {first['structure']}" if structures else "")
        parts = [f"{row['source']} {row['mean']:.3f} ({row['difference']:+.3f}; "
                 f"{_significance(row, alpha)})" for _, row in others.iterrows()]
        worse = list(others[others["p_ttest"] < alpha]["source"])
        findings.append(Finding(
            f"{at}: source {best['source']} gives the highest {name}, {best['mean']:.3f}; "
            + "; ".join(parts) + f". Significantly below {best['source']}: "
            f"{', '.join(worse) or 'none'} (of {len(others)} other "
            f"source{'' if len(others) == 1 else 's'}).", figure, source))
    return findings


def ranking_findings(agreement: pd.DataFrame, source: str, alpha: float = 0.05,
                     figure: str = "which-source") -> list[Finding]:
    """Per architecture, strategy and n: whether `rank-sources`' ranking held after
    fine-tuning (the verdict of `source_choice.rank_agreement`, from Kendall tau and its p),
    whether its first source was the best fine-tuned one; then the caveat of each number of
    sources (`source_choice.ranking_caveat`: what k sources allow tau to show)."""
    findings = []
    several = agreement["architecture"].nunique() > 1
    for _, row in agreement.iterrows():
        at = _cell_prefix(row, several)
        if row["verdict"] == NO_TEST:
            findings.append(Finding(f"{at}: no rank correlation ({row['sources']} source(s) "
                                    "with both a rank and an evaluated run).", figure, source))
            continue
        numbers = ", ".join(part for part in (f"Kendall tau = {row['tau']:+.2f}",
                                              p_phrase(row["p"]),
                                              f"{row['sources']} sources") if part)
        same = row["ranked_first"] == row["fine_tuned_best"]
        findings.append(Finding(
            f"{at}: the ranking {row['verdict']} ({numbers}); the source ranked first, "
            f"{row['ranked_first']}, {'was' if same else 'was not'} the best after "
            f"fine-tuning" + ("." if same else f" ({row['fine_tuned_best']} was)."),
            figure, source))
    for k in sorted(set(agreement["sources"])):
        if k >= 2:
            findings.append(Finding(ranking_caveat(int(k), alpha), figure, source))
    return findings


def findings_markdown(findings: list[Finding], anchors: dict[str, str]) -> str:
    """A bullet per finding, linking its figure's section and naming its CSV."""
    lines = []
    for finding in findings:
        link = f" ([figure](#{anchors[finding.figure]}))" if finding.figure in anchors else ""
        lines.append(f"- {md_escape(finding.text)}{link} (from {md_code(finding.source)})")
    return "\n".join(lines) + "\n" if lines else ""
