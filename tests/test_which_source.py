"""The report's "Which source" section, driven without training: a study of three sources whose
runs' evaluations are written by hand with known means, and a `rank-sources` CSV that orders
the sources a, b, c. Per strategy the fine-tuned order is made to agree fully (FineTune), in
part (FrozenEncoder) or not at all (HeadOnly), so the tau values, their p, the verdicts, the
caveat of three sources, the best-against-others comparison and the Scratch-baseline sentences
are checked against numbers computed here from the same files."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from nnunet_transfer.analysis.source_figure import source_score_figure
from nnunet_transfer.study.grid import (TEST, StudyLayout, expand, ranked_sources,
                                        ranks_sources, transferred_plans)
from nnunet_transfer.study.results import write_study_report
from nnunet_transfer.study.source_choice import (
    ranking_caveat, scratch_baselines, smallest_p, tau_values, verdict)
from nnunet_transfer.study.state import StudyState
from nnunet_transfer.study.study_file import load_study

from support.checkpoint_files import write_nnssl_encoder
from support.script_modules import inspect_report
from support.study_files import write_study_text

POOL = 6
STUDY = """\
    study: sources
    datasets:
      a: {id: 801, name: SrcA, synthetic: {cases: 6}}
      b: {id: 803, name: SrcB, synthetic: {cases: 6}}
      c: {id: 804, name: SrcC, synthetic: {cases: 6}}
      tgt: {id: 802, name: Tgt, synthetic: {cases: 9, low_quality: true}}
    source: [a, b, c]
    target: tgt
    test_cases: 3
    sizes: [2]
    seeds: [0, 1]
    strategies: [Scratch, FineTune, FrozenEncoder, HeadOnly]
    architectures: [unet]
    analyses: [convergence]
"""
# mean test DSC per strategy and source; the ranking is a > b > c
MEANS = {"Scratch": {"a": 0.55, "b": 0.60, "c": 0.58},
         "FineTune": {"a": 0.80, "b": 0.70, "c": 0.60},        # the same order: tau = 1
         "FrozenEncoder": {"a": 0.70, "b": 0.50, "c": 0.60},   # one pair swapped: tau = 1/3
         "HeadOnly": {"a": 0.50, "b": 0.60, "c": 0.70}}        # reversed: tau = -1
CASE_OFFSET = [-0.05, 0.0, 0.05]                               # sums to 0
SOURCE_JITTER = {"a": [0.0, 0.0, 0.0], "b": [0.01, -0.02, 0.01], "c": [-0.02, 0.01, 0.01]}
SEED_OFFSET = {0: -0.01, 1: 0.01}
RANKING = pd.DataFrame({"source": ["b", "a", "c"], "rank": [2, 1, 3],
                        "score": [0.4, 0.9, -0.3], "compatibility": [1.0, 1.0, 0.5]})


def case_values(strategy: str, source: str) -> np.ndarray:
    """The per-case DSC (mean over seeds) of a run group: MEANS + case offset + jitter."""
    return MEANS[strategy][source] + np.array(CASE_OFFSET) + np.array(SOURCE_JITTER[source])


def evaluated_study(tmp_path, ranking: pd.DataFrame | None = RANKING, text: str = STUDY):
    """The spec, with every run's evaluation written, its prediction recorded as done and the
    ranking CSV written (unless None); returns (spec, layout)."""
    spec = load_study(write_study_text(tmp_path, text))
    layout = StudyLayout(spec)
    _, runs = expand(spec, POOL)
    jobs = {}
    for run in runs:
        values = case_values(run.strategy.name, run.source) + SEED_OFFSET[run.seed]
        folder = layout.evaluation(run, TEST)
        os.makedirs(folder)
        pd.DataFrame({"case": [f"case{k}" for k in range(3)], "structure": "tumour",
                      "dsc": values}).to_csv(os.path.join(folder, "evaluation_per_case.csv"),
                                             index=False)
        jobs[run.predict_key] = {"state": "succeeded", "attempts": 1}
    with open(layout.state_file, "w") as f:
        json.dump({"jobs": jobs}, f)
    if ranking is not None:
        os.makedirs(os.path.dirname(layout.ranking_csv))
        ranking.to_csv(layout.ranking_csv, index=False)
    write_study_report(spec, StudyState(layout.state_file), POOL)
    return spec, layout


def report_text(layout) -> str:
    with open(layout.path("report.md"), encoding="utf-8") as f:
        return f.read()


@pytest.fixture
def study(tmp_path):
    return evaluated_study(tmp_path)


def test_tau_per_strategy_against_the_ranking(study):
    spec, layout = study
    agreement = pd.read_csv(layout.path("tables", TEST, "ranking_agreement.csv"))
    rows = agreement.set_index("strategy")
    assert "Scratch" not in rows.index      # it takes nothing from the sources but plans
    ranks = RANKING.set_index("source")["rank"]
    for strategy in ("FineTune", "FrozenEncoder", "HeadOnly"):
        means = [case_values(strategy, s).mean() for s in "abc"]
        expected = stats.kendalltau(-ranks[list("abc")].to_numpy(), means)
        row = rows.loc[strategy]
        assert row["n"] == 2 and row["sources"] == 3
        assert row["tau"] == pytest.approx(expected.statistic)
        assert row["p"] == pytest.approx(expected.pvalue)
        assert row["ranked_first"] == "a"
        assert row["fine_tuned_best"] == max(MEANS[strategy], key=MEANS[strategy].get)
    assert rows.loc["FineTune", "tau"] == pytest.approx(1)
    assert rows.loc["FineTune", "p"] == pytest.approx(1 / 3)   # 2 / 3!: never below 0.05
    assert rows.loc["FrozenEncoder", "tau"] == pytest.approx(1 / 3)
    assert rows.loc["HeadOnly", "tau"] == pytest.approx(-1)
    assert list(rows["verdict"]) == ["held", "held partly", "did not hold"]


def test_the_findings_say_whether_the_ranking_held(study):
    _, layout = study
    text = report_text(layout)
    assert "FineTune, n = 2: the ranking held (Kendall tau = +1.00, p = 0.33, 3 sources); " \
           "the source ranked first, a, was the best after fine-tuning." in text
    assert "FrozenEncoder, n = 2: the ranking held partly (Kendall tau = +0.33, p = 1, " \
           "3 sources)" in text
    assert "HeadOnly, n = 2: the ranking did not hold (Kendall tau = -1.00, p = 0.33, " \
           "3 sources); the source ranked first, a, was not the best after fine-tuning " \
           "(c was)." in text
    assert "With 3 sources Kendall tau can only be -1, -1/3, 1/3, 1" in text
    assert "no ranking of 3 sources can be significant at 0.05" in text
    assert "![Figure 2.](figures/which_source.png)" in text or \
        "(figures/which_source.png)" in text
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert any("Which source" in line for line in sections)


def test_the_caveat_follows_the_number_of_sources():
    assert [str(v) for v in tau_values(3)] == ["-1", "-1/3", "1/3", "1"]
    assert [str(v) for v in tau_values(2)] == ["-1", "1"]
    assert smallest_p(3) == pytest.approx(stats.kendalltau([1, 2, 3], [1, 2, 3]).pvalue)
    assert smallest_p(4) == pytest.approx(stats.kendalltau([1, 2, 3, 4], [1, 2, 3, 4]).pvalue)
    assert "no ranking of 4 sources can be significant at 0.05" in ranking_caveat(4)  # 2/4!
    assert "can be significant" not in ranking_caveat(5)      # 2 / 5! = 0.017
    assert "-1 to 1 in steps of 1/5" in ranking_caveat(5)            # 2 / C(5, 2)
    assert verdict(0.6, 0.01) == "held" and verdict(0.6, 0.2) == "held partly"
    assert verdict(0.0, 1.0) == "did not hold" and verdict(float("nan"), 1.0) == "no test"


def test_sources_compared_as_strategies(study):
    """Per strategy: the best source, each other source's difference to it, and the paired
    t-test by case the report uses for strategies."""
    _, layout = study
    comparison = pd.read_csv(layout.path("tables", TEST, "source_comparison.csv"))
    text = report_text(layout)
    for strategy, means in MEANS.items():
        rows = comparison[comparison["strategy"] == strategy].set_index("source")
        best = max(means, key=means.get)
        assert set(rows["best"]) == {best}
        for source in "abc":
            row = rows.loc[source]
            assert row["mean"] == pytest.approx(case_values(strategy, source).mean())
            if source == best:
                assert row["difference"] == 0 and np.isnan(row["p_ttest"])
                continue
            expected_p = stats.ttest_rel(case_values(strategy, source),
                                         case_values(strategy, best)).pvalue
            assert row["difference"] == pytest.approx(means[source] - means[best])
            assert row["p_ttest"] == pytest.approx(expected_p)
            assert row["n_pairs"] == 3
    fine = comparison[(comparison["strategy"] == "FineTune") & (comparison["source"] == "c")]
    p = fine["p_ttest"].iloc[0]
    words = "significant" if p < 0.05 else "not significant"
    assert (f"FineTune, n = 2: source a gives the highest DSC, 0.800; b 0.700 (-0.100; p = "
            f"{p_short(comparison, 'FineTune', 'b')}") in text
    assert f"c 0.600 (-0.200; p = {p:.2g}, {words} at 0.05)" in text


def p_short(comparison, strategy, source) -> str:
    row = comparison[(comparison["strategy"] == strategy) & (comparison["source"] == source)]
    return f"{row['p_ttest'].iloc[0]:.2g}"


def test_each_source_names_its_scratch_baseline(study):
    spec, layout = study
    text = report_text(layout)
    assert "each source has its own Scratch baseline" in text
    plans = {source: transferred_plans(spec, source) for source in spec.sources}
    assert len(set(plans.values())) == 3
    for source, identifier in plans.items():
        assert (f"source {source}: its runs are compared with the Scratch runs trained under "
                f"the plans {identifier}") in text
    assert scratch_baselines({"a": "P_from1", "b": "P_from1"}) is None


def test_without_a_ranking_the_section_says_so(tmp_path):
    _, layout = evaluated_study(tmp_path, ranking=None)
    text = report_text(layout)
    assert "No ranking of the sources to test: `ranking/sources.csv` is missing: " \
           "rank-sources has not run for this study, or failed." in text
    assert "Kendall tau" not in text and not os.path.exists(
        layout.path("figures", "which_source.png"))
    assert "source a gives the highest DSC" in text    # the comparison needs no ranking


def test_an_unreadable_ranking_is_named(tmp_path):
    _, layout = evaluated_study(tmp_path, ranking=RANKING.drop(columns="rank"))
    assert "`ranking/sources.csv` has no column rank." in report_text(layout)


def test_one_source_has_no_such_section(tmp_path):
    one = STUDY.replace("source: [a, b, c]", "source: a")
    _, layout = evaluated_study(tmp_path, text=one)
    text = report_text(layout)
    assert "Which source" not in text and "Scratch baseline" not in text


def test_the_figure_keeps_the_reports_layout(study):
    _, layout = study
    with Image.open(layout.path("figures", "which_source.png")) as image:
        assert 1 / 3 <= image.width / image.height <= 3


@pytest.mark.parametrize("architectures, ns", [(["unet"], [5]), (["unet", "karimi"], [2, 5, 9])])
def test_the_figure_has_a_panel_per_n_and_its_legend_below(architectures, ns):
    sources = [f"s{k}" for k in range(7)]
    points = pd.DataFrame([{"architecture": a, "strategy": strategy, "n": n, "source": s,
                            "score": k, "dsc": 0.5 + 0.01 * k}
                           for a in architectures for n in ns for k, s in enumerate(sources)
                           for strategy in ("FineTune", "HeadOnly", "LoRA")])
    figure = source_score_figure(points, sources)
    panels = [axis for axis in figure.axes if axis.get_visible()]
    assert len(panels) == len(architectures) * len(ns)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    with Image.open(buffer) as image:
        assert 1 / 3 <= image.width / image.height <= 3
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    [legend] = figure.legends
    assert len(legend.get_texts()) == 3 + len(sources)
    for axis in panels:
        assert not legend.get_window_extent(renderer).overlaps(axis.get_tightbbox(renderer))


def test_a_source_missing_from_the_ranking_is_named(tmp_path):
    _, layout = evaluated_study(tmp_path, ranking=RANKING[RANKING["source"] != "c"])
    text = report_text(layout)
    assert "Not in the ranking, so left out of tau: c." in text
    agreement = pd.read_csv(layout.path("tables", TEST, "ranking_agreement.csv"))
    assert set(agreement["sources"]) == {2}
    assert "With 2 sources Kendall tau can only be -1, 1" in text


@pytest.mark.usefixtures("chromium")
def test_the_section_reads_in_the_browser(study, tmp_path):
    _, layout = study
    found = inspect_report.inspect(layout.path("report.html"), str(tmp_path / "screens"))
    assert "which-source" in [s["id"] for s in found["sections"]]
    assert inspect_report.layout_problems(found) == []
    assert found["broken_images"] == 0 and found["too_wide"] == []


def _with_nnssl_source(folder, sources: str) -> str:
    """STUDY with source c an nnssl encoder (HeadOnly, which keeps its decoder, left out)."""
    folder.mkdir()
    write_nnssl_encoder(str(folder / "encoder.pth"))
    return STUDY.replace("      c: {id: 804, name: SrcC, synthetic: {cases: 6}}\n", "").replace(
        "    source: [a, b, c]\n", "    models:\n      c: {path: encoder.pth}\n"
        f"    source: {sources}\n").replace(", HeadOnly]", "]")


def test_an_nnssl_source_is_named_as_not_ranked_with_why(tmp_path):
    """Source c an nnssl encoder: the ranking scores a and b only, and the section says that c
    was left out and why (not as missing from the CSV); with a and c only, nothing is ranked,
    and the section says why."""
    spec, layout = evaluated_study(tmp_path / "abc", ranking=RANKING[RANKING["source"] != "c"],
                                   text=_with_nnssl_source(tmp_path / "abc", "[a, b, c]"))
    assert ranked_sources(spec) == ("a", "b")
    report = report_text(layout)
    why = "c (an nnssl encoder: rank-sources scores a source's decoder features"
    assert f"Not ranked by the study, so left out of tau: {why}" in report
    assert "Not in the ranking" not in report
    agreement = pd.read_csv(layout.path("tables", TEST, "ranking_agreement.csv"))
    assert set(agreement["sources"]) == {2}

    spec, layout = evaluated_study(tmp_path / "ac", ranking=None,
                                   text=_with_nnssl_source(tmp_path / "ac", "[a, c]"))
    assert not ranks_sources(spec)
    assert ("No ranking of the sources to test: `rank-sources` can score fewer than two of "
            f"them. Not ranked by the study, so left out of tau: {why}") in report_text(layout)
