"""User mistakes through the real commands: a message naming the problem and the fix, exit
status 2, never a traceback."""

import json
import os
import shlex

import pytest
import torch

from nnunet_transfer.checkpoints.reader import Checkpoint

from support.nnunet_workspace import BUDGET, SMALL_PLANS, SOURCE_ID
from support.refusals import assert_refused


def test_env_points_nnunet_at_the_trainers(workspace):
    out = workspace.run("nnunet-transfer", "env", "--epochs", "4", "--seed", "9",
                        extra_env={"nnUNet_extTrainer": "/some/other/folder"}).stdout
    lines = dict(word.split("=", 1) for word in shlex.split(out) if word != "export")
    folders = lines["nnUNet_extTrainer"].split(os.pathsep)
    assert folders[1] == "/some/other/folder"
    assert os.path.isfile(os.path.join(folders[0], "nnUNetTrainer_transfer.py"))
    assert lines["NNUNET_TRANSFER_EPOCHS"] == "4" and lines["NNUNET_TRANSFER_SEED"] == "9"


def test_env_rejects_bad_budget(workspace):
    assert_refused(workspace.run("nnunet-transfer", "env", "--iters", "0", ok=False),
                    "--iters 0", "is not a whole number >= 1")


def test_plans_transfer_unknown_dataset(workspace, source):
    assert_refused(workspace.run("nnunet-transfer", "plans-transfer", "--source", "999",
                                 "--target", str(SOURCE_ID), ok=False),
                   "no dataset with id 999", source["name"])


def test_plans_transfer_unknown_plans(workspace, target):
    assert_refused(workspace.run("nnunet-transfer", "plans-transfer", "--source", str(SOURCE_ID),
                                  "--target", str(target["id"]), "-p", "NoSuchPlans", ok=False),
                    "plans NoSuchPlans", "Available:", SMALL_PLANS)


def test_plans_transfer_without_nnunet_paths(workspace):
    result = workspace.run("nnunet-transfer", "plans-transfer", "--source", "1", "--target", "2",
                           ok=False, extra_env={"nnUNet_raw": ""})
    assert_refused(result, "nnUNet_raw is not set")


def test_transferred_plans_record_their_source(workspace, target):
    plans = json.load(open(os.path.join(workspace.preprocessed, target["name"],
                                        target["plans"] + ".json")))
    assert plans["transferred_from"]["dataset"].startswith(f"Dataset{SOURCE_ID}")
    assert plans["dataset_name"] == target["name"]
    assert f"-p {target['plans']}" in target["stdout"]


@pytest.mark.parametrize("patch", [[20, 28, 20], [17, 33, 9]])
def test_small_plans_build_a_network_that_takes_its_patch(workspace, source, patch):
    name = "SmallOdd" + "x".join(map(str, patch))
    workspace.run("nnunet-transfer", "small-plans", "-d", str(SOURCE_ID), "--name", name,
                  "--patch", *map(str, patch), "--features", "4")
    plans = json.load(open(os.path.join(workspace.preprocessed, source["name"], name + ".json")))
    config = plans["configurations"]["3d_fullres"]
    dataset_json = json.load(open(os.path.join(workspace.preprocessed, source["name"],
                                               "dataset.json")))
    network = Checkpoint(name, {}, {
        "plans": plans, "configuration": "3d_fullres", "dataset_json": dataset_json}).network(
        load_weights=False)
    outputs = network(torch.zeros(1, 1, *config["patch_size"]))
    assert outputs[0].shape[2:] == tuple(config["patch_size"])
    assert all(p <= q for p, q in zip(config["patch_size"], patch))


def test_small_plans_bad_patch(workspace, source):
    assert_refused(workspace.run("nnunet-transfer", "small-plans", "-d", str(SOURCE_ID), "--patch",
                                  "20", "20", ok=False), "--patch needs 3 positive sizes")


def _train(workspace, target, trainer, *extra, env=None):
    return workspace.run("nnUNetv2_train", str(target["id"]), "3d_fullres", "0", "-p",
                         target["plans"], "-tr", trainer, "-device", "cpu", *extra, ok=False,
                         extra_env={**BUDGET, "nnUNet_n_proc_DA": "0", **(env or {})})


def test_strategy_needing_weights_refuses_to_start_without(workspace, target):
    assert_refused(_train(workspace, target, "nnUNetTrainer_FineTune"),
                    "nnUNetTrainer_FineTune", "needs the source network", "-pretrained_weights")


def test_corrupt_checkpoint(workspace, target, tmp_path):
    bad = tmp_path / "checkpoint_final.pth"
    bad.write_bytes(b"\x80\x02 not really a checkpoint")
    assert_refused(_train(workspace, target, "nnUNetTrainer_FrozenEncoder", "-pretrained_weights",
                           str(bad)), "not a readable PyTorch checkpoint", str(bad))


def test_checkpoint_of_other_plans_gets_table_and_fix(workspace, source, target, tmp_path):
    """A source network trained with nnU-Net's default plans, the target with the small ones."""
    checkpoint = torch.load(source["checkpoint"], map_location="cpu", weights_only=False)
    default_plans = json.load(open(os.path.join(workspace.preprocessed, source["name"],
                                                "nnUNetPlans.json")))
    checkpoint["init_args"] = dict(checkpoint["init_args"], plans=default_plans)
    checkpoint["network_weights"] = Checkpoint.of(checkpoint).network(
        load_weights=False).state_dict()
    path = tmp_path / "other_plans.pth"
    torch.save(checkpoint, path)
    result = _train(workspace, target, "nnUNetTrainer_FineTune", "-pretrained_weights", str(path))
    assert_refused(result, "do not fit the network", "channel counts differ",
                    f"nnunet-transfer plans-transfer --source {SOURCE_ID}", "-p nnUNetPlans",
                    "encoder.stages.0.0.convs.0.conv.weight")


def test_bad_budget_variable_stops_training(workspace, target):
    assert_refused(_train(workspace, target, "nnUNetTrainer_Scratch",
                           env={"NNUNET_TRANSFER_EPOCHS": "many"}),
                    "NNUNET_TRANSFER_EPOCHS='many' is not a number")


def test_evaluate_names_a_missing_folder(workspace, tmp_path):
    assert_refused(workspace.run("nnunet-transfer", "evaluate", str(tmp_path / "nope"),
                                 str(tmp_path), "-o", str(tmp_path / "out"), ok=False),
                    f"prediction folder {tmp_path / 'nope'} does not exist")


def test_convert_msd_names_a_missing_folder(workspace, tmp_path):
    assert_refused(workspace.run("nnunet-transfer", "convert-msd", str(tmp_path / "Task04_X"),
                                  "--id", "990", ok=False), "MSD task folder", "does not exist")
