"""A model folder "not ours": nnU-Net's own trainer (shortened), trained under plans of its own
(other features and stages than the shared source run's). The `plain_model` fixture of
conftest trains it once per session for every test that fine-tunes from a model folder."""

from __future__ import annotations

import os

OTHER_PLANS = "nnUNetPlansOtherCPU"
PLAIN_TRAINER = "nnUNetTrainer_PlainShortForTests"
# nnU-Net's own trainer, only shorter.
PLAIN_TRAINER_SOURCE = f'''
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {PLAIN_TRAINER}(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
'''


def train_plain_model(workspace, source_id: int, source_name: str, trainer_folder: str) -> str:
    """Train the plain trainer (its module written to `trainer_folder`) on the planned source
    dataset under small plans of its own; returns the model folder."""
    with open(os.path.join(trainer_folder, f"{PLAIN_TRAINER}.py"), "w") as f:
        f.write(PLAIN_TRAINER_SOURCE)
    workspace.run("nnunet-transfer", "small-plans", "-d", str(source_id), "--name", OTHER_PLANS,
                  "--features", "4", "--stages", "3")
    workspace.run("nnUNetv2_train", str(source_id), "3d_fullres", "0", "-p", OTHER_PLANS,
                  "-tr", PLAIN_TRAINER, "-device", "cpu",
                  extra_env={"nnUNet_n_proc_DA": "0", "nnUNet_extTrainer": os.pathsep.join(
                      (workspace.env["nnUNet_extTrainer"], trainer_folder))})
    return os.path.dirname(workspace.run_folder(source_name, PLAIN_TRAINER, OTHER_PLANS))
