"""Training a network a few steps under a strategy, and the check that it moved exactly the
parts the strategy trains (shared by the freezing tests and the architecture contract)."""

from __future__ import annotations

import torch

from nnunet_transfer.training.freezing import keep_frozen_in_eval_mode, trainable_parameters

from support.networks import batch
from support.script_modules import apply_strategy


def train_steps(network, parts, frozen, steps=3, inputs=batch):
    """SGD steps on a loss of every output; `inputs()` gives each step's batch."""
    optimizer = torch.optim.SGD(trainable_parameters(network), 0.1, momentum=0.99, nesterov=True,
                                weight_decay=0.1)  # large decay: would move anything it touched
    for _ in range(steps):
        network.train()
        keep_frozen_in_eval_mode(parts, frozen)
        optimizer.zero_grad(set_to_none=True)
        outputs = network(inputs())
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        sum(o.square().mean() for o in outputs).backward()
        optimizer.step()
    return optimizer


def assert_strategy_moves_exactly_its_trained_parts(network, strategy, inputs) -> None:
    """Three SGD steps under `strategy` on `network` (`inputs()`: a batch): the frozen parts
    get no gradient, are in no optimizer group and keep every tensor (norm statistics
    included); every weight of a trained part moves."""
    parts = apply_strategy(network, strategy.frozen_parts, random_init=False)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    optimizer = train_steps(network, parts, strategy.frozen_parts, inputs=inputs)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for part in ("encoder", "decoder", "head"):
        params = parts.parameters(part)
        if part in strategy.frozen_parts:
            assert not any(id(p) in in_optimizer for p in params), part
            assert all(p.grad is None for p in params), part
        else:
            assert all(id(p) in in_optimizer for p in params), part
    named = dict(network.named_parameters())
    for key, part in parts.state_dict_parts(network).items():
        same = torch.equal(before[key], network.state_dict()[key])
        if part in strategy.frozen_parts:
            assert same, key
        elif key in named and named[key].ndim >= 2:
            assert not same, key
