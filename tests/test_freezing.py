"""Freezing on real nnU-Net networks, in-process: no gradient, no graph, no update, no stats."""

import pytest
import torch
from torch import nn

from nnunet_transfer.architectures import partition
from nnunet_transfer.training.freezing import (
    activate_zero_initialised_norms, freeze, stop_gradient_into_frozen_skips)
from nnunet_transfer.training.strategies import ONE_PHASE_STRATEGIES

from support.script_modules import apply_strategy
from support.freezing_checks import assert_strategy_moves_exactly_its_trained_parts, train_steps
from support.networks import batch, plain_unet, residual_unet


@pytest.mark.parametrize("strategy", ONE_PHASE_STRATEGIES, ids=lambda s: s.name)
@pytest.mark.parametrize("build", [plain_unet, residual_unet], ids=["plain", "residual"])
def test_frozen_parts_do_not_change_and_are_not_optimised(strategy, build):
    torch.manual_seed(0)
    assert_strategy_moves_exactly_its_trained_parts(build(), strategy, batch)


def _encoder_outputs(network):
    captured = []
    network.encoder.register_forward_hook(lambda m, i, o: captured.extend(o))
    return captured


def test_no_autograd_graph_through_frozen_encoder():
    network = plain_unet()
    apply_strategy(network, {"encoder"}, random_init=True)
    skips = _encoder_outputs(network)
    outputs = network(batch())
    assert skips and all(s.grad_fn is None and not s.requires_grad for s in skips)
    assert outputs[0].requires_grad  # the decoder and head still train


def test_frozen_decoder_still_passes_gradient_to_encoder():
    network = plain_unet()
    parts = partition(network)
    freeze(parts, {"decoder"})
    network(batch())[0].sum().backward()
    assert all(p.grad is not None for p in parts.parameters("encoder"))
    assert all(p.grad is None for p in parts.parameters("decoder"))


def test_normalisation_statistics_of_frozen_part_stay():
    network = plain_unet(norm_op=nn.BatchNorm3d)
    parts = partition(network)
    freeze(parts, {"encoder"})
    stats = lambda part: [b.clone() for m in parts.modules[part] for b in m.buffers()
                          if b.dtype.is_floating_point]
    encoder_before, decoder_before = stats("encoder"), stats("decoder")
    train_steps(network, parts, {"encoder"}, steps=2)
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, stats("encoder")))
    assert not all(torch.equal(a, b) for a, b in zip(decoder_before, stats("decoder")))


def test_random_frozen_residual_blocks_are_not_identities():
    torch.manual_seed(0)
    network = residual_unet()
    network.apply(network.initialize)  # nnU-Net's init: last norm of each block zeroed
    parts = partition(network)

    def zeroed():
        return [m for m in network.encoder.modules()
                if isinstance(m, nn.InstanceNorm3d) and not m.weight.any()]

    count = len(zeroed())
    assert count > 0
    image = batch()
    with torch.no_grad():
        before = network.encoder(image)[-1].clone()
        assert activate_zero_initialised_norms(parts, "encoder") == count
        after = network.encoder(image)[-1]
    assert not zeroed()
    assert not torch.allclose(before, after)  # the blocks now add their random features
    assert activate_zero_initialised_norms(parts, "decoder") == 0


@pytest.mark.parametrize("build", [plain_unet, residual_unet], ids=["plain", "residual"])
def test_skip_connections_without_gradient_compute_the_same(build):
    """The split decoder convs give the same outputs and decoder gradients, minus the skips'."""
    import copy
    torch.manual_seed(3)
    reference = build()
    fast = copy.deepcopy(reference)
    for network in (reference, fast):
        freeze(partition(network), {"encoder"})
    assert stop_gradient_into_frozen_skips(fast) == len(fast.decoder.stages)
    image = batch()
    outputs = [network(image) for network in (reference, fast)]
    for a, b in zip(*outputs):
        assert torch.allclose(a, b, atol=1e-5)
    for network, out in zip((reference, fast), outputs):
        sum(o.square().mean() for o in out).backward()
    for (name, a), b in zip(reference.decoder.named_parameters(), fast.decoder.parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name
    assert state_keys(reference) == state_keys(fast)  # nothing added to checkpoints


def state_keys(network):
    return list(network.state_dict())
