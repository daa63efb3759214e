"""Comparison tables like the papers': mean +- std per strategy and n, paired tests, asterisks.

Input: the per-case tables (`evaluation_per_case.csv`) of several runs, each labelled by a run
spec `strategy[:n[:seed]]`, e.g. `FineTune:5:0` = strategy FineTune trained on n = 5 images
with seed 0. Runs of one strategy and n with several seeds are one group.

Statistics of a group, per structure and metric:

- a case's value is the mean over the group's seeds of its defined values (NaN distances of an
  empty mask are left out and counted in `n_excluded`; a case with no defined value is left out);
- mean and std (ddof 1) are over the test cases; `seed_std` is the std of the per-seed means
  (the spread between seeds; NaN with one seed);
- paired tests against the reference strategy at the same n (or, if the reference has no run at
  that n, its run without n, e.g. a model trained on everything) on the cases both have:
  paired t-test (scipy.stats.ttest_rel) and Wilcoxon signed-rank (scipy.stats.wilcoxon,
  two-sided, zero differences dropped as scipy's default "wilcox"). When every difference is
  zero (identical results) both p-values are 1; with fewer than 2 pairs they are NaN; a
  constant non-zero difference gives the t-test's p = 0 (scipy: infinite t).
- `significant` and the asterisk: p < alpha (0.05) of the chosen test (t-test by default).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from nnunet_transfer.document import markdown_table
from nnunet_transfer.errors import UserError
from nnunet_transfer.evaluation.evaluate import PER_CASE_FILE, SUMMARY_METRICS
from nnunet_transfer.training.run_folder import RunId
from nnunet_transfer.atomic_files import atomic_write_bytes

METRIC_TITLES = {"dsc": "DSC", "iou": "IoU", "hd95_mm": "HD95 (mm)", "assd_mm": "ASSD (mm)",
                 "lesion_f1": "lesion F1"}
TESTS = ("ttest", "wilcoxon")
COMPARISON_CSV, COMPARISON_MD = "comparison.csv", "comparison.md"


def parse_run_item(item: str) -> tuple[RunId, str]:
    """`LABEL=PATH` (see `RunId.parse`) -> (run, path)."""
    label, sep, path = item.partition("=")
    if not sep or not path:
        raise UserError(f"{item!r}: give LABEL=PATH, e.g. FineTune:5:0=eval/finetune_n5_s0")
    return RunId.parse(label), path


def read_per_case(path: str) -> pd.DataFrame:
    """An evaluation's per-case table, from its CSV or from the folder holding it."""
    csv_path = os.path.join(path, PER_CASE_FILE) if os.path.isdir(path) else path
    try:
        table = pd.read_csv(csv_path, dtype={"case": str, "structure": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the per-case results {csv_path} ({error}); give an "
                        "evaluation folder written by `nnunet-transfer evaluate` or its "
                        f"{PER_CASE_FILE}") from None
    needed = {"case", "structure"}
    if not needed <= set(table.columns) or not set(SUMMARY_METRICS) & set(table.columns):
        raise UserError(f"{csv_path} is not a per-case table of `nnunet-transfer evaluate` "
                        f"(needs columns case, structure and metrics such as dsc)")
    return table


def collect_runs(runs: list[tuple[RunId, str]]) -> pd.DataFrame:
    """One long table of every run's per-case rows with strategy, n and seed columns."""
    if not runs:
        raise UserError("give at least one run as LABEL=PATH")
    seen = set()
    tables = []
    for spec, path in runs:
        if spec in seen:
            raise UserError(f"run {spec} given twice; give each run its own label "
                            "(STRATEGY:N:SEED)")
        seen.add(spec)
        table = read_per_case(path)
        tables.append(table.assign(strategy=spec.strategy, n=spec.n, seed=spec.seed))
    return pd.concat(tables, ignore_index=True)


def check_test(test: str) -> None:
    if test not in TESTS:
        raise UserError(f"test {test!r}: give one of {', '.join(TESTS)}")


def paired_p_values(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """(paired t-test p, Wilcoxon signed-rank p), two-sided, of equally long paired arrays."""
    differences = np.asarray(first, float) - np.asarray(second, float)
    if differences.size < 2:
        return float("nan"), float("nan")
    if not np.any(differences):
        return 1.0, 1.0   # identical results: no evidence of a difference (scipy: NaN / error)
    with warnings.catch_warnings():
        # scipy warns (catastrophic cancellation, exact p with ties) but still returns p
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        t_p = float(stats.ttest_rel(first, second).pvalue)
        w_p = float(stats.wilcoxon(differences).pvalue)
    return t_p, w_p


def _case_values(group: pd.DataFrame, metric: str) -> pd.Series:
    """Per test case, the mean over seeds of the defined values (NaN-only cases dropped)."""
    return group.groupby("case")[metric].mean().dropna()


def _group_key(n) -> object:
    return None if n is None or (isinstance(n, float) and np.isnan(n)) else int(n)


def comparison_table(runs: pd.DataFrame, reference: str | None = None,
                     metrics: tuple[str, ...] | None = None, test: str = "ttest",
                     alpha: float = 0.05) -> pd.DataFrame:
    """One row per structure, metric, strategy and n (see the module docstring for columns)."""
    check_test(test)
    strategies = list(dict.fromkeys(runs["strategy"]))
    if reference is not None and reference not in strategies:
        raise UserError(f"reference strategy {reference!r} is not among the runs "
                        f"({', '.join(strategies)}); give one of them")
    metrics = tuple(m for m in (metrics or SUMMARY_METRICS) if m in runs.columns)
    if not metrics:
        raise UserError(f"none of the metrics is in the per-case tables; give some of "
                        f"{', '.join(SUMMARY_METRICS)}")
    groups = {(strategy, _group_key(n)): group for (strategy, n), group
              in runs.groupby(["strategy", "n"], dropna=False, sort=False)}
    rows = []
    for structure in dict.fromkeys(runs["structure"]):
        for metric in metrics:
            for (strategy, n), group in groups.items():
                of_structure = group[group["structure"] == structure]
                values = _case_values(of_structure, metric)
                per_seed = of_structure.groupby("seed", dropna=False)[metric].mean()
                row = {"structure": structure, "metric": metric, "strategy": strategy, "n": n,
                       "mean": values.mean(), "std": values.std(ddof=1),
                       "n_cases": len(values),
                       "n_seeds": of_structure["seed"].nunique(dropna=False),
                       "seed_std": per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan,
                       "n_excluded": int(of_structure[metric].isna().sum()),
                       "reference": None, "n_pairs": 0, "p_ttest": np.nan,
                       "p_wilcoxon": np.nan, "significant": False}
                ref_group = None
                if reference is not None and strategy != reference:
                    ref_group = groups.get((reference, n), groups.get((reference, None)))
                if ref_group is not None:
                    ref_values = _case_values(ref_group[ref_group["structure"] == structure],
                                              metric)
                    common = values.index.intersection(ref_values.index)
                    p_t, p_w = paired_p_values(values[common].to_numpy(),
                                               ref_values[common].to_numpy())
                    chosen = p_t if test == "ttest" else p_w
                    row.update(reference=reference, n_pairs=len(common), p_ttest=p_t,
                               p_wilcoxon=p_w, significant=bool(chosen < alpha))
                rows.append(row)
    return pd.DataFrame(rows).astype({"n": "Int64"})   # whole numbers, empty when not given


MAX_COLUMNS = 6   # value columns of one compact table; more: one table per metric


def _cell(row: pd.Series, digits: int) -> str:
    if row["n_cases"] == 0:
        return "-"
    std = "" if np.isnan(row["std"]) else f" ± {row['std']:.{digits}f}"
    return f"{row['mean']:.{digits}f}{std}{'*' if row['significant'] else ''}"


def p_text(p: float) -> str:
    """A p-value to 2 significant digits ("-" when there is none)."""
    if p is None or pd.isna(p):
        return "-"
    return "< 0.0001" if p < 1e-4 else f"{p:.2g}"


def _n_text(n) -> str:
    return "" if n is None or pd.isna(n) else f"n = {int(n)}"


def _compact(of_structure: pd.DataFrame, columns: list[tuple[str, object]], cell) -> str:
    """Strategy rows, one column per (metric, n), cells from `cell(row)`."""
    several_metrics = len({metric for metric, _ in columns}) > 1
    names = {key: ", ".join(part for part in (
        METRIC_TITLES.get(key[0], key[0]) if several_metrics else "", _n_text(key[1])) if part)
        or METRIC_TITLES.get(key[0], key[0]) for key in columns}
    rows: dict[str, dict[str, str]] = {}
    for _, row in of_structure.iterrows():
        key = (row["metric"], None if pd.isna(row["n"]) else int(row["n"]))
        rows.setdefault(row["strategy"], {})[names[key]] = cell(row)
    frame = pd.DataFrame([{"strategy": strategy, **{names[key]: cells.get(names[key], "-")
                                                    for key in columns}}
                          for strategy, cells in rows.items()])
    return markdown_table(frame, as_text=str, escape=None,
                          align=["left"] + ["right"] * len(columns), padded=True, end="")


def to_markdown(table: pd.DataFrame, reference: str | None, test: str = "ttest",
                alpha: float = 0.05, digits: int = 3) -> str:
    """Compact tables as in the papers: per structure, a row per strategy and a column per
    metric and n (one table per metric when that would be more than MAX_COLUMNS columns); then
    the p-values against the reference in the same layout."""
    test_name = {"ttest": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}[test]
    p_column = "p_ttest" if test == "ttest" else "p_wilcoxon"
    metrics = list(dict.fromkeys(table["metric"]))
    ns = list(dict.fromkeys(None if pd.isna(n) else int(n) for n in table["n"]))
    all_columns = [(metric, n) for metric in metrics for n in ns]
    blocks = [[(None, all_columns)]] if len(all_columns) <= MAX_COLUMNS else \
        [[(metric, [(metric, n) for n in ns])] for metric in metrics]
    parts = []
    for structure, of_structure in table.groupby("structure", sort=False):
        for block in blocks:
            for metric, columns in block:
                rows = of_structure if metric is None else \
                    of_structure[of_structure["metric"] == metric]
                title = structure if metric is None else \
                    f"{structure}: {METRIC_TITLES.get(metric, metric)}"
                parts.append(f"### {title}\n\n" + _compact(
                    rows, columns, lambda row: _cell(row, digits)))
                if reference is not None:
                    tested = rows[rows["strategy"] != reference]
                    if len(tested):
                        parts.append(f"p vs {reference} ({test_name}):\n\n" + _compact(
                            tested, columns, lambda row: p_text(row[p_column])))
    excluded = table[table["n_excluded"] > 0]
    if len(excluded):
        counts = [f"{r['strategy']}{'' if pd.isna(r['n']) else f' n={r.n}'} "
                  f"{r['structure']}: {r['n_excluded']} "
                  f"({METRIC_TITLES.get(r['metric'], r['metric'])})"
                  for _, r in excluded.iterrows()]
        parts.append("Left out (undefined: an empty mask), values over cases x seeds: "
                     + "; ".join(counts))
    note = "mean ± std over the test cases (each case averaged over seeds)"
    if reference is not None:
        note += f"; * p < {alpha:g} vs {reference} at the same n ({test_name}, paired by case)"
    return note + "\n\n" + "\n\n".join(parts) + "\n"


def write_comparison(output_folder: str, table: pd.DataFrame, markdown: str) -> list[str]:
    """Write comparison.csv and comparison.md atomically; returns their paths."""
    paths = [os.path.join(output_folder, name) for name in (COMPARISON_CSV, COMPARISON_MD)]
    atomic_write_bytes(paths[0], table.to_csv(index=False).encode())
    atomic_write_bytes(paths[1], markdown.encode())
    return paths
