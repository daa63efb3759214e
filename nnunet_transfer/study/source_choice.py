"""Which source to transfer from: did `rank-sources`' ranking, made before any fine-tuning, hold
after it, and how far apart are the sources once fine-tuned.

Inputs: the per-case rows of the study's evaluated runs (evaluation.stats.collect_runs, with
`source` and `architecture` columns added) and `rank-sources`' CSV (`StudyLayout.ranking_csv`:
columns `source` = the study's source key, `rank` 1 = best, `score` higher = better).

- A source's fine-tuned accuracy at (architecture, strategy, n) is its mean test DSC: per test
  case and structure the mean over seeds, then the mean over cases and structures.
- The agreement of the two rankings there is Kendall's tau between -rank and that accuracy
  (scipy.stats.kendalltau: tau-b, exact two-sided p for small samples without ties), over the
  sources that have both. With k sources tau moves in steps of 2 / C(k, 2) and its smallest
  possible p is 2 / k! (k = 3: tau in {-1, -1/3, 1/3, 1}, p >= 1/3), so few sources give a weak
  test: `ranking_caveat`.
- The sources compared as strategies are (`source_comparison`): per (architecture, strategy, n,
  structure) the best source by mean, and every other source's difference to it with the
  report's paired tests by test case (evaluation.stats.comparison_table, best source as its
  reference).
"""

from __future__ import annotations

import math
import os
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
from scipy import stats

from nnunet_transfer.evaluation.stats import comparison_table

RANKING_COLUMNS = ("source", "rank", "score")
METRIC = "dsc"   # the headline metric, higher is better
HELD, PARTLY, NOT_HELD, NO_TEST = "held", "held partly", "did not hold", "no test"
CELL = ["architecture", "strategy", "n"]


def read_ranking(path: str) -> tuple[pd.DataFrame | None, str | None]:
    """`rank-sources`' CSV as (source, rank, score) rows, or (None, why there is none)."""
    if not os.path.isfile(path):
        return None, "is missing: rank-sources has not run for this study, or failed"
    try:
        table = pd.read_csv(path, dtype={"source": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError) as error:
        return None, f"cannot be read ({type(error).__name__}: {error})"
    missing = [c for c in RANKING_COLUMNS if c not in table.columns]
    if missing:
        return None, f"has no column {', '.join(missing)}"
    return table[list(RANKING_COLUMNS)].dropna(subset=["rank"]).drop_duplicates("source"), None


def source_means(runs: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per (architecture, strategy, n, source): `metric` averaged over seeds per case and
    structure, then over cases and structures. Columns: architecture, strategy, n, source,
    `metric`."""
    per_case = runs.groupby(CELL + ["source", "case", "structure"], dropna=False)[metric].mean()
    return per_case.groupby(CELL + ["source"], dropna=False).mean().dropna().reset_index()


def verdict(tau: float, p: float, alpha: float = 0.05) -> str:
    """`held` where the orders agree (tau = 1) or agree significantly (tau > 0, p < alpha),
    `held partly` where tau > 0 otherwise, `did not hold` where tau <= 0, `no test` without a
    tau (fewer than 2 sources, or one side constant)."""
    if tau is None or pd.isna(tau):
        return NO_TEST
    if tau >= 1 - 1e-12 or (tau > 0 and not pd.isna(p) and p < alpha):
        return HELD
    return PARTLY if tau > 0 else NOT_HELD


def rank_agreement(means: pd.DataFrame, ranking: pd.DataFrame, alpha: float = 0.05,
                   metric: str = METRIC) -> pd.DataFrame:
    """Per (architecture, strategy, n): sources (k), Kendall tau and its p between the ranking
    and the fine-tuned accuracy, rank-sources' first source, the best fine-tuned one, the
    verdict. Sources without a rank or without an evaluated run are left out."""
    ranks = ranking.set_index("source")["rank"]
    rows = []
    for (architecture, strategy, n), group in means.groupby(CELL, sort=False, dropna=False):
        group = group[group["source"].isin(ranks.index)]
        k = len(group)
        tau = p = np.nan
        if k >= 2:
            with warnings.catch_warnings():   # a constant side: scipy warns and gives NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                result = stats.kendalltau(-ranks[group["source"]].to_numpy(float),
                                          group[metric].to_numpy(float))
            tau, p = float(result.statistic), float(result.pvalue)
        top = ranks[group["source"]].idxmin() if k else None
        best = group.loc[group[metric].idxmax(), "source"] if k else None
        rows.append({"architecture": architecture, "strategy": strategy, "n": n,
                     "sources": k, "tau": tau, "p": p, "ranked_first": top,
                     "fine_tuned_best": best, "verdict": verdict(tau, p, alpha)})
    return pd.DataFrame(rows)


def tau_values(k: int) -> list[Fraction]:
    """Every value Kendall's tau can take between two orders of k items without ties:
    1 - 4 d / (k (k - 1)) for d = 0 .. C(k, 2) discordant pairs, lowest first."""
    pairs = k * (k - 1) // 2
    return [1 - Fraction(2 * d, pairs) for d in range(pairs, -1, -1)] if pairs else []


def smallest_p(k: int) -> float:
    """The smallest two-sided exact p of Kendall's tau with k items (both orders equal or
    reversed): 2 / k!, at most 1."""
    return min(1.0, 2 / math.factorial(k)) if k >= 1 else 1.0


def ranking_caveat(k: int, alpha: float = 0.05) -> str:
    """What k sources allow a rank correlation to show, as a sentence."""
    values = tau_values(k)
    listed = (", ".join(str(v) for v in values) if len(values) <= 7
              else f"{values[0]} to {values[-1]} in steps of {values[1] - values[0]}")
    floor = smallest_p(k)
    text = (f"With {k} sources Kendall tau can only be {listed}, and its smallest possible p is "
            f"{floor:.2g}")
    if floor >= alpha:
        return text + (f": no ranking of {k} sources can be significant at {alpha:g}, so this "
                       "is a weak test of the ranking; more sources make it stronger.")
    return text + ("; few sources still give a weak test, and a feature-based score is "
                   "known to predict fine-tuned accuracy less well on medical tasks.")


def source_comparison(runs: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per (architecture, strategy, n, structure, source): the mean `metric`, the best source
    there, the difference to it and the paired tests against it (p_ttest, p_wilcoxon, n_pairs;
    NaN for the best itself)."""
    rows = []
    for (architecture, strategy), of_strategy in runs.groupby(["architecture", "strategy"],
                                                              sort=False):
        # comparison_table compares the groups of its `strategy` column: here, the sources
        by_source = of_strategy.assign(strategy=of_strategy["source"])
        for (n, structure), group in by_source.groupby(["n", "structure"], sort=False,
                                                       dropna=False):
            if group["source"].nunique() < 2:
                continue
            means = comparison_table(group, None, (metric,))
            means = means[means["n_cases"] > 0]
            if means.empty:
                continue
            best = means.loc[means["mean"].idxmax()]
            table = comparison_table(group, best["strategy"], (metric,))
            for row in table[table["n_cases"] > 0].itertuples():
                rows.append({"architecture": architecture, "strategy": strategy, "n": n,
                             "structure": structure, "source": row.strategy,
                             "mean": row.mean, "std": row.std, "n_cases": row.n_cases,
                             "best": best["strategy"],
                             "difference": row.mean - best["mean"],
                             "n_pairs": row.n_pairs, "p_ttest": row.p_ttest,
                             "p_wilcoxon": row.p_wilcoxon})
    return pd.DataFrame(rows)


def scratch_baselines(plans_of: dict[str, str]) -> list[str] | None:
    """Per source, the Scratch runs its runs are compared with, as sentences; None where every
    source shares one plans identifier (one baseline, nothing to say). `plans_of`: source key
    -> the target's plans identifier made from it."""
    if len(set(plans_of.values())) < 2:
        return None
    return [f"source {source}: its runs are compared with the Scratch runs trained under the "
            f"plans {plans} (the target planned as for {source})"
            for source, plans in plans_of.items()]
