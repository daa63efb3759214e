"""Evaluation of real predictions: `evaluate` on what nnUNetv2_predict wrote for every
strategy, `compare` across strategies, and `generalize` (real prediction with trained models
on a second, unseen test set)."""

from __future__ import annotations

import csv
import json
import os

import pytest

from nnunet_transfer.data.synthetic import LOW_QUALITY_DOMAIN, write_synthetic_dataset

COMPARED = ("Scratch", "FineTune", "FrozenEncoder")


def read_rows(path: str) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def evaluations(workspace, strategy_runs, target) -> dict:
    labels = os.path.join(workspace.raw, target["name"], "labelsTs")
    folders = {}
    for name in COMPARED:
        out = os.path.join(workspace.root, "evaluation", name)
        workspace.run("nnunet-transfer", "evaluate", strategy_runs[name]["predictions"], labels,
                      "-o", out, "--dataset-json",
                      os.path.join(workspace.raw, target["name"], "dataset.json"))
        folders[name] = out
    return folders


def test_evaluate_scores_every_case_and_label(evaluations, workspace, target):
    cases = sorted(os.listdir(os.path.join(workspace.raw, target["name"], "labelsTs")))
    for folder in evaluations.values():
        rows = read_rows(os.path.join(folder, "evaluation_per_case.csv"))
        assert len(rows) == len(cases) * (target["labels"] - 1)  # foreground labels
        for row in rows:
            assert 0 <= float(row["dsc"]) <= 1 and 0 <= float(row["iou"]) <= float(row["dsc"])
        summary = json.load(open(os.path.join(folder, "evaluation_summary.json")))
        assert summary  # written, parseable, no NaN (json would fail on a bare NaN)


def test_compare_tables_every_strategy(evaluations, workspace):
    out = os.path.join(workspace.root, "comparison")
    workspace.run("nnunet-transfer", "compare", *[f"{n}={p}" for n, p in evaluations.items()],
                  "-o", out, "--reference", "Scratch")
    table = open(os.path.join(out, "comparison.md")).read()
    for name in COMPARED:
        assert name in table
    rows = read_rows(os.path.join(out, "comparison.csv"))
    assert {r["strategy"] for r in rows} == set(COMPARED)


def test_generalize_predicts_an_unseen_test_set(workspace, strategy_runs, target):
    unseen = write_synthetic_dataset(os.path.join(workspace.root, "unseen"), 806, "Unseen",
                                     num_training=2, num_test=2, domain=LOW_QUALITY_DOMAIN,
                                     with_core=True, seed=806)
    out = os.path.join(workspace.root, "generalization")
    models = [f"{name}={os.path.dirname(strategy_runs[name]['folder'])}"
              for name in ("Scratch", "FineTune")]
    workspace.run("nnunet-transfer", "generalize", "--models", *models,
                  "-i", os.path.join(unseen, "imagesTs"),
                  "--references", os.path.join(unseen, "labelsTs"), "-o", out,
                  "-device", "cpu", "--disable-tta", "--reference", "Scratch")
    rows = read_rows(os.path.join(out, "comparison.csv"))
    assert {r["strategy"] for r in rows} == {"Scratch", "FineTune"}
    assert "FineTune" in open(os.path.join(out, "comparison.md")).read()
