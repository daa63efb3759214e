"""Tensor matching through the real nnUNetv2_train (issue 12): output layers by label name on
the shared strategy runs, input channels by name and kernels adapted 3x3x3 -> 1x3x3 on a
two-channel target with anisotropic plans, and refusals answered with exit code 2."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer.data.synthetic import write_synthetic_dataset

from support.nnunet_workspace import BUDGET, ONE_THREAD, SMALL_PLANS, SOURCE_ID, write_split
from support.run_checks import load_checkpoint_file, snapshot

CHANNELS_ID = 804
ANISOTROPIC_PLANS = f"{SMALL_PLANS}_from{SOURCE_ID}_anisotropic"
SHORT = {**BUDGET, **ONE_THREAD, "NNUNET_TRANSFER_EPOCHS": "1", "NNUNET_TRANSFER_ITERS": "2",
         "nnUNet_n_proc_DA": "0"}
INPUT = "encoder.stages.0.0.convs.0.conv.weight"


def _weights(path_or_folder: str) -> dict:
    if os.path.isdir(path_or_folder):
        return snapshot(path_or_folder)["network_weights"]
    return load_checkpoint_file(path_or_folder)["network_weights"]


def test_shared_labels_keep_their_output_channels_at_epoch_0(strategy_runs, source):
    """FineTune on the target with the extra label 'core': background and organ come from the
    source bit for bit in every output layer; 'core' is the network's own init, the same as
    Scratch's (same seed, same plans)."""
    fine_tune = _weights(strategy_runs["FineTune"]["folder"])
    scratch = _weights(strategy_runs["Scratch"]["folder"])
    trained = _weights(source["checkpoint"])
    heads = [k for k in fine_tune if k.startswith("decoder.seg_layers.")]
    assert heads
    for key in heads:
        assert fine_tune[key].shape[0] == 3 and trained[key].shape[0] == 2
        assert torch.equal(fine_tune[key][:2], trained[key]), key
        assert torch.equal(fine_tune[key][2], scratch[key][2]), key
        if key.endswith(".weight"):  # biases start at 0; the lowest output never trains
            assert not torch.equal(fine_tune[key][:2], scratch[key][:2]), key
    settings = json.load(open(os.path.join(strategy_runs["FineTune"]["folder"], "transfer",
                                           "settings.json")))
    rows = {r["key"]: r for r in settings["pretrained"]["tensors"]}
    assert all(rows[k]["status"] == "adapted" and rows[k]["partial"] for k in heads)
    assert settings["pretrained"]["head"].startswith("by label name: background, organ")


def _two_channel_dataset(workspace) -> str:
    """The target's images as channel 'MRI' (the source's one channel) moved to position 1,
    with a new channel 'CT' before it."""
    folder = write_synthetic_dataset(workspace.raw, CHANNELS_ID, "SynthTwoChannels",
                                     num_training=3, seed=CHANNELS_ID)
    images = os.path.join(folder, "imagesTr")
    for name in sorted(os.listdir(images)):
        case = os.path.join(images, name)
        shutil.move(case, case.replace("_0000.nii.gz", "_0001.nii.gz"))
        image = sitk.ReadImage(case.replace("_0000.nii.gz", "_0001.nii.gz"))
        sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32) * -1.0 + 100.0, case)
    dataset_json = os.path.join(folder, "dataset.json")
    content = json.load(open(dataset_json))
    content["channel_names"] = {"0": "CT", "1": "MRI"}
    json.dump(content, open(dataset_json, "w"), indent=2)
    return os.path.basename(folder)


@pytest.fixture(scope="module")
def anisotropic_run(workspace, source) -> dict:
    """FineTune on the two-channel target, with the source's plans changed to 1x3x3 kernels
    in the second stage (so those kernels, in encoder and decoder, must be adapted)."""
    name = _two_channel_dataset(workspace)
    workspace.run("nnunet-transfer", "plans-transfer", "--source", str(SOURCE_ID),
                  "--target", str(CHANNELS_ID), "-p", SMALL_PLANS, "-np", "1")
    preprocessed = os.path.join(workspace.preprocessed, name)
    write_split(preprocessed)
    plans = json.load(open(os.path.join(preprocessed, f"{SMALL_PLANS}_from{SOURCE_ID}.json")))
    plans["plans_name"] = ANISOTROPIC_PLANS
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["kernel_sizes"][1] = [
        1, 3, 3]
    json.dump(plans, open(os.path.join(preprocessed, ANISOTROPIC_PLANS + ".json"), "w"))
    train = workspace.run("nnUNetv2_train", str(CHANNELS_ID), "3d_fullres", "0", "-p",
                          ANISOTROPIC_PLANS, "-tr", "nnUNetTrainer_FineTune", "-device", "cpu",
                          "-pretrained_weights", source["checkpoint"], extra_env=SHORT)
    return {"train": train, "folder": workspace.run_folder(name, "nnUNetTrainer_FineTune",
                                                           ANISOTROPIC_PLANS)}


def test_channels_by_name_and_adapted_kernels_train(anisotropic_run, source):
    folder = anisotropic_run["folder"]
    start, trained = _weights(folder), _weights(source["checkpoint"])
    # the source's 'MRI' kernels moved to channel 1; 'CT' got the mean rule (1 -> 2: halved)
    assert torch.equal(start[INPUT][:, 1], trained[INPUT][:, 0])
    assert torch.allclose(start[INPUT][:, 0], trained[INPUT][:, 0] / 2)
    settings = json.load(open(os.path.join(folder, "transfer", "settings.json")))
    adapted = {r["key"]: r["note"] for r in settings["pretrained"]["tensors"]
               if r["status"] == "adapted"}
    kernels = {k for k, note in adapted.items() if "3x3x3 -> 1x3x3" in note}
    assert "encoder.stages.1.0.convs.0.conv.weight" in kernels
    assert any(k.startswith("decoder.stages.") for k in kernels)
    for key in kernels:  # the central slice with the outer ones summed in
        assert torch.allclose(start[key], trained[key].sum(2, keepdim=True), atol=1e-6), key
    assert "kept mri; mean rule for ct" in adapted[INPUT]
    assert not [r for r in settings["pretrained"]["tensors"] if r["status"] == "fresh"]
    stdout = anisotropic_run["train"].stdout
    assert all(key in stdout for key in adapted)  # the preflight table lists each one
    assert os.path.isfile(os.path.join(folder, "checkpoint_final.pth"))
    assert settings["epochs_done"] == 1


def test_encoder_that_loads_nothing_is_refused(workspace, target, source, tmp_path):
    """A checkpoint of another network width: nothing of the encoder fits; exit code 2 with
    the plans-transfer advice, before any training."""
    checkpoint = load_checkpoint_file(source["checkpoint"])
    checkpoint["network_weights"] = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:])
                                     for k, v in checkpoint["network_weights"].items()
                                     if v.ndim}
    wider = os.path.join(tmp_path, "wider.pth")
    torch.save(checkpoint, wider)
    result = workspace.run("nnUNetv2_train", str(target["id"]), "3d_fullres", "0", "-p",
                           target["plans"], "-tr", "nnUNetTrainer_FineTune", "-device", "cpu",
                           "-pretrained_weights", wider, ok=False,
                           extra_env={**SHORT, "nnUNet_results": str(tmp_path)})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "none of its encoder weights loaded" in result.stderr
    assert f"plans-transfer --source {SOURCE_ID}" in result.stderr
    assert "Traceback" not in result.stderr


def test_frozen_head_with_a_new_label_is_refused_naming_its_tensors(workspace, target, source,
                                                                    tmp_path):
    result = workspace.run("nnUNetv2_train", str(target["id"]), "3d_fullres", "0", "-p",
                           target["plans"], "-tr", "nnUNetTrainer_FrozenDecoderAndHead",
                           "-device", "cpu", "-pretrained_weights", source["checkpoint"],
                           ok=False, extra_env={**SHORT, "nnUNet_results": str(tmp_path)})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "freezes the head" in result.stderr
    assert "decoder.seg_layers.0.weight: adapted in part" in result.stderr
    assert "new label(s) fresh: core" in result.stderr
