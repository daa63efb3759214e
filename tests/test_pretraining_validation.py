"""A fold-`all` (pretraining) run skips nnU-Net's final validation on its own training cases and
keeps its weights; `--val` still validates it; fold-0 runs validate as before."""

import os

import torch

from support.nnunet_workspace import BUDGET


def _weights(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["network_weights"]


def test_fold_all_run_skips_the_final_validation(workspace, target):
    args = ["nnUNetv2_train", str(target["id"]), "3d_fullres", "all", "-p", target["plans"],
            "-tr", "nnUNetTrainer_Scratch", "-device", "cpu"]
    env = {**BUDGET, "nnUNet_n_proc_DA": "0", "NNUNET_TRANSFER_EPOCHS": "1"}
    workspace.run(*args, extra_env=env)
    folder = workspace.run_folder(target["name"], "nnUNetTrainer_Scratch", target["plans"],
                                  fold="all")
    assert not os.path.exists(os.path.join(folder, "validation"))
    log = open(next(os.path.join(folder, f) for f in sorted(os.listdir(folder))
                    if f.startswith("training_log"))).read()
    assert "final validation (on the training cases) skipped" in log

    # The weights are what the training left: the final checkpoint is the last snapshot.
    final = os.path.join(folder, "checkpoint_final.pth")
    snapshots = os.path.join(folder, "transfer", "snapshots")
    assert sorted(os.listdir(snapshots)) == ["epoch_0000.pth", "epoch_0001.pth"]
    last = _weights(os.path.join(snapshots, "epoch_0001.pth"))
    saved = _weights(final)
    assert saved.keys() == last.keys()
    assert all(torch.equal(saved[k], last[k]) for k in saved)
    assert any(not torch.equal(saved[k], v)
               for k, v in _weights(os.path.join(snapshots, "epoch_0000.pth")).items())

    # Asked for explicitly, the validation runs and leaves the checkpoint as it was.
    final_bytes = open(final, "rb").read()
    workspace.run(*args, "--val", extra_env=env)
    assert os.path.isfile(os.path.join(folder, "validation", "summary.json"))
    assert open(final, "rb").read() == final_bytes


def test_fold_0_runs_still_validate(source):
    assert os.path.isfile(os.path.join(source["folder"], "validation", "summary.json"))
