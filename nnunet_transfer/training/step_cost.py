"""One nnU-Net training step of a network under a strategy, timed: the measurement behind the
benchmark scripts (strategies, architectures).

The step is nnUNetTrainer.train_step's: nnU-Net's Dice + CE loss (with its deep-supervision
weights when the network has deep supervision), backward, gradient clipping at 12, SGD with
nesterov momentum over the parameters that train, frozen parts in eval mode, exactly as the
strategy trainers freeze them (`apply_strategy`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from nnunet_transfer.training.freezing import (
    apply_strategy, keep_frozen_in_eval_mode, trainable_parameters)


def nnunet_loss(n_outputs: int) -> nn.Module:
    """nnU-Net's training loss for `n_outputs` outputs (1: no deep supervision)."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    loss = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
                          {}, weight_ce=1, weight_dice=1, ignore_label=None,
                          dice_class=MemoryEfficientSoftDiceLoss)
    if n_outputs == 1:
        return loss
    weights = [1 / 2 ** i for i in range(n_outputs)]
    weights[-1] = 0  # as nnUNetTrainer._build_loss
    return DeepSupervisionWrapper(loss, [w / sum(weights) for w in weights])


@dataclass
class StepTimes:
    """Seconds per step, and per step the seconds spent in the forward of the encoder."""

    steps: list[float] = field(default_factory=list)
    encoder_forward: list[float] = field(default_factory=list)


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
                        before_steps=None) -> StepTimes:
    """Time `steps` training steps (after `warmup`) of `network` with `frozen_parts` frozen.

    `time_encoder_forward` adds forward hooks timing the encoder (StepTimes.encoder_forward);
    `before_steps()`, when given, is called once everything is allocated, just before the
    first step (the memory benchmark reads its baseline there)."""
    torch.manual_seed(seed)
    parts = apply_strategy(network, frozen_parts, random_init=random_init)
    optimizer = torch.optim.SGD(trainable_parameters(network), 0.01, weight_decay=3e-5,
                                momentum=0.99, nesterov=True)
    data = torch.randn(batch, in_channels, *patch)
    with torch.no_grad():
        outputs = network(data)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    targets = [torch.randint(0, classes, (batch, 1, *o.shape[2:])).float() for o in outputs]
    loss_fn = nnunet_loss(len(outputs))
    clock = ForwardClock(parts.modules["encoder"] if time_encoder_forward else [])
    times = StepTimes()
    if before_steps is not None:
        before_steps()
    try:
        for step in range(warmup + steps):
            network.train()
            keep_frozen_in_eval_mode(parts, frozen_parts)
            clock.seconds = 0.0
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            output = network(data)
            loss = loss_fn(output, targets) if len(targets) > 1 else loss_fn(
                output[0] if isinstance(output, (list, tuple)) else output, targets[0])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
            optimizer.step()
            if step >= warmup:
                times.steps.append(time.perf_counter() - started)
                times.encoder_forward.append(clock.seconds)
    finally:
        clock.remove()
    return times
