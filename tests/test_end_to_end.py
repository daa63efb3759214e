"""Every strategy through the real nnUNetv2_train and nnUNetv2_predict, checked from the
checkpoints it leaves: frozen parts bit-identical to epoch 0, trainable parts changed,
pretrained parts equal to the source at epoch 0."""

from __future__ import annotations

import csv
import hashlib
import json
import os

import pytest
import torch

from nnunet_transfer.training.strategies import ONE_PHASE_STRATEGIES, Pretrained

from support.run_checks import (assert_frozen_identical_and_trainable_changed,
                                assert_predictions_match_images, assert_starts_from_source,
                                snapshot)

@pytest.fixture(scope="module")
def runs(strategy_runs):
    return strategy_runs


@pytest.mark.parametrize("strategy", ONE_PHASE_STRATEGIES, ids=lambda s: s.name)
def test_frozen_parts_identical_and_trainable_parts_changed(runs, strategy):
    assert_frozen_identical_and_trainable_changed(runs[strategy.name]["folder"],
                                                  strategy.frozen_parts)


@pytest.mark.parametrize("strategy", [s for s in ONE_PHASE_STRATEGIES
                                      if s.pretrained is Pretrained.REQUIRED],
                         ids=lambda s: s.name)
def test_pretrained_run_starts_from_source_weights(runs, source, strategy):
    folder = runs[strategy.name]["folder"]
    head_transferred = runs[strategy.name]["target"]["labels"] == 2  # the source's labels
    assert_starts_from_source(folder, source["checkpoint"], head_transferred, num_classes=3)
    settings = json.load(open(os.path.join(folder, "transfer", "settings.json")))
    digest = hashlib.sha256(open(source["checkpoint"], "rb").read()).hexdigest()
    assert settings["pretrained"]["sha256"] == digest
    assert settings["pretrained"]["path"] == os.path.abspath(source["checkpoint"])
    # issue 12: other labels no longer re-initialise the head; the shared ones load by name
    assert settings["pretrained"]["head"].startswith(
        "loaded" if head_transferred else "by label name")


def test_same_seed_gives_same_initialisation(runs):
    """Scratch and FrozenRandomEncoder ran with the same seed and plans: same epoch-0 weights."""
    def start(name):
        return snapshot(runs[name]["folder"])["network_weights"]
    a, b = start("Scratch"), start("FrozenRandomEncoder")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = start("FineTune")  # loaded from the source: must differ
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("strategy", ONE_PHASE_STRATEGIES, ids=lambda s: s.name)
def test_bookkeeping_files(runs, strategy):
    folder = os.path.join(runs[strategy.name]["folder"], "transfer")
    settings = json.load(open(os.path.join(folder, "settings.json")))
    assert settings["strategy"] == strategy.name
    assert settings["num_epochs"] == 2 and settings["iterations_per_epoch"] == 3
    assert settings["budget"]["seed"] == 3
    assert settings["initial_lr"] == pytest.approx(0.01 * strategy.lr_factor)
    assert settings["epochs_done"] == 2
    for part, counts in settings["parameters"].items():
        if part in strategy.frozen_parts:
            assert counts["trainable"] == 0 and counts["frozen"] > 0
        else:
            assert counts["frozen"] == 0 and counts["trainable"] > 0
    assert settings["versions"]["nnunetv2"] == "2.8.1"
    with open(os.path.join(folder, "epochs.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert [int(r["iterations"]) for r in rows] == [3, 6]
    assert float(rows[1]["cumulative_train_time_s"]) > float(rows[0]["cumulative_train_time_s"]) > 0
    assert float(rows[0]["learning_rate"]) == pytest.approx(settings["initial_lr"])
    assert all(0 <= float(r["pseudo_dice"]) <= 1 for r in rows)
    assert sorted(os.listdir(os.path.join(folder, "snapshots"))) == [
        "epoch_0000.pth", "epoch_0001.pth", "epoch_0002.pth"]


@pytest.mark.parametrize("strategy", ONE_PHASE_STRATEGIES, ids=lambda s: s.name)
def test_predict_writes_segmentations_of_image_shape(runs, workspace, strategy):
    target = runs[strategy.name]["target"]
    assert_predictions_match_images(os.path.join(workspace.raw, target["name"], "imagesTs"),
                                    runs[strategy.name]["predictions"], target["labels"])


def test_preflight_report_is_printed(runs):
    stdout = runs["FineTune"]["train"].stdout
    assert "Pretrained weights:" in stdout
    assert "by label name" in stdout and "decoder.seg_layers.0.weight" in stdout
