"""The contract every extra architecture meets, built exactly as nnU-Net builds it from the
configuration `add-architectures` writes: output shapes for patch sizes nnU-Net plans produce
(odd, anisotropic), deep-supervision outputs, gradient reaching every parameter, a complete
encoder / decoder / head split, existing analysis layers, and clear refusals."""

from __future__ import annotations

import pytest
import torch

from nnunet_transfer.architectures import partition
from nnunet_transfer.architectures.stage_settings import cumulative_strides
from nnunet_transfer.architectures.transfer_network import TransferNetwork
from nnunet_transfer.architectures.registry import (ARCHITECTURES, architecture_entry,
                                                    build_network, template)
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.strategies import ONE_PHASE_STRATEGIES

from support.architecture_checks import PLANS, base_kwargs, build
from support.freezing_checks import assert_strategy_moves_exactly_its_trained_parts


@pytest.mark.parametrize("plans", sorted(PLANS))
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_output_shapes_and_gradient_reach_every_parameter(name, plans):
    torch.manual_seed(0)
    network, patch = build(name, plans, deep_supervision=True)
    assert isinstance(network, TransferNetwork)
    x = torch.randn(1, 2, *patch)
    outputs = network(x)
    assert isinstance(outputs, list)
    assert outputs[0].shape == (1, 3, *patch)
    if type(network).has_deep_supervision:
        strides = PLANS[plans][1]["strides"][:network_stages(name)]
        expected = [tuple(p // f for p, f in zip(patch, factor))
                    for factor in cumulative_strides(strides)[:-1]]
        assert [tuple(o.shape[2:]) for o in outputs] == expected
        assert all(o.shape[:2] == (1, 3) for o in outputs)
    else:
        assert len(outputs) == 1
    sum(o.float().square().mean() for o in outputs).backward()
    # Every parameter is reached; every weight tensor gets a non-zero gradient (a conv bias
    # followed by instance norm has zero gradient in exact arithmetic, so only reachability).
    no_grad = [n for n, p in network.named_parameters() if p.grad is None
               or (p.ndim >= 2 and not torch.any(p.grad != 0))]
    assert no_grad == [], f"parameters without gradient: {no_grad[:5]}"

    network.decoder.deep_supervision = False
    with torch.no_grad():
        single = network(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, 3, *patch)


def network_stages(name) -> int:
    return architecture_entry(name, PLANS["isotropic"][1], PLANS["isotropic"][0]
                              )["arch_kwargs"]["n_stages"]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_split_covers_every_parameter_and_analysis_layers_exist(name):
    network, _ = build(name)
    parts = partition(network)  # raises when a parameter is in no part or in two
    for part in ("encoder", "decoder", "head"):
        assert parts.parameters(part), f"{name}: empty {part}"
    layers = network.analysis_layers()
    assert set(layers) == {"encoder", "decoder"}
    modules = dict(network.named_modules())
    part_of = parts.part_of()
    for part, names in layers.items():
        assert len(names) == 3 and len(set(names)) == 3
        for layer in names:
            assert layer in modules, f"{name}: no module {layer}"
            owned = {part_of[id(p)] for p in modules[layer].parameters()}
            assert owned == {part}, f"{name}: analysis layer {layer} lies in {owned}"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_any_number_of_input_channels_and_classes(name):
    network, patch = build(name, channels=1, classes=2)
    with torch.no_grad():
        assert network(torch.randn(1, 1, *patch)).shape == (1, 2, *patch)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_initialisation_is_seeded_and_he_scaled(name):
    torch.manual_seed(5)
    first, _ = build(name)
    torch.manual_seed(5)
    second, _ = build(name)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), key
    conv = next(m for m in first.modules() if isinstance(m, torch.nn.Conv3d)
                and m.weight[0].numel() >= 27)
    fan_in = conv.weight[0].numel()
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.25)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_patch_the_network_cannot_take_is_refused_at_plan_time(name):
    patch, kwargs = PLANS["isotropic"]
    with pytest.raises(UserError, match="patch size"):
        architecture_entry(name, kwargs, [33, 40, 32])
    with pytest.raises(UserError, match="patch size"):  # a single voxel at the coarsest stage
        architecture_entry(name, base_kwargs([[1, 1, 1]] + [[2, 2, 2]] * 2, [[3, 3, 3]] * 3),
                           [4, 8, 8])


def test_templates_name_their_class_and_reject_unknown_names():
    for name in ARCHITECTURES:
        assert template(name)["network_class_name"].startswith("nnunet_transfer.architectures.")
    with pytest.raises(UserError, match="unknown architecture 'unet3'"):
        template("unet3")


def test_2d_plans_are_refused():
    patch, kwargs = PLANS["isotropic"]
    kwargs = {**kwargs, "conv_op": "torch.nn.modules.conv.Conv2d"}
    with pytest.raises(UserError, match="3D"):
        build_network("weatheritt", kwargs, patch, 1, 2)


@pytest.mark.parametrize("strategy", ONE_PHASE_STRATEGIES, ids=lambda s: s.name)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_strategy_moves_exactly_its_trained_parts(name, strategy):
    """In-process, every strategy on every architecture (the end-to-end matrix through
    nnUNetv2_train runs a covering subset of these pairs)."""
    torch.manual_seed(0)
    patch = [16, 16, 16]
    kwargs = base_kwargs([[1, 1, 1], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3, features=(4, 8, 16))
    network = build_network(name, kwargs, patch, 1, 2, True)
    assert_strategy_moves_exactly_its_trained_parts(
        network, strategy, lambda: torch.randn(1, 1, *patch))
