"""Fine-tuning from checkpoints made elsewhere, through the real commands: a model folder that
nnU-Net's own trainer wrote under other plans, and an nnssl encoder."""

from __future__ import annotations

import json
import os
import pydoc
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.checkpoints.inspection import inspect_text

from support.checkpoint_files import (V1_MISSING, nnssl_checkpoint, v1_available, v1_network,
                                      v1_plans, write_v1_model)
from support.nnunet_workspace import BUDGET, ONE_THREAD, SOURCE_ID, TARGET_ID
from support.plain_model import OTHER_PLANS, PLAIN_TRAINER

RESENC_PLANS = "nnUNetPlansResEncCPU"
V1_PLANS = "nnUNetPlansv2.1_fromTask099"


def _load(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _resenc_plans(workspace, target) -> tuple[dict, list]:
    """The target's transferred plans with a small ResidualEncoderUNet, on the same data."""
    folder = os.path.join(workspace.preprocessed, target["name"])
    with open(os.path.join(folder, target["plans"] + ".json")) as f:
        plans = json.load(f)
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    kwargs = arch["arch_kwargs"]
    n = kwargs.pop("n_stages")
    kwargs.pop("n_conv_per_stage")
    arch["network_class_name"] = ("dynamic_network_architectures.architectures.unet."
                                  "ResidualEncoderUNet")
    arch["arch_kwargs"] = {"n_stages": n, **kwargs, "n_blocks_per_stage": [1] * n,
                           "n_conv_per_stage_decoder": [1] * (n - 1)}
    plans["plans_name"] = RESENC_PLANS
    with open(os.path.join(folder, RESENC_PLANS + ".json"), "w") as f:
        json.dump(plans, f)
    return arch["arch_kwargs"], plans["configurations"]["3d_fullres"]["patch_size"]


def _nnssl_file(workspace, target) -> str:
    arch_kwargs, patch = _resenc_plans(workspace, target)
    built = {k: (pydoc.locate(v) if k in ("conv_op", "norm_op", "nonlin") else v)
             for k, v in arch_kwargs.items()}
    torch.manual_seed(5)
    network = ResidualEncoderUNet(1, num_classes=2, deep_supervision=True, **built)
    path = os.path.join(workspace.root, "nnssl_encoder.pth")
    torch.save(nnssl_checkpoint(network, arch_kwargs, patch), path)
    return path


def _v1_model(workspace) -> str:
    """A v1 model folder of v1's Generic_UNet for the target's one channel."""
    pools, kernels = [[2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3
    torch.manual_seed(7)
    folder = write_v1_model(os.path.join(workspace.root, "v1"), v1_network(1, 2, pools, kernels),
                            v1_plans([32, 32, 32], [1, 1, 1], pools, kernels, {0: "MRI"}),
                            labels={"0": "background", "1": "organ"})
    return folder


@pytest.fixture(scope="module")
def runs(workspace, target, plain_model) -> dict:
    """plans-transfer --source-model from the plain model folder and from a v1 model; then
    FrozenEncoder and FineTune from the plain model folder, FineTune from the v1 model and
    FrozenEncoder from an nnssl encoder, trained side by side."""
    transfer = workspace.run("nnunet-transfer", "plans-transfer", "--source-model", plain_model,
                             "--target", str(TARGET_ID), "-np", "1")
    plans = f"{OTHER_PLANS}_from{SOURCE_ID}"
    nnssl = _nnssl_file(workspace, target)
    jobs = {"FrozenEncoder": ("FrozenEncoder", plans, plain_model, {}),
            "FineTune": ("FineTune", plans, plain_model, {}),
            "nnssl": ("FrozenEncoder", RESENC_PLANS, nnssl, {"NNUNET_TRANSFER_LOAD": "encoder"})}
    v1 = v1_transfer = None
    if v1_available():
        v1 = _v1_model(workspace)
        v1_transfer = workspace.run("nnunet-transfer", "plans-transfer", "--source-model", v1,
                                    "--target", str(TARGET_ID), "-np", "1")
        jobs["v1"] = ("FineTune", V1_PLANS,
                      os.path.join(v1, "fold_0", "model_final_checkpoint.model"), {})

    def train(name):
        strategy, plans_name, weights, env = jobs[name]
        trainer = f"nnUNetTrainer_{strategy}"
        workspace.run("nnUNetv2_train", str(TARGET_ID), "3d_fullres", "0", "-p", plans_name,
                      "-tr", trainer, "-device", "cpu", "-pretrained_weights", weights,
                      extra_env={**BUDGET, **ONE_THREAD, "nnUNet_n_proc_DA": "0", **env})
        return workspace.run_folder(target["name"], trainer, plans_name)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        folders = dict(zip(jobs, pool.map(train, jobs)))
    return {"transfer": transfer, "plans": plans, "nnssl": nnssl, "folders": folders,
            "v1": v1, "v1_transfer": v1_transfer}


def test_plain_nnunet_model_feeds_our_strategies_with_its_own_network(
        workspace, target, plain_model, runs):
    source = _load(os.path.join(plain_model, "fold_0", "checkpoint_final.pth"))
    assert source["trainer_name"] == PLAIN_TRAINER
    assert f"-p {runs['plans']}" in runs["transfer"].stdout
    with open(os.path.join(workspace.preprocessed, target["name"], runs["plans"] + ".json")) as f:
        moved = json.load(f)["configurations"]["3d_fullres"]
    original = source["init_args"]["plans"]["configurations"]["3d_fullres"]
    for key in ("architecture", "patch_size", "spacing", "normalization_schemes"):
        assert moved[key] == original[key], key

    for strategy in ("FrozenEncoder", "FineTune"):
        folder = runs["folders"][strategy]
        start = _load(os.path.join(folder, "transfer", "snapshots", "epoch_0000.pth"))[
            "network_weights"]
        final = _load(os.path.join(folder, "checkpoint_final.pth"))["network_weights"]
        weights = source["network_weights"]
        # The network is the source's: every tensor has its shape, the head its target's labels.
        assert {k: v.shape for k, v in start.items() if ".seg_layers." not in k} == {
            k: v.shape for k, v in weights.items() if ".seg_layers." not in k}
        for key in (k for k in weights if k.startswith("encoder.")):
            assert torch.equal(start[key], weights[key]), key
            assert torch.equal(final[key], weights[key]) == (strategy == "FrozenEncoder"), key


def test_nnssl_encoder_loads_and_stays_frozen(runs):
    nnssl = _load(runs["nnssl"])["network_weights"]
    folder = runs["folders"]["nnssl"]
    final = _load(os.path.join(folder, "checkpoint_final.pth"))["network_weights"]
    encoder = [k for k in nnssl if k.startswith(("encoder.stem.", "encoder.stages."))]
    assert encoder and all(torch.equal(final[k], nnssl[k]) for k in encoder)
    decoder = [k for k in final if k.startswith("decoder.stages.")]
    assert not all(torch.equal(final[k], nnssl[k]) for k in decoder)
    with open(os.path.join(folder, "transfer", "settings.json")) as f:
        pretrained = json.load(f)["pretrained"]
    assert pretrained is not None


def test_inspect_a_plain_model_folder(plain_model):
    text = inspect_text(plain_model, "802")
    assert f"trainer:       {PLAIN_TRAINER}" in text
    assert f"configuration: 3d_fullres of plans {OTHER_PLANS}" in text
    assert "nnUNetTrainer_FrozenEncoder            encoder           yes" in text
    assert f"plans-transfer --source-model {plain_model} --target 802" in text
    assert f"-p {OTHER_PLANS}_from{SOURCE_ID}" in text


def test_v1_model_plans_and_weights_reach_the_v2_network(workspace, target, runs):
    """plans.pkl converted and the target preprocessed with it; FineTune starts from v1's
    tensors (the head re-initialised: the target has another label)."""
    if runs["v1"] is None:
        pytest.skip(V1_MISSING)
    assert f"-p {V1_PLANS}" in runs["v1_transfer"].stdout
    with open(os.path.join(workspace.preprocessed, target["name"], V1_PLANS + ".json")) as f:
        moved = json.load(f)["configurations"]["3d_fullres"]
    assert moved["patch_size"] == [32, 32, 32]
    assert moved["normalization_schemes"] == ["ZScoreNormalization"]
    v1 = Checkpoint.read(runs["v1"])
    start = _load(os.path.join(runs["folders"]["v1"], "transfer", "snapshots",
                               "epoch_0000.pth"))["network_weights"]
    body = [k for k in v1.weights if ".seg_layers." not in k]
    assert body and all(torch.equal(start[k], v1.weights[k]) for k in body)
