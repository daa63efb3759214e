"""Every extra architecture through the real `nnUNetv2_train`, from the plans configurations
`nnunet-transfer add-architectures` writes, then `nnUNetv2_predict`.

Per architecture: a Scratch run on the source (it is also the pretraining), and two transfer
strategies whose frozen parts are complementary (FrozenEncoder; FrozenDecoderAndHead, on a
target with the source's labels), so that each of its parts is once loaded and frozen, once
loaded and trained; one prediction. Every other strategy runs on one architecture each, in
turn. Every strategy on every architecture is checked in-process, in a fraction of the time
(test_architectures); what only the real trainer shows (plans, loading the checkpoint,
nnU-Net's loop and inference) is what this matrix adds. Runs go two at a time: most of a tiny
run is start-up and nnU-Net's final validation, not arithmetic.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from nnunet_transfer.architectures.registry import ARCHITECTURES
from nnunet_transfer.training.strategies import (
    ONE_PHASE_STRATEGIES, FROZEN_DECODER_AND_HEAD, FROZEN_ENCODER, SCRATCH, Pretrained)

from support.nnunet_workspace import ONE_THREAD, SMALL_PLANS, SOURCE_ID
from support.run_checks import (assert_frozen_identical_and_trainable_changed,
                                assert_predictions_match_images, assert_starts_from_source)

BUDGET = {"NNUNET_TRANSFER_EPOCHS": "1", "NNUNET_TRANSFER_ITERS": "2",
          "NNUNET_TRANSFER_VAL_ITERS": "1", "NNUNET_TRANSFER_SNAPSHOT_EVERY": "1",
          "NNUNET_TRANSFER_SEED": "3", "nnUNet_n_proc_DA": "0"}
NEEDS_SOURCE_LABELS = {"FrozenDecoderAndHead"}
EVERY_ARCHITECTURE = (SCRATCH, FROZEN_ENCODER, FROZEN_DECODER_AND_HEAD)
IN_TURN = [s for s in ONE_PHASE_STRATEGIES if s not in EVERY_ARCHITECTURE]
# (architecture, strategy) pairs trained: Scratch first (the pretraining of the others)
MATRIX = [(a, s) for s in EVERY_ARCHITECTURE for a in ARCHITECTURES] + [
    (ARCHITECTURES[(2 * i + 1) % len(ARCHITECTURES)], s) for i, s in enumerate(IN_TURN)]
PREDICTED_STRATEGY = FROZEN_ENCODER


def configuration(architecture: str) -> str:
    return f"3d_fullres_{architecture}"


class Runs:
    """Launch the trainings two at a time (one thread each) and the predictions one at a
    time; keep each run's outcome (or its failure) for the tests."""

    def __init__(self, workspace, source, target, same_labels_target):
        self.workspace, self.source = workspace, source
        self.targets = {"target": target, "same_labels": same_labels_target}
        self.outcomes: dict[tuple[str, str], dict] = {}

    def _train(self, architecture: str, strategy, on: dict, pretrained: str | None) -> dict:
        args = ["nnUNetv2_train", str(on["id"]), configuration(architecture), "0",
                "-p", on["plans"], "-tr", strategy.trainer_name, "-device", "cpu"]
        if pretrained:
            args += ["-pretrained_weights", pretrained]
        folder = self.workspace.run_folder(on["name"], strategy.trainer_name, on["plans"],
                                           configuration=configuration(architecture))
        outcome = {"folder": folder, "target": on, "error": None}
        try:
            outcome["train"] = self.workspace.run(*args, extra_env={**BUDGET, **ONE_THREAD})
        except AssertionError as error:
            outcome["error"] = str(error)
        return outcome

    def _predict(self, architecture: str) -> dict:
        strategy, on = PREDICTED_STRATEGY, self.targets["target"]
        out = os.path.join(self.workspace.root, "predictions_arch", architecture)
        try:
            self.workspace.run(
                "nnUNetv2_predict", "-i", os.path.join(self.workspace.raw, on["name"], "imagesTs"),
                "-o", out, "-d", str(on["id"]), "-c", configuration(architecture), "-f", "0",
                "-p", on["plans"], "-tr", strategy.trainer_name, "-device", "cpu",
                "-npp", "1", "-nps", "1")
            return {"predictions": out, "target": on, "error": None}
        except AssertionError as error:
            return {"predictions": out, "target": on, "error": str(error)}

    def run_all(self) -> "Runs":
        source = {"id": SOURCE_ID, "name": self.source["name"], "plans": SMALL_PLANS}
        with ThreadPoolExecutor(max_workers=2) as pool:
            pretraining = {a: pool.submit(self._train, a, SCRATCH, source, None)
                           for a in ARCHITECTURES}
            for architecture, future in pretraining.items():
                self.outcomes[architecture, SCRATCH.name] = future.result()
            transfers = {}
            for architecture, strategy in MATRIX:
                if strategy is SCRATCH:
                    continue
                checkpoint = os.path.join(self.outcomes[architecture, SCRATCH.name]["folder"],
                                          "checkpoint_final.pth")
                on = self.targets["same_labels" if strategy.name in NEEDS_SOURCE_LABELS
                                  else "target"]
                pretrained = checkpoint if strategy.pretrained is Pretrained.REQUIRED else None
                transfers[architecture, strategy.name] = pool.submit(
                    self._train, architecture, strategy, on, pretrained)
            for key, future in transfers.items():
                self.outcomes[key] = future.result()
        # nnUNetv2_predict takes every core: one prediction at a time.
        for architecture in ARCHITECTURES:
            self.outcomes[architecture, "predict"] = self._predict(architecture)
        return self

    def get(self, architecture: str, what: str) -> dict:
        outcome = self.outcomes[architecture, what]
        if outcome["error"]:
            pytest.fail(f"{architecture} / {what} failed:\n{outcome['error']}")
        return outcome


@pytest.fixture(scope="module")
def runs(workspace, source, target, same_labels_target) -> Runs:
    for dataset, plans in ((SOURCE_ID, SMALL_PLANS), (target["id"], target["plans"]),
                           (same_labels_target["id"], same_labels_target["plans"])):
        workspace.run("nnunet-transfer", "add-architectures", "-d", str(dataset), "-p", plans)
    return Runs(workspace, source, target, same_labels_target).run_all()


@pytest.mark.parametrize(("architecture", "strategy"), MATRIX,
                         ids=[f"{a}-{s.name}" for a, s in MATRIX])
def test_architecture_trains_with_strategy(runs, architecture, strategy):
    outcome = runs.get(architecture, strategy.name)
    assert_frozen_identical_and_trainable_changed(outcome["folder"], strategy.frozen_parts)
    with open(os.path.join(outcome["folder"], "transfer", "settings.json")) as f:
        settings = json.load(f)
    assert settings["strategy"] == strategy.name
    if strategy.pretrained is Pretrained.REQUIRED:
        source_checkpoint = os.path.join(runs.get(architecture, SCRATCH.name)["folder"],
                                         "checkpoint_final.pth")
        head_transferred = strategy.name in NEEDS_SOURCE_LABELS
        assert_starts_from_source(outcome["folder"], source_checkpoint, head_transferred,
                                  num_classes=outcome["target"]["labels"])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_nnunet_predict_segments_with_every_architecture(runs, workspace, architecture):
    outcome = runs.get(architecture, "predict")
    on = outcome["target"]
    assert_predictions_match_images(os.path.join(workspace.raw, on["name"], "imagesTs"),
                                    outcome["predictions"], on["labels"])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_run_records_the_architecture_plans(runs, architecture):
    """nnU-Net copies the plans into the run: the architecture entry is ours, inherited data."""
    folder = os.path.dirname(runs.get(architecture, SCRATCH.name)["folder"])
    with open(os.path.join(folder, "plans.json")) as f:
        plans = json.load(f)
    entry = plans["configurations"][configuration(architecture)]
    assert entry["inherits_from"] == "3d_fullres"
    assert entry["architecture"]["network_class_name"].startswith("nnunet_transfer.architectures")


def test_checkpoint_of_another_architecture_is_refused(runs, workspace, source,
                                                      same_labels_target):
    """nnU-Net's U-Net weights given to an HRNet run: a message naming both, no traceback.
    (A dataset and trainer no other test trains, so no run folder is touched.)"""
    target = same_labels_target
    result = workspace.run("nnUNetv2_train", str(target["id"]), configuration("hrnet"), "0",
                           "-p", target["plans"], "-tr", "nnUNetTrainer_FineTune",
                           "-device", "cpu", "-pretrained_weights", source["checkpoint"],
                           ok=False, extra_env=BUDGET)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "another architecture" in result.stderr and "PlainConvUNet" in result.stderr
