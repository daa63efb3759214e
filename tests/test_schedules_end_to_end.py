"""The scheduled strategies and a custom strategy file through the real `nnUNetv2_train` and
`nnUNetv2_predict`, on nnU-Net's U-Net and on `karimi`: phases logged in epochs.csv, parts
frozen in a phase bit-identical across it (from snapshots) and trained in the next, LoRA's
merged checkpoints, and `--c` resuming mid-schedule in the right phase.

Its own runs (the one-phase strategies are `strategy_runs`' and the architecture matrix's):
four epochs of two iterations, so that every phase of LP-FT and of the custom file gets one.
Every scheduled strategy runs on U-Net; on karimi, those whose checks below read karimi's runs
(the phases' frozen parts, LoRA's merge). What the others select and step on every
architecture is checked in-process (test_schedules.test_every_architecture_selects_and_steps),
in a fraction of the time of a real run each. `nnUNetv2_predict` runs on the checkpoints that
differ in kind at inference: LoRA's merged weights and the custom file's trainer (predicted from
a shell without the strategy file); the other scheduled trainers save what FineTune saves, and
FineTune's checkpoints are predicted by `strategy_runs` and the architecture matrix.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_transfer.architectures import partition
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.training.low_rank import add_adapters, load_adapter_state_dict
from nnunet_transfer.training.strategies import CUSTOM_TRAINER, SCHEDULED_STRATEGIES

from support.nnunet_workspace import ONE_THREAD, SMALL_PLANS, SOURCE_ID
from support.run_checks import (assert_predictions_match_images, load_checkpoint_file,
                                parts_by_key, snapshot)

BUDGET = {"NNUNET_TRANSFER_EPOCHS": "4", "NNUNET_TRANSFER_ITERS": "2",
          "NNUNET_TRANSFER_VAL_ITERS": "1", "NNUNET_TRANSFER_SNAPSHOT_EVERY": "1",
          "NNUNET_TRANSFER_SEED": "3", "NNUNET_TRANSFER_LORA_RANK": "2", "nnUNet_n_proc_DA": "0"}
# This checkout's trainers (the installed package may be another checkout's: an editable
# install of the main worktree finds its trainers folder, which lacks the new strategies).
TRAINERS = {"nnUNet_extTrainer": os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "trainers")}
CUSTOM = """\
name: HeadDecoderAll
pretrained: required
phases:
  - name: head
    epochs: 1
    train:
      - parts: [head]
  - name: decoder
    epochs: 1
    train:
      - parts: [decoder, head]
  - name: all
    warmup_epochs: 1
    train:
      - {}
"""
CUSTOM_PHASES = ["head", "decoder", "all", "all"]
NAMES = [s.name for s in SCHEDULED_STRATEGIES] + ["Custom"]
UNET, KARIMI = "3d_fullres", "3d_fullres_karimi"
ON_KARIMI = ["LinearProbeThenFineTune", "LoRA", "Custom"]
# (configuration, strategy) pairs trained, and those predicted
RUNS = [(UNET, name) for name in NAMES] + [(KARIMI, name) for name in ON_KARIMI]
PREDICTED = [(configuration, name) for configuration, name in RUNS
             if name in ("LoRA", "Custom")]


def trainer_of(name: str) -> str:
    return CUSTOM_TRAINER if name == "Custom" else f"nnUNetTrainer_{name}"


@pytest.fixture(scope="module")
def custom_file(workspace) -> str:
    path = os.path.join(workspace.root, "head_decoder_all.yaml")
    with open(path, "w") as f:
        f.write(CUSTOM)
    return path


@pytest.fixture(scope="module")
def scheduled_runs(workspace, source, target, custom_file) -> dict:
    """The RUNS of the scheduled strategies and the custom file, then the PREDICTED ones'
    predictions, two processes at a time (one thread each)."""
    for dataset, plans in ((SOURCE_ID, SMALL_PLANS), (target["id"], target["plans"])):
        workspace.run("nnunet-transfer", "add-architectures", "-d", str(dataset), "-p", plans,
                      "--only", "karimi")
    env = {**BUDGET, **ONE_THREAD, **TRAINERS, "NNUNET_TRANSFER_STRATEGY_FILE": custom_file}

    def train(dataset, plans, configuration, trainer, pretrained=None):
        args = ["nnUNetv2_train", str(dataset), configuration, "0", "-p", plans, "-tr", trainer,
                "-device", "cpu"] + (["-pretrained_weights", pretrained] if pretrained else [])
        return workspace.run(*args, extra_env=env)

    train(SOURCE_ID, SMALL_PLANS, KARIMI, "nnUNetTrainer_Scratch")
    sources = {UNET: source["checkpoint"], KARIMI: os.path.join(workspace.run_folder(
        source["name"], "nnUNetTrainer_Scratch", SMALL_PLANS, configuration=KARIMI),
        "checkpoint_final.pth")}
    runs = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {(c, n): pool.submit(train, target["id"], target["plans"], c, trainer_of(n),
                                       sources[c]) for c, n in RUNS}
        for (configuration, name), future in futures.items():
            runs[configuration, name] = {"train": future.result(), "folder": workspace.run_folder(
                target["name"], trainer_of(name), target["plans"], configuration=configuration)}
    # a later shell: the budget and the one-thread share, no strategy file
    predict_env = {key: value for key, value in env.items()
                   if key != "NNUNET_TRANSFER_STRATEGY_FILE"}

    def predict(configuration, name):
        out = os.path.join(workspace.root, "predictions_scheduled", configuration, name)
        workspace.run("nnUNetv2_predict", "-i", os.path.join(workspace.raw, target["name"],
                                                             "imagesTs"),
                      "-o", out, "-d", str(target["id"]), "-c", configuration, "-f", "0",
                      "-p", target["plans"], "-tr", trainer_of(name), "-device", "cpu",
                      "-npp", "1", "-nps", "1", extra_env=predict_env)
        return out

    with ThreadPoolExecutor(max_workers=2) as pool:
        predictions = {run: pool.submit(predict, *run) for run in PREDICTED}
        for run, future in predictions.items():
            runs[run]["predictions"] = future.result()
    return runs


def epochs_csv(folder: str) -> list[dict]:
    with open(os.path.join(folder, "transfer", "epochs.csv")) as f:
        return list(csv.DictReader(f))


def changed_parts(folder: str, first: int, second: int) -> set[str]:
    a, b = snapshot(folder, first)["network_weights"], snapshot(folder, second)["network_weights"]
    # snapshots keep no plans: the parts come from nnU-Net's final checkpoint
    parts = parts_by_key(load_checkpoint_file(os.path.join(folder, "checkpoint_final.pth")))
    return {part for key, part in parts.items() if not torch.equal(a[key], b[key])}


@pytest.mark.parametrize("configuration, name", RUNS)
def test_scheduled_strategy_trains_its_phases(scheduled_runs, configuration, name):
    run = scheduled_runs[configuration, name]
    settings = json.load(open(os.path.join(run["folder"], "transfer", "settings.json")))
    phases = [row["phase"] for row in epochs_csv(run["folder"])]
    assert len(phases) == 4
    expected = [p["name"] for p in settings["phases"] for _ in range(p["end_epoch"]
                                                                     - p["start_epoch"])]
    assert phases == expected
    assert settings["schedule"]["phases"] and settings["strategy"] == (
        "HeadDecoderAll" if name == "Custom" else name)


@pytest.mark.parametrize("configuration, name", PREDICTED)
def test_nnunet_predict_segments_with_a_scheduled_checkpoint(scheduled_runs, workspace, target,
                                                             configuration, name):
    assert_predictions_match_images(os.path.join(workspace.raw, target["name"], "imagesTs"),
                                    scheduled_runs[configuration, name]["predictions"],
                                    target["labels"])


@pytest.mark.parametrize("configuration", [UNET, KARIMI])
def test_parts_frozen_in_a_phase_are_identical_and_trained_in_the_next(scheduled_runs,
                                                                       configuration):
    custom = scheduled_runs[configuration, "Custom"]["folder"]
    assert [r["phase"] for r in epochs_csv(custom)] == CUSTOM_PHASES
    assert changed_parts(custom, 0, 1) == {"head"}
    assert changed_parts(custom, 1, 2) == {"decoder", "head"}
    assert changed_parts(custom, 2, 3) == {"encoder", "decoder", "head"}
    lpft = scheduled_runs[configuration, "LinearProbeThenFineTune"]["folder"]
    assert changed_parts(lpft, 0, 1) == {"head"}
    assert changed_parts(lpft, 1, 2) == {"encoder", "decoder", "head"}


@pytest.mark.parametrize("configuration", [UNET, KARIMI])
def test_lora_checkpoint_is_merged_and_base_untouched(scheduled_runs, configuration):
    folder = scheduled_runs[configuration, "LoRA"]["folder"]
    final = load_checkpoint_file(os.path.join(folder, "checkpoint_final.pth"))
    adapters = os.path.join(folder, "transfer", "adapters")
    base = torch.load(os.path.join(adapters, "base_checkpoint_final.pth"), weights_only=True)
    start = snapshot(folder, 0)["network_weights"]
    parts = parts_by_key(final)
    for key, part in parts.items():   # the base never moves
        if part != "head":
            assert torch.equal(base[key], start[key]), key
    # the head trains (but nnU-Net's zero-weighted lowest deep-supervision output)
    assert any(not torch.equal(base[k], start[k]) for k, p in parts.items() if p == "head")
    merged = Checkpoint.of(final).network(load_weights=True)
    adapted = Checkpoint.of(final).network(load_weights=False)
    adapted.load_state_dict(base)
    modules = partition(adapted).modules
    added = add_adapters([*modules["encoder"], *modules["decoder"]], rank=2, seed=0)
    load_adapter_state_dict(adapted, torch.load(os.path.join(adapters, "checkpoint_final.pth"),
                                                weights_only=True))
    plain = Checkpoint.of(final).network(load_weights=False)
    plain.load_state_dict(base)
    patch = PlansManager(final["init_args"]["plans"]).get_configuration(
        final["init_args"]["configuration"]).patch_size
    x = torch.randn(1, 1, *patch)
    outputs = []
    for network in (merged, adapted, plain):
        network.eval()
        with torch.no_grad():
            out = network(x)
        outputs.append(out[0] if isinstance(out, (list, tuple)) else out)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(outputs[0], outputs[2])   # the adapters changed what it computes
    settings = json.load(open(os.path.join(folder, "transfer", "settings.json")))
    trainable = sum(c["trainable"] for c in settings["parameters"].values())
    head = sum(v.numel() for k, v in base.items() if parts[k] == "head")
    assert trainable == head + sum(p.numel() for p in added)


def test_continued_run_resumes_in_the_right_phase(workspace, target, source, custom_file):
    """Stopped after the first phase's epoch, continued from a new shell with --c: the second
    phase's optimizer groups, each epoch logged once, the log's phases in order."""
    args = ["nnUNetv2_train", str(target["id"]), UNET, "all", "-p", target["plans"],
            "-tr", CUSTOM_TRAINER, "-device", "cpu"]
    env = {**BUDGET, **TRAINERS, "NNUNET_TRANSFER_EPOCHS": "1",
           "NNUNET_TRANSFER_STRATEGY_FILE": custom_file}
    workspace.run(*args, "-pretrained_weights", source["checkpoint"], extra_env=env)
    # a new shell: the strategy file and the budget come from the record, more epochs now
    workspace.run(*args, "--c", extra_env={**TRAINERS, "nnUNet_n_proc_DA": "0",
                                           "NNUNET_TRANSFER_EPOCHS": "3"})
    folder = workspace.run_folder(target["name"], CUSTOM_TRAINER, target["plans"], fold="all")
    rows = epochs_csv(folder)
    assert [(int(r["epoch"]), r["phase"]) for r in rows] == [(0, "head"), (1, "decoder"),
                                                             (2, "all")]
    settings = json.load(open(os.path.join(folder, "transfer", "settings.json")))
    assert settings["resumed_at_epoch"] == [1] and settings["epochs_done"] == 3
    assert changed_parts(folder, 0, 1) == {"head"}
    assert changed_parts(folder, 1, 2) == {"decoder", "head"}
    final = load_checkpoint_file(os.path.join(folder, "checkpoint_final.pth"))
    in_optimizer = sum(len(g["params"]) for g in final["optimizer_state"]["param_groups"])
    network = Checkpoint.of(final).network(load_weights=False)
    assert in_optimizer == len(list(network.parameters()))   # the last phase trains all
    logs = "".join(open(os.path.join(folder, f)).read() for f in os.listdir(folder)
                   if f.startswith("training_log"))   # one log per start
    assert "Phase decoder" in logs
