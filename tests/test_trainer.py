"""The trainer in-process on a real preprocessed dataset: optimizer, seed, pretrained refusals."""

import pytest
import torch

from nnunet_transfer.training.strategies import ONE_PHASE_STRATEGIES
from nnunet_transfer_trainers import nnUNetTrainer_transfer as trainers

from support.nnunet_workspace import BUDGET


@pytest.fixture
def make_trainer(workspace, target, monkeypatch, tmp_path):
    import json, os
    for key, value in {**workspace.env, **BUDGET}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("nnUNet_results", str(tmp_path))  # keep the real runs' folders apart
    folder = os.path.join(workspace.preprocessed, target["name"])
    plans = json.load(open(os.path.join(folder, target["plans"] + ".json")))
    dataset_json = json.load(open(os.path.join(folder, "dataset.json")))

    def make(trainer_name: str, **env):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        trainer = getattr(trainers, trainer_name)(dict(plans, continue_training=False),
                                                  "3d_fullres", 0, dataset_json,
                                                  device=torch.device("cpu"))
        trainer.initialize()
        return trainer
    return make


@pytest.mark.parametrize("strategy", ONE_PHASE_STRATEGIES, ids=lambda s: s.name)
def test_optimizer_holds_exactly_the_trainable_parts(make_trainer, strategy):
    trainer = make_trainer(strategy.trainer_name)
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    expected = {id(p) for part in ("encoder", "decoder", "head")
                if part not in strategy.frozen_parts for p in trainer.parts.parameters(part)}
    assert in_optimizer == expected
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * strategy.lr_factor)
    assert trainer.num_epochs == 2 and trainer.num_iterations_per_epoch == 3


def test_learning_rate_knob_overrides_strategy_factor(make_trainer):
    trainer = make_trainer("nnUNetTrainer_FineTune", NNUNET_TRANSFER_LR="0.002")
    assert trainer.initial_lr == 0.002


def test_cpu_threads_knob_sets_torch_threads(make_trainer):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        make_trainer("nnUNetTrainer_Scratch", NNUNET_TRANSFER_CPU_THREADS="1")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_seed_decides_the_initialisation(make_trainer):
    a = make_trainer("nnUNetTrainer_Scratch", NNUNET_TRANSFER_SEED="5").network.state_dict()
    b = make_trainer("nnUNetTrainer_Scratch", NNUNET_TRANSFER_SEED="5").network.state_dict()
    c = make_trainer("nnUNetTrainer_Scratch", NNUNET_TRANSFER_SEED="6").network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_refusing_strategy_exits_cleanly_on_pretrained_weights(make_trainer, source, capsys):
    trainer = make_trainer("nnUNetTrainer_FrozenRandomEncoder")
    with pytest.raises(SystemExit) as stop:
        trainer.load_pretrained_weights(source["checkpoint"])
    assert stop.value.code == 2
    assert "does not take -pretrained_weights" in capsys.readouterr().err


def test_frozen_head_that_cannot_be_loaded_is_refused(make_trainer, source, capsys):
    """The target has 3 labels, the source 2: a frozen head would stay random."""
    trainer = make_trainer("nnUNetTrainer_FrozenDecoderAndHead")
    with pytest.raises(SystemExit):
        trainer.load_pretrained_weights(source["checkpoint"])
    assert "freezes the head" in capsys.readouterr().err


def test_frozen_decoder_with_encoder_only_loading_is_refused(make_trainer, source, capsys):
    trainer = make_trainer("nnUNetTrainer_FrozenDecoder", NNUNET_TRANSFER_LOAD="encoder")
    with pytest.raises(SystemExit):
        trainer.load_pretrained_weights(source["checkpoint"])
    assert "freezes the decoder" in capsys.readouterr().err


def test_making_a_trainer_routes_pretrained_weights_to_it(make_trainer, monkeypatch):
    """The trainer installs the routing itself (importing it changes nothing), and nnU-Net's
    -pretrained_weights call for its network then lands in its load_pretrained_weights."""
    import nnunetv2.run.run_training as run_training
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights as nnunet_loader
    monkeypatch.setattr(run_training, "load_pretrained_weights", nnunet_loader)
    trainer = make_trainer("nnUNetTrainer_Scratch")
    assert run_training.load_pretrained_weights is not nnunet_loader
    landed = []
    monkeypatch.setattr(trainer, "load_pretrained_weights", landed.append)
    run_training.load_pretrained_weights(trainer.network, "weights.pth", True)
    assert landed == ["weights.pth"]
