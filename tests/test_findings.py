"""The report's findings agree with the tables they come from.

Hand-made comparison, cost and analysis CSVs whose answers are known: transfer helps at one n
and does not at another; a strategy converges sooner, another later; the filter norms change
most in the head; reuse is largest in the first layer. Each sentence is checked against the
numbers of its CSV (read back from the file, as the report reads it).
"""

from __future__ import annotations

import pandas as pd
import pytest

from nnunet_transfer.study.findings import (
    accuracy_findings, convergence_findings, findings_markdown, p_phrase, reuse_findings,
    weight_findings)


def comparison_rows():
    rows = []
    # n = 5: FineTune helps (significantly), FrozenRandomEncoder is worse than Scratch
    # n = 20: transfer does not help: Scratch is the best
    for n, values in ((5, {"Scratch": (0.600, None), "FineTune": (0.750, 0.004),
                           "FrozenRandomEncoder": (0.500, 0.030), "HeadOnly": (0.640, 0.200)}),
                      (20, {"Scratch": (0.820, None), "FineTune": (0.810, 0.600),
                            "FrozenRandomEncoder": (0.700, 0.010), "HeadOnly": (0.790, 0.300)})):
        for strategy, (mean, p) in values.items():
            rows.append({"structure": "tumour", "metric": "dsc", "strategy": strategy, "n": n,
                         "mean": mean, "std": 0.05, "n_cases": 6, "n_seeds": 2,
                         "seed_std": 0.01, "n_excluded": 0,
                         "reference": None if p is None else "Scratch", "n_pairs": 6,
                         "p_ttest": p, "p_wilcoxon": p,
                         "significant": p is not None and p < 0.05})
            # a distance metric, where lower is better, must not become the headline
            rows.append({**rows[-1], "metric": "hd95_mm", "mean": 10 - mean})
    return rows


@pytest.fixture
def comparison(tmp_path):
    path = tmp_path / "comparison.csv"
    pd.DataFrame(comparison_rows()).to_csv(path, index=False)
    return pd.read_csv(path)


def test_accuracy_findings_follow_the_table(comparison):
    findings = accuracy_findings(comparison, "Scratch", "tables/test/comparison.csv")
    by_n = {n: [f.text for f in findings if f.text.startswith(f"n = {n},")] for n in (5, 20)}
    for n, texts in by_n.items():
        rows = comparison[(comparison["n"] == n) & (comparison["metric"] == "dsc")]
        ref = rows[rows["strategy"] == "Scratch"].iloc[0]
        others = rows[rows["strategy"] != "Scratch"].sort_values("mean", ascending=False)
        best = others.iloc[0]
        headline = texts[0]
        assert f"{best['mean']:.3f}" in headline and f"{ref['mean']:.3f}" in headline
        assert f"{best['mean'] - ref['mean']:+.3f}" in headline
        assert p_phrase(best["p_ttest"]) in headline
        helps = best["mean"] > ref["mean"]
        assert ("no strategy beats Scratch" in headline) == (not helps)
        assert ("significant at" in headline and "not significant" not in headline) == \
            (helps and best["p_ttest"] < 0.05)
        better = others[(others["p_ttest"] < 0.05) & (others["mean"] > ref["mean"])]
        worse = others[(others["p_ttest"] < 0.05) & (others["mean"] < ref["mean"])]
        assert f"better than Scratch: {', '.join(better['strategy']) or 'none'};" in headline
        assert f"worse: {', '.join(worse['strategy']) or 'none'} " in headline
        control = rows[rows["strategy"] == "FrozenRandomEncoder"].iloc[0]
        gap = [t for t in texts if "FrozenRandomEncoder (a random encoder" in t]
        assert len(gap) == 1
        assert f"{abs(control['mean'] - ref['mean']):.3f} below Scratch" in gap[0]
    assert all(f.figure == "accuracy" and f.source == "tables/test/comparison.csv"
               for f in findings)
    # the case where transfer does not help is said so
    assert "no strategy beats Scratch" in by_n[20][0] and "FineTune" in by_n[20][0]
    assert by_n[5][0].startswith("n = 5, tumour: FineTune has the highest DSC")


def test_convergence_findings_say_sooner_and_later(tmp_path):
    rows = [{"architecture": "unet", "n": 5, "strategy": s, "seed": seed,
             "convergence_iterations": it + 10 * seed, "convergence_time_s": t + seed}
            for s, it, t in (("Scratch", 300, 90.0), ("FineTune", 100, 30.0),
                             ("HeadOnly", 400, 80.0)) for seed in (0, 1)]
    path = tmp_path / "training_cost.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    costs = pd.read_csv(path)
    [finding] = convergence_findings(costs, "Scratch", "tables/training_cost.csv")
    means = costs.groupby("strategy")[["convergence_iterations", "convergence_time_s"]].mean()
    text = finding.text
    assert f"Scratch converged after {means.loc['Scratch', 'convergence_iterations']:.0f} " in text
    d_fine = means.loc["Scratch"] - means.loc["FineTune"]
    d_head = means.loc["Scratch"] - means.loc["HeadOnly"]
    assert f"{d_fine['convergence_iterations']:.0f} iterations sooner" in text
    assert f"{-d_head['convergence_iterations']:.0f} iterations later" in text
    assert f"-{d_fine['convergence_time_s']:.1f} s" in text and finding.figure == "convergence"


def test_weight_and_reuse_findings(tmp_path):
    weights = pd.DataFrame(
        [{"run": f"FineTune_fold{k}", "strategy": "FineTune", "layer": f"l{j}", "part": part,
          "weight_change": 0.1, "filter_norm_change_mean": value + 0.001 * k}
         for k in (0, 1) for j, (part, value) in enumerate(
             (("encoder", 0.01), ("encoder", 0.02), ("decoder", 0.05), ("head", 0.30)))])
    [finding] = weight_findings(weights, "analysis/weights.csv")
    medians = weights.groupby("part")["filter_norm_change_mean"].median()
    for part, value in medians.items():
        assert f"{part} {100 * value:.3g} %" in finding.text
    assert finding.text.endswith("largest in the head.")

    summary = pd.DataFrame([{"layer": layer, "measure": "svcca", "reuse": reuse,
                             "p_welch": p} for layer, reuse, p in
                            (("conv1", 0.40, 0.001), ("conv2", 0.05, 0.5),
                             ("head", -0.20, 0.04))]
                           + [{"layer": "conv1", "measure": "cka", "reuse": 0.9,
                               "p_welch": 0.1}])
    [reuse] = reuse_findings(summary, "analysis/reuse_summary.csv")
    assert "largest in conv1 (+0.400; p = 0.001)" in reuse.text
    assert "smallest in head (-0.200)" in reuse.text
    negative = summary.assign(reuse=summary["reuse"] - 1)
    assert "No layer" in reuse_findings(negative, "x.csv")[0].text


def test_findings_link_their_figures(comparison):
    findings = accuracy_findings(comparison, "Scratch", "comparison.csv")
    markdown = findings_markdown(findings, {"accuracy": "s2-accuracy"})
    assert markdown.count("([figure](#s2-accuracy))") == len(findings)
    assert markdown.count("\n") == len(findings)


def test_p_values_read_as_sentences(comparison):
    """A p below the printed precision reads "p < 0.0001", never "p = < 0.0001"; where there is
    no p-value the sentence leaves it out instead of writing "p = -"."""
    assert p_phrase(0.0123) == "p = 0.012" and p_phrase(3e-7) == "p < 0.0001"
    assert p_phrase(float("nan")) == "" and p_phrase(None) == ""
    tiny = comparison.assign(p_ttest=comparison["p_ttest"].where(comparison["p_ttest"].isna(),
                                                                 1e-9))
    texts = [f.text for f in accuracy_findings(tiny, "Scratch", "comparison.csv")]
    assert any("p < 0.0001, significant at 0.05" in t for t in texts)
    assert not any("p = <" in t or "p = -" in t for t in texts)
    summary = pd.DataFrame([{"layer": "conv1", "measure": "svcca", "reuse": 0.4,
                             "p_welch": float("nan")},
                            {"layer": "head", "measure": "svcca", "reuse": 0.1,
                             "p_welch": 2e-6}])
    [reuse] = reuse_findings(summary, "reuse_summary.csv")
    assert "largest in conv1 (+0.400) and" in reuse.text and "p =" not in reuse.text
    [strong] = reuse_findings(summary.assign(p_welch=[2e-6, 0.5]), "reuse_summary.csv")
    assert "largest in conv1 (+0.400; p < 0.0001)" in strong.text
