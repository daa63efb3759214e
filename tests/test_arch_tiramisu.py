"""FC-DenseNet / Tiramisu (Jegou et al. 2017): what its docstring promises beyond the shared
contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_transfer.architectures.conv_settings import ConvSettings
from nnunet_transfer.architectures.registry import architecture_entry, template
from nnunet_transfer.architectures.tiramisu import Tiramisu, TransitionUp

from support.architecture_checks import PLANS, assert_template_setting_refused
from support.small_architectures import tiramisu


def fc_densenet_2d(growth_rate, layers) -> Tiramisu:
    """The paper's 2D networks (RGB in, 11 CamVid classes, 48 first maps, 5 poolings):
    1x3x3 kernels and 1x2x2 strides make every layer a 2D one."""
    return tiramisu(6, 48, growth_rate, layers, input_channels=3, num_classes=11,
                    strides=[[1, 1, 1]] + [[1, 2, 2]] * 5, kernel_sizes=[[1, 3, 3]] * 6)


def test_fc_densenet103_feature_maps_and_parameters_as_in_the_paper():
    network = fc_densenet_2d(16, [4, 5, 7, 10, 12, 15])
    # Table 2 of the paper: 48 maps, then 112, 192, 304, 464, 656 after each block of the
    # down path; the bottleneck passes 240 maps; the last block ends with m = 256.
    assert network.encoder.skip_channels == [112, 192, 304, 464, 656]
    assert network.encoder.out_channels == 240
    assert [up.in_channels for up in network.decoder.ups] == [240, 192, 160, 112, 80]
    assert [b.layers[0].norm.num_features for b in network.decoder.blocks] == [
        896, 656, 464, 304, 192]
    assert network.head.in_channels == 256
    n_layers = 1 + (4 + 5 + 7 + 10 + 12) + 5 + 15 + 5 + (12 + 10 + 7 + 5 + 4) + 1
    convs = [m for m in network.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert n_layers == len(convs) == 103
    # 9.4M parameters in the paper, which counted batch norm's running mean and variance too
    trainable = sum(p.numel() for p in network.parameters())
    norm_channels = sum(m.num_features for m in network.modules()
                        if isinstance(m, nn.InstanceNorm3d))
    assert trainable == 9_322_091
    assert round((trainable + 2 * norm_channels) / 1e6, 1) == 9.4


def test_fc_densenet67_parameters_as_in_the_paper():
    network = fc_densenet_2d(16, [5] * 6)
    trainable = sum(p.numel() for p in network.parameters())
    norm_channels = sum(m.num_features for m in network.modules()
                        if isinstance(m, nn.InstanceNorm3d))
    assert round((trainable + 2 * norm_channels) / 1e6, 1) == 3.5


def test_template_keeps_it_small_and_uses_relu():
    spec = template("tiramisu")
    assert spec["arch_kwargs"]["growth_rate"] == 12
    assert spec["arch_kwargs"]["layers_per_block"] == [3] * 5
    assert spec["arch_kwargs"]["nonlin"] == "torch.nn.ReLU"
    assert spec["features"]["base"] == 24
    entry = architecture_entry("tiramisu", PLANS["isotropic"][1], PLANS["isotropic"][0])
    network = Tiramisu(2, 3, **entry["arch_kwargs"])
    assert network.encoder.first_conv.out_channels == 24
    assert sum(p.numel() for p in network.parameters()) < 1_000_000


def capture(network, names):
    """Inputs and outputs of the named modules during one forward pass."""
    seen, modules = {}, dict(network.named_modules())
    for name in names:
        modules[name].register_forward_hook(
            lambda m, i, o, name=name: seen.update({name: (i[0], o)}))
    return seen


def test_dense_layers_take_the_block_input_and_all_earlier_layers():
    torch.manual_seed(0)
    network = tiramisu(3).eval()
    block = "encoder.blocks.1"
    names = [block] + [f"{block}.layers.{j}" for j in range(3)]
    seen = capture(network, names)
    with torch.no_grad():
        network(torch.randn(1, 1, 8, 8, 8))
    block_in, block_out = seen[block]
    outs = [seen[f"{block}.layers.{j}"][1] for j in range(3)]
    for j in range(3):
        assert torch.equal(seen[f"{block}.layers.{j}"][0], torch.cat([block_in, *outs[:j]], 1))
    # the block returns the new maps only: 3 layers x growth 3
    assert torch.equal(block_out, torch.cat(outs, 1)) and block_out.shape[1] == 9


def test_down_path_concatenates_and_up_path_keeps_only_new_maps():
    torch.manual_seed(0)
    network = tiramisu(3).eval()
    names = ["encoder.blocks.0", "encoder.downs.0", "encoder.blocks.2", "decoder.ups.0",
             "decoder.blocks.0", "decoder.ups.1", "decoder.blocks.1", "head"]
    seen = capture(network, names)
    with torch.no_grad():
        network(torch.randn(1, 1, 8, 8, 8))
    first_maps = seen["encoder.blocks.0"][0]
    skip0 = torch.cat([first_maps, seen["encoder.blocks.0"][1]], 1)
    assert torch.equal(seen["encoder.downs.0"][0], skip0)
    # transitions up see the previous block's new maps only
    assert torch.equal(seen["decoder.ups.0"][0], seen["encoder.blocks.2"][1])
    assert torch.equal(seen["decoder.ups.1"][0], seen["decoder.blocks.0"][1])
    # the full-resolution up block takes [up-sampled maps, skip]; the head gets it and its maps
    up_block_in = seen["decoder.blocks.1"][0]
    assert torch.equal(up_block_in, torch.cat([seen["decoder.ups.1"][1], skip0], 1))
    assert torch.equal(seen["head"][0], torch.cat([up_block_in, seen["decoder.blocks.1"][1]], 1))
    assert network.head.kernel_size == (1, 1, 1)


@pytest.mark.parametrize("stride", [(1, 2, 2), (2, 2, 2), (3, 1, 2), (4, 4, 1)])
def test_transition_up_multiplies_the_size_by_the_stride(stride):
    up = TransitionUp(ConvSettings(), 2, stride)
    assert up.kernel_size == tuple(2 * s - 1 for s in stride)
    out = up(torch.randn(1, 2, 3, 5, 4))
    assert out.shape[2:] == tuple(n * s for n, s in zip((3, 5, 4), stride))


def test_anisotropic_plans_pool_and_convolve_per_axis():
    network = tiramisu(3, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                       kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]])
    assert network.encoder.downs[0].pool.kernel_size == (1, 2, 2)
    assert network.encoder.downs[0].pool.stride == (1, 2, 2)
    assert network.encoder.blocks[0].layers[0].conv.kernel_size == (1, 3, 3)
    assert network.decoder.ups[1].kernel_size == (1, 3, 3)
    with torch.no_grad():
        assert network(torch.randn(1, 1, 6, 12, 8)).shape == (1, 2, 6, 12, 8)


def test_dropout_acts_in_training_only_and_can_be_switched_off():
    torch.manual_seed(0)
    network = tiramisu(3, dropout_p=0.5)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert not torch.equal(network(x), network(x))
        network.eval()
        assert torch.equal(network(x), network(x))
    assert not any(isinstance(m, nn.Dropout) for m in tiramisu(3, dropout_p=0.0).modules())


def test_layers_per_block_is_cut_to_the_plans_stages():
    network = tiramisu(3, layers=(2, 3, 4, 5, 6))
    assert [len(b.layers) for b in network.encoder.blocks] == [2, 3, 4]
    assert [len(b.layers) for b in network.decoder.blocks] == [3, 2]


@pytest.mark.parametrize("override, message", [
    ({"layers_per_block": [3, 3]}, "layers_per_block"),
    ({"layers_per_block": [3, 0, 3, 3, 3]}, "layers_per_block"),
    ({"growth_rate": 0}, "growth_rate"),
    ({"dropout_p": 1.0}, "dropout_p"),
])
def test_bad_settings_are_refused_at_plan_time(override, message, monkeypatch):
    assert_template_setting_refused("tiramisu", override, message, monkeypatch)
