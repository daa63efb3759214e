"""Schedules in-process: phases placed in a run, what each phase trains at which LR (the
optimizer's groups), stages of every architecture, phase changes (frozen parts bit-identical,
then trained; momentum carried), and the schedules of the built-in strategies."""

from __future__ import annotations

import pytest
import torch

from nnunet_transfer.architectures import partition
from nnunet_transfer.architectures.parts import PARTS
from nnunet_transfer.architectures.registry import ARCHITECTURES
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.phase_optimizer import PhasePolyLR, phase_optimizer
from nnunet_transfer.training.schedule import Phase, Schedule, phase_at
from nnunet_transfer.training.selection import (
    apply_phase, frozen_modules, multipliers, places)
from nnunet_transfer.training.strategies import (
    GRADUAL_UNFREEZE, LAYERWISE_LR, LINEAR_PROBE_THEN_FINE_TUNE, NORM_AND_BIAS,
    SCHEDULED_STRATEGIES, WARMUP_FINE_TUNE)

from support.networks import batch, plain_unet, residual_unet
from support.architecture_checks import build

LORA_FREE = [s for s in SCHEDULED_STRATEGIES if s.name != "LoRA"]


def resolved(strategy, network, epochs=20):
    parts = partition(network)
    return parts, strategy.schedule.resolve(
        epochs, {p: len(parts.stage_modules(p)) for p in PARTS})


def groups_of(network, parts, phase, decay=0.5):
    return apply_phase(network, parts, multipliers(network, parts, phase, decay))


def test_phases_are_placed_in_the_run():
    network = plain_unet(n_stages=3)
    _, phases = resolved(GRADUAL_UNFREEZE, network)
    assert [(p.name, p.start, p.end) for p in phases] == [
        ("head", 0, 2), ("decoder", 2, 4), ("encoder1", 4, 9), ("encoder2", 9, 15),
        ("encoder3", 15, 20)]
    assert phase_at(phases, 9).name == "encoder2" and phase_at(phases, 25).name == "encoder3"
    _, (probe, finetune) = resolved(LINEAR_PROBE_THEN_FINE_TUNE, network, epochs=40)
    assert (probe.end, finetune.warmup) == (10, 2)
    assert [finetune.warmup_factor(e) for e in (10, 11, 12)] == [1 / 3, 2 / 3, 1.0]
    with pytest.raises(ValueError, match="only the last phase"):
        Schedule((Phase("a", ()), Phase("b", ())))


def test_optimizer_groups_match_each_phase():
    torch.manual_seed(0)
    network = plain_unet(n_stages=3)
    parts, phases = resolved(GRADUAL_UNFREEZE, network)
    ids = lambda params: {id(p) for p in params}
    stages = parts.stage_parameters("encoder")
    expected = {
        "head": ids(parts.parameters("head")),
        "decoder": ids(parts.parameters("head") + parts.parameters("decoder")),
        "encoder1": ids(parts.parameters("head") + parts.parameters("decoder") + stages[2]),
        "encoder3": ids(network.parameters()),
    }
    for phase in phases:
        groups = groups_of(network, parts, phase)
        optimizer = phase_optimizer(groups, 0.01, 3e-5)
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if phase.name in expected:
            assert in_optimizer == expected[phase.name], phase.name
        assert in_optimizer == {id(p) for p in network.parameters() if p.requires_grad}
        assert [g["lr"] for g in optimizer.param_groups] == [0.01]


def test_layerwise_lr_halves_per_stage_from_the_head():
    network = plain_unet(n_stages=3)   # encoder 3 stages, decoder 2, head 1
    parts, (phase,) = resolved(LAYERWISE_LR, network)
    groups = groups_of(network, parts, phase, decay=0.5)
    assert [g["multiplier"] for g in groups] == [0.5 ** d for d in range(6)]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in parts.parameters("head")}
    assert {id(p) for p in groups[-1]["params"]} == {
        id(p) for p in parts.stage_parameters("encoder")[0]}
    optimizer = phase_optimizer(groups, 0.01, 0.0)
    PhasePolyLR(optimizer, 0.01, 10, phase).step(5)
    poly = (1 - 5 / 10) ** 0.9
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
        [0.01 * 0.5 ** d * poly for d in range(6)])


def test_norm_and_bias_trains_norms_biases_and_the_head_only():
    network = residual_unet()
    parts, (phase,) = resolved(NORM_AND_BIAS, network)
    groups_of(network, parts, phase)
    where = places(network, parts)
    for parameter in network.parameters():
        place = where[id(parameter)]
        assert parameter.requires_grad == (place.part == "head"
                                           or place.kind in ("norms", "biases"))
    assert any(p.requires_grad for p in parts.parameters("encoder"))
    assert not any(p.requires_grad and p.ndim >= 2 for p in parts.parameters("encoder"))


def _steps(network, optimizer, modules, steps=2):
    for _ in range(steps):
        network.train()
        for module in modules:
            module.eval()
        optimizer.zero_grad(set_to_none=True)
        sum(o.square().mean() for o in network(batch())).backward()
        optimizer.step()


def test_frozen_in_a_phase_bit_identical_then_trained_with_momentum_carried():
    torch.manual_seed(1)
    network = plain_unet(norm_op=torch.nn.BatchNorm3d)
    parts, (probe, finetune) = resolved(LINEAR_PROBE_THEN_FINE_TUNE, network, epochs=4)
    optimizer = phase_optimizer(groups_of(network, parts, probe), 0.1, 0.1)
    # the probe: no graph through the frozen encoder, frozen statistics, frozen weights
    start = {k: v.clone() for k, v in network.state_dict().items()}
    _steps(network, optimizer, frozen_modules(parts))
    keys = parts.state_dict_parts(network)
    after_probe = network.state_dict()
    for key, part in keys.items():
        assert torch.equal(start[key], after_probe[key]) == (part != "head"), key
    head = parts.parameters("head")[0]
    momentum = optimizer.state[head]["momentum_buffer"].clone()
    assert any(getattr(m, "skip_gradient_stopped", False) for m in network.modules())

    optimizer = phase_optimizer(groups_of(network, parts, finetune), 0.1, 0.1, optimizer)
    assert torch.equal(optimizer.state[head]["momentum_buffer"], momentum)
    encoder_weight = parts.parameters("encoder")[0]
    assert encoder_weight not in optimizer.state   # a newly trained parameter starts afresh
    assert not any(getattr(m, "skip_gradient_stopped", False) for m in network.modules())
    before = {k: v.clone() for k, v in network.state_dict().items()}
    _steps(network, optimizer, frozen_modules(parts))
    moved = {keys[k] for k, v in network.state_dict().items()
             if v.dtype.is_floating_point and not torch.equal(before[k], v)}
    assert moved == {"encoder", "decoder", "head"}
    assert all(p.grad is not None for p in parts.parameters("encoder"))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_selects_and_steps(name):
    """On each extra architecture: its encoder's stages declared; every phase of every
    scheduled strategy selects consistently with its optimizer and trains something; one
    training step (the last phase of GradualUnfreeze: several stages' LRs) moves exactly what
    trains."""
    torch.manual_seed(0)
    network, patch = build(name, channels=1, classes=2, deep_supervision=True)
    for strategy in LORA_FREE:
        parts, phases = resolved(strategy, network, epochs=8)
        for phase in phases:
            groups = groups_of(network, parts, phase)
            trained = {id(p) for g in groups for p in g["params"]}
            assert trained == {id(p) for p in network.parameters() if p.requires_grad} != set()
    assert len(parts.stage_modules("encoder")) > 1   # every extra architecture declares them
    optimizer = phase_optimizer(groups_of(network, parts, phases[-1]), 0.05, 0.0)
    before = [p.detach().clone() for p in network.parameters()]
    network.train()
    for module in frozen_modules(parts):
        module.eval()
    outputs = network(torch.randn(1, 1, *patch))
    sum(o.square().mean() for o in outputs).backward()
    optimizer.step()
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for p, old in zip(network.parameters(), before):
        if id(p) not in trained:
            assert torch.equal(p, old)
        elif p.ndim >= 2:
            assert not torch.equal(p, old)


def test_warmup_fine_tune_ramps_the_learning_rate():
    network = plain_unet()
    parts, (phase,) = resolved(WARMUP_FINE_TUNE, network, epochs=100)
    optimizer = phase_optimizer(groups_of(network, parts, phase), 0.01, 0.0)
    scheduler = PhasePolyLR(optimizer, 0.01, 100, phase)
    rates = []
    for epoch in range(8):
        scheduler.step(epoch)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[:5] == sorted(rates[:5]) and rates[4] < rates[5] and rates[5] > rates[6]
    assert rates[0] == pytest.approx(0.01 / 6)


def test_stages_must_hold_their_part():
    class Leaky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv3d(1, 2, 1), torch.nn.Conv3d(2, 2, 1)
            self.up, self.out = torch.nn.Conv3d(2, 2, 1), torch.nn.Conv3d(2, 2, 1)

        def transfer_parts(self):
            return {"encoder": [self.a, self.b], "decoder": [self.up], "head": [self.out]}

        def transfer_stages(self):
            return {"encoder": [[self.a]]}

    with pytest.raises(UserError, match="encoder stages of Leaky"):
        partition(Leaky())
    Leaky.transfer_stages = lambda self: {"encoder": [[self.a], [self.b]]}
    assert len(partition(Leaky()).stage_parameters("encoder")) == 2
