"""One nnU-Net training step of a network under a strategy, timed: the measurement behind the
benchmark scripts (strategies, schedules, architectures) and the GPU check. Benchmark code,
not part of the package: the scripts import it from scripts/benchmarking/.

The step is nnUNetTrainer.train_step's: nnU-Net's Dice + CE loss (with its deep-supervision
weights when the network has deep supervision), backward, gradient clipping at 12, SGD with
nesterov momentum over the parameters that train, frozen parts in eval mode, exactly as the
strategy trainers freeze them (`apply_strategy`: a strategy's frozen parts at once), or set up
for one phase of a schedule as the trainer sets it up (`set_up_phase`: adapters, per-group learning rates, modules kept in eval);
on a GPU in mixed precision with a gradient scaler and optionally through torch.compile, as
nnU-Net trains there.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from benchmarking.segmentation_loss import SegmentationLoss
from nnunet_transfer.architectures.parts import PARTS, NetworkParts, partition, unwrap
from nnunet_transfer.training.freezing import (
    activate_zero_initialised_norms, freeze, stop_gradient_into_frozen_skips,
    trainable_parameters)
from nnunet_transfer.training.phase_optimizer import phase_optimizer
from nnunet_transfer.training.schedule import ResolvedPhase
from nnunet_transfer.training.selection import set_up_phase
from nnunet_transfer.training.strategies import Strategy


def apply_strategy(network: nn.Module, frozen_parts: Iterable[str], random_init: bool
                   ) -> NetworkParts:
    """Partition `network`, freeze `frozen_parts` and make the frozen parts cheap.

    `random_init`: the frozen parts stay at their random initialisation for good (no
    pretrained weights), so identity-initialised residual norms are activated first.
    """
    frozen_parts = set(frozen_parts)
    parts = partition(network)
    if random_init:
        for part in frozen_parts:
            activate_zero_initialised_norms(parts, part)
    freeze(parts, frozen_parts)
    if "encoder" in frozen_parts:
        stop_gradient_into_frozen_skips(unwrap(network))
    return parts



def nnunet_loss(n_outputs: int) -> nn.Module:
    """nnU-Net's training loss for `n_outputs` outputs (1: no deep supervision)."""
    return SegmentationLoss(n_outputs)


@dataclass
class StepTimes:
    """Seconds per step, and per step the seconds spent in the forward of the encoder; the
    process's CPU seconds per step (less disturbed than wall time on a shared machine)."""

    steps: list[float] = field(default_factory=list)
    encoder_forward: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def phases_of(strategy: Strategy, network: nn.Module, num_epochs: int = 100
              ) -> list[ResolvedPhase]:
    """The phases of `strategy` on `network` as the trainer places them in a run of
    `num_epochs` epochs, without those that get no epoch."""
    parts = partition(network)
    resolved = strategy.schedule.resolve(
        num_epochs, {part: len(parts.stage_modules(part)) for part in PARTS})
    return [phase for phase in resolved if phase.end > phase.start]


class ForwardClock:
    """Wall time spent in the forward of some modules, via forward hooks (CPU execution is
    synchronous, so the interval is the work)."""

    def __init__(self, modules):
        self.seconds = 0.0
        self._started: list[float] = []
        self._handles = []
        for module in modules:
            self._handles += [module.register_forward_pre_hook(self._start),
                              module.register_forward_hook(self._stop)]

    def _start(self, *_):
        self._started.append(time.perf_counter())

    def _stop(self, *_):
        self.seconds += time.perf_counter() - self._started.pop()

    def remove(self):
        for handle in self._handles:
            handle.remove()


def time_training_steps(network: nn.Module, frozen_parts=frozenset(), random_init: bool = True,
                        batch: int = 2, patch=(40, 56, 40), in_channels: int = 1,
                        classes: int = 3, steps: int = 5, warmup: int = 2,
                        seed: int = 0, time_encoder_forward: bool = True,
                        before_steps=None, device: str | torch.device = "cpu",
                        compile: bool = False, phase: ResolvedPhase | None = None) -> StepTimes:
    """Time `steps` training steps (after `warmup`) of `network` with `frozen_parts` frozen,
    or, given a `phase`, set up for it (`set_up_phase`, default knobs; its optimizer groups
    with their learning rates: `frozen_parts` and `random_init` are then unused).

    `time_encoder_forward` adds forward hooks timing the encoder (StepTimes.encoder_forward;
    meaningful on CPU only, where execution is synchronous); `before_steps()`, when given, is
    called once everything is allocated, just before the first step (the memory benchmarks
    read their baseline there). On a CUDA `device` the step runs under autocast with a
    gradient scaler (nnUNetTrainer.train_step) and each step's time ends with a synchronize;
    `compile` runs the network through torch.compile (nnU-Net's nnUNet_compile)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    network.to(device)
    if phase is None:
        parts = apply_strategy(network, frozen_parts, random_init=random_init)
        optimizer = torch.optim.SGD(trainable_parameters(network), 0.01, weight_decay=3e-5,
                                    momentum=0.99, nesterov=True)
        in_eval = [m for part in frozen_parts for m in parts.modules[part]]
    else:
        parts = partition(network)
        groups, in_eval = set_up_phase(network, parts, phase, seed=seed)
        optimizer = phase_optimizer(groups, 0.01, 3e-5)
    data = torch.randn(batch, in_channels, *patch, device=device)
    with torch.no_grad():
        outputs = network(data)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    targets = [torch.randint(0, classes, (batch, 1, *o.shape[2:]), device=device).float()
               for o in outputs]
    del outputs
    loss_fn = nnunet_loss(len(targets))
    forward = torch.compile(network) if compile else network
    mixed = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if mixed else None
    clock = ForwardClock(parts.modules["encoder"] if time_encoder_forward else [])
    times = StepTimes()
    if before_steps is not None:
        before_steps()
    try:
        for step in range(warmup + steps):
            network.train()
            for module in in_eval:  # network.train() switched them too
                module.eval()
            clock.seconds = 0.0
            started, cpu_started = time.perf_counter(), time.process_time()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=mixed):
                loss = loss_fn(forward(data), targets)
            if scaler is None:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
                scaler.step(optimizer)
                scaler.update()
                torch.cuda.synchronize(device)
            if step >= warmup:
                times.steps.append(time.perf_counter() - started)
                times.cpu.append(time.process_time() - cpu_started)
                times.encoder_forward.append(clock.seconds)
    finally:
        clock.remove()
    return times
