"""nnU-Net's optimizer and learning-rate schedule over a phase's parameter groups.

Every phase gets a new SGD (nnU-Net's: momentum 0.99, Nesterov, its weight decay) over the
parameters that train in it, one group per learning-rate multiplier. The poly schedule runs over
the whole run, not per phase: the learning rate of a group in epoch e is
initial_lr x multiplier x (1 - e / num_epochs) ** 0.9 x the phase's warm-up factor.

Momentum at a phase change: a parameter that trains in both phases keeps its momentum buffer
(its updates go on as before, only its learning rate may change); a parameter that starts to
train starts without one, as at the start of any nnU-Net run (SGD's first step sets the buffer
to the gradient). A frozen parameter is in no group, so nothing (momentum, weight decay) moves it.
"""

from __future__ import annotations

import torch

from nnunet_transfer.training.schedule import ResolvedPhase


def phase_optimizer(groups: list[dict], initial_lr: float, weight_decay: float,
                    previous: torch.optim.Optimizer | None = None) -> torch.optim.SGD:
    """SGD over `groups` ({"params", "multiplier"}), with the momentum of `previous` carried
    over for the parameters it also trained."""
    optimizer = torch.optim.SGD([dict(g, lr=initial_lr * g["multiplier"]) for g in groups],
                                initial_lr, weight_decay=weight_decay, momentum=0.99,
                                nesterov=True)
    if previous is not None:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if parameter in previous.state:
                    optimizer.state[parameter] = previous.state[parameter]
    return optimizer


def describe_groups(optimizer: torch.optim.Optimizer) -> str:
    """The groups for the training log: parameter values and LR multiplier of each."""
    return "; ".join(f"{sum(p.numel() for p in g['params'])} parameters at LR x"
                     f"{g['multiplier']:.4g}" for g in optimizer.param_groups)


class PhasePolyLR:
    """nnU-Net's poly learning rate, per group multiplier and with the phase's warm-up; set for
    epoch 0 of the phase on creation (nnU-Net calls `step(epoch)` at each epoch start)."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, num_epochs: int,
                 phase: ResolvedPhase, exponent: float = 0.9):
        self.optimizer, self.initial_lr, self.num_epochs = optimizer, initial_lr, num_epochs
        self.phase, self.exponent = phase, exponent
        self.step(phase.start)

    def learning_rate(self, epoch: int, multiplier: float) -> float:
        poly = (1 - min(epoch, self.num_epochs) / self.num_epochs) ** self.exponent
        return self.initial_lr * multiplier * poly * self.phase.warmup_factor(epoch)

    def step(self, current_step: int | None = None) -> None:
        epoch = self.phase.start if current_step is None else current_step
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(epoch, group["multiplier"])
