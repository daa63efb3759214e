"""The arithmetic and plumbing of the `analyze` commands that needs no network: Welch's test
against the textbook formula, summaries, the feature-reuse table, notes, RUN arguments, the
choice of the cases blocks come from, and the output writer."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nnunet_transfer.analysis.measure import NULL, parse_measures
from nnunet_transfer.analysis.outputs import Notes, Output, summary_table, write_output
from nnunet_transfer.analysis.reuse import reuse_table
from nnunet_transfer.analysis.runs import (
    AnalysedRun,
    DataSpec,
    block_cases,
    parse_run,
    parse_runs,
    slug,
)
from nnunet_transfer.analysis.summary import Summary, p_cell, summarize, welch_p
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.bookkeeping import RunRecord


def textbook_welch_p(a, b) -> float:
    """Welch's t and Welch-Satterthwaite degrees of freedom written out."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return float(2 * stats.t.sf(abs(t), df))


def test_welch_p_is_the_textbook_test():
    a = [0.91, 0.88, 0.95, 0.90, 0.93]
    b = [0.72, 0.80, 0.69]
    assert welch_p(a, b) == pytest.approx(textbook_welch_p(a, b), rel=1e-12)
    assert welch_p(b, a) == pytest.approx(welch_p(a, b), rel=1e-12)
    assert welch_p(a, a) == pytest.approx(1.0)


def test_welch_p_edge_cases():
    assert math.isnan(welch_p([0.5], [0.1, 0.2]))             # one value: no variance
    assert math.isnan(welch_p([0.5, math.nan], [0.1, 0.2]))   # NaN left out
    assert welch_p([1.0, 1.0 - 1e-16], [1.0, 1.0]) == 1.0     # equal constants (rounding)
    assert welch_p([1.0, 1.0], [0.5, 0.5]) == 0.0             # different constants


def test_summaries_and_cells():
    s = summarize([0.2, 0.4, math.nan, 0.6])
    assert (s.mean, s.n) == (pytest.approx(0.4), 3)
    assert s.std == pytest.approx(0.2)
    assert s.cell() == "0.400 ± 0.200 (n=3)"
    assert summarize([0.7]).cell() == "0.700 (n=1)"
    assert summarize([]).cell() == "-"
    assert p_cell(0.01, 0.05) == "0.01*" and p_cell(0.2, 0.05) == "0.2"
    assert p_cell(math.nan, 0.05) == "-"


def test_reuse_table_arithmetic():
    transfer = {"encoder-1": [0.95, 0.97, 0.99], "decoder-1": [0.6, 0.7, 0.8]}
    scratch = {"encoder-1": [0.5, 0.6], "decoder-1": [0.55, 0.75]}
    null = {"encoder-1": [0.1, 0.12, 0.14], "decoder-1": [0.2, 0.2, 0.2]}
    rows = []
    for layer in transfer:
        rows += [{"layer": layer, "role": "transfer", "pwcca": v} for v in transfer[layer]]
        rows += [{"layer": layer, "role": "scratch", "pwcca": v} for v in scratch[layer]]
        rows += [{"layer": layer, "role": NULL, "comparison": NULL, "pwcca": v}
                 for v in null[layer]]
    table = {e["layer"]: e for e in reuse_table(rows, ["encoder-1", "decoder-1"], "pwcca", 0.05)}
    for layer in transfer:
        entry = table[layer]
        assert entry["transfer_mean"] == pytest.approx(np.mean(transfer[layer]))
        assert entry["transfer_std"] == pytest.approx(np.std(transfer[layer], ddof=1))
        assert entry["scratch_mean"] == pytest.approx(np.mean(scratch[layer]))
        assert entry["reuse"] == pytest.approx(np.mean(transfer[layer]) - np.mean(scratch[layer]))
        assert entry["p_welch"] == pytest.approx(textbook_welch_p(transfer[layer],
                                                                  scratch[layer]))
        assert entry["null_mean"] == pytest.approx(np.mean(null[layer]))
        assert (entry["transfer_n"], entry["scratch_n"], entry["null_n"]) == (3, 2, 3)
    assert table["encoder-1"]["significant"] is (table["encoder-1"]["p_welch"] < 0.05)


def test_notes_count_repeats_and_keep_the_context():
    notes = Notes()
    notes.add("first")
    with notes.warnings_as_notes():
        warnings.warn("low ratio")
    for _ in range(3):
        with notes.warnings_as_notes("layer encoder-3"):
            warnings.warn("low ratio")
    notes.add("first")
    assert notes.lines() == ["first (2 times)", "layer encoder-3: low ratio (3 times)"]


def test_measures_option():
    assert parse_measures("cka, PWCCA") == ("cka", "pwcca")
    with pytest.raises(UserError, match="subset of pwcca,svcca,cka"):
        parse_measures("pwcca,rsim")


def make_run(root, name: str, settings: dict | None) -> str:
    folder = os.path.join(root, f"nnUNetTrainer_{name}__Plans__3d_fullres", "fold_0")
    record = RunRecord(folder)
    os.makedirs(record.snapshot_folder)
    if settings is not None:
        record.write_settings(settings)
    return folder


def test_run_arguments(tmp_path):
    with_settings = make_run(tmp_path / "a", "FineTune", {"strategy": "FineTune", "fold": 3})
    without = make_run(tmp_path / "b", "Scratch", None)
    assert parse_run(with_settings).label == "FineTune_fold3"
    assert parse_run(without).label == "Scratch_fold0"
    assert parse_run(f"mine={without}").label == "mine"
    with pytest.raises(UserError, match="does not exist"):
        parse_run(str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="not a run of nnunet-transfer's trainers"):
        parse_run(str(tmp_path))
    with pytest.raises(UserError, match="give one of those fold folders"):
        parse_run(os.path.dirname(without))
    other = make_run(tmp_path / "c", "FineTune", {"strategy": "FineTune", "fold": 3,
                                                   "configuration": "3d_fullres_karimi"})
    first, second = parse_runs([with_settings, other])
    assert (first.label, second.label) == ("FineTune_fold3", "FineTune_3d_fullres_karimi_fold3")
    with pytest.raises(UserError, match="labelled 'x'"):
        parse_runs([f"x={with_settings}", f"x={without}"])
    with pytest.raises(UserError, match="given twice"):
        parse_runs([with_settings, f"y={with_settings}"])
    with pytest.raises(UserError, match="reserved"):
        parse_runs([f"null-1={without}"])
    assert slug("FineTune:5/0 x") == "FineTune_5_0_x"


def test_block_cases_prefer_given_then_test_then_shared_validation_then_all(tmp_path):
    dataset = tmp_path / "Dataset502_X"
    data = dataset / "Plans_3d_fullres"
    data.mkdir(parents=True)
    spec = DataSpec("Dataset502_X", "Plans", "3d_fullres", "PlainConvUNet", str(data), (8, 8, 8))
    runs = [AnalysedRun("a", "f0", {"fold": 0}), AnalysedRun("b", "f1", {"fold": 1})]
    cases, text = block_cases(runs, spec, None)
    assert cases is None and "all preprocessed cases" in text
    splits = [{"train": ["c1", "c2"], "val": ["c3", "c4"]},
              {"train": ["c1", "c4"], "val": ["c2", "c3"]}]
    (dataset / "splits_final.json").write_text(json.dumps(splits))
    cases, text = block_cases(runs, spec, None)
    assert cases == ["c3"] and "validation case(s) of fold(s) 0, 1" in text
    (dataset / "test_cases.json").write_text(json.dumps({"test": ["t2", "t1"]}))
    cases, text = block_cases(runs, spec, None)
    assert cases == ["t1", "t2"] and "held-out test case(s)" in text
    cases, text = block_cases(runs, spec, ("c9",))
    assert cases == ["c9"] and "--cases" in text


def test_output_is_written_atomically_with_notes_on_stderr(tmp_path, capsys):
    from nnunet_transfer.analysis.figures import bars_figure

    notes = Notes()
    notes.add("something to know")
    figure = bars_figure({"a": {"l1": Summary(0.5, 0.1, 3)}}, ["l1"],
                         {"l1": Summary(0.1, 0.01, 3)}, "value", "title")
    output = Output("Title", tables={"": pd.DataFrame([{"x": 1}]),
                                     "summary": pd.DataFrame([{"y": 2}])},
                    figures={"": figure}, sections=[summary_table([[1, "x|y"]], ["a", "b"])])
    paths = write_output("kind", str(tmp_path / "out"), output, notes, "nnunet-transfer x")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["kind.csv", "kind.md", "kind.png", "kind_summary.csv"]
    assert sorted(os.listdir(tmp_path / "out")) == names  # no temporary file left
    text = (tmp_path / "out" / "kind.md").read_text()
    assert "- something to know" in text and "`nnunet-transfer x`" in text
    assert "| 1 | x\\|y |" in text
    assert "nnunet-transfer: warning: something to know" in capsys.readouterr().err
    with open(tmp_path / "out" / "kind.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
