"""V-Net (Milletari et al. 2016): what its docstring promises beyond the shared contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_transfer.architectures import partition
from nnunet_transfer.architectures.registry import template
from nnunet_transfer.architectures.vnet import VNet
from nnunet_transfer.errors import UserError

from support.architecture_checks import assert_template_setting_refused
from support.small_architectures import vnet


def conv_norm_act(cin: int, cout: int, kernel_volume: int) -> int:
    # weights + bias, instance norm scale and shift, one PReLU slope per channel
    return cin * cout * kernel_volume + cout + 2 * cout + cout


def test_parameter_count_at_the_papers_settings():
    """One channel in, two classes, 16..256 maps, five stages of 1, 2, 3, 3, 3 5x5x5
    convolutions, 2x2x2 strided and transposed convolutions; right half at 2 F_i maps."""
    features, convs = [16, 32, 64, 128, 256], [1, 2, 3, 3, 3]
    network = vnet(5, features, 1, 2, kernel_sizes=[[3, 3, 3]] * 5,
                   convs_per_stage=convs)
    expected = conv_norm_act(1, 16, 125)
    for i in range(1, 5):
        expected += conv_norm_act(features[i - 1], features[i], 8)
        expected += convs[i] * conv_norm_act(features[i], features[i], 125)
    for level in range(3, -1, -1):
        up_in = features[4] if level == 3 else 2 * features[level + 1]
        expected += conv_norm_act(up_in, features[level], 8)
        expected += convs[level] * conv_norm_act(2 * features[level], 2 * features[level], 125)
    expected += 32 * 2 + 2
    assert sum(p.numel() for p in network.parameters()) == expected
    # right half: 256, 128, 64, 32 maps with 3, 3, 2, 1 convolutions, as the paper's figure
    widths = [stage.block.convs[0].conv.out_channels for stage in network.decoder.stages]
    depths = [len(stage.block.convs) for stage in network.decoder.stages]
    assert widths == [256, 128, 64, 32] and depths == [3, 3, 2, 1]


def test_template_gives_the_papers_widths_kernels_and_prelu():
    spec = template("vnet")
    assert spec["features"] == {"base": 16, "max": 256} and spec["max_stages"] == 5
    assert spec["arch_kwargs"]["kernel_size"] == 5
    assert spec["arch_kwargs"]["convs_per_stage"] == [1, 2, 3, 3, 3]
    assert spec["arch_kwargs"]["nonlin"] == "torch.nn.PReLU"


def test_kernels_follow_the_plans_strides_and_unit_axes():
    network = vnet(3, kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                   strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    convs = {name: m for name, m in network.named_modules() if isinstance(m, nn.Conv3d)}
    assert convs["encoder.stages.0.convs.0.conv"].kernel_size == (1, 5, 5)
    assert convs["encoder.stages.1.block.convs.0.conv"].kernel_size == (5, 5, 5)
    assert convs["decoder.stages.1.block.convs.0.conv"].kernel_size == (1, 5, 5)
    down = network.encoder.stages[1].down.conv
    assert down.kernel_size == down.stride == (1, 2, 2)
    up = network.decoder.stages[0].up.conv
    assert isinstance(up, nn.ConvTranspose3d) and up.kernel_size == up.stride == (2, 2, 2)
    with torch.no_grad():
        assert network(torch.randn(1, 1, 6, 12, 8)).shape == (1, 2, 6, 12, 8)


def silence_last_conv(block) -> None:
    """Zero the last conv-norm-PReLU's norm so that it outputs 0: the stage becomes its
    shortcut alone."""
    norm = block.convs[-1].norm
    nn.init.zeros_(norm.weight)
    nn.init.zeros_(norm.bias)


def test_stages_add_their_input_and_the_first_stage_tiles_the_image():
    torch.manual_seed(0)
    network = vnet(3, input_channels=3)  # 3 channels tiled over 4
    stage0 = network.encoder.stages[0]
    x = torch.randn(1, 3, 8, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(stage0(x), torch.cat([x, x[:, :1]], 1))
        silence_last_conv(stage0)
        assert torch.equal(stage0(x), torch.cat([x, x[:, :1]], 1))

        down_stage = network.encoder.stages[1]
        silence_last_conv(down_stage.block)
        y = torch.randn(1, 4, 8, 8, 8)
        assert torch.equal(down_stage(y), down_stage.down(y))


def test_up_stages_concatenate_the_encoder_output_and_add_the_concatenation():
    torch.manual_seed(0)
    network = vnet(3).eval()
    seen = {}
    network.encoder.stages[1].register_forward_hook(lambda m, i, o: seen.update(enc=o))
    network.decoder.stages[0].up.register_forward_hook(lambda m, i, o: seen.update(up=o))
    network.decoder.stages[0].block.register_forward_hook(
        lambda m, i, o: seen.update(block_in=i[0], block_out=o))
    silence_last_conv(network.decoder.stages[0].block)
    with torch.no_grad():
        network(torch.randn(1, 1, 8, 8, 8))
    assert seen["block_in"].shape[1] == 16  # 8 up-sampled + 8 forwarded maps
    assert torch.equal(seen["block_in"], torch.cat([seen["up"], seen["enc"]], 1))
    assert torch.equal(seen["block_out"], seen["block_in"])


def test_prelu_has_one_slope_per_channel_and_other_plans_nonlinearities_are_honoured():
    network = vnet(3)
    prelus = [m for m in network.modules() if isinstance(m, nn.PReLU)]
    assert prelus and all(m.num_parameters > 1 for m in prelus)
    assert network.encoder.stages[2].down.act.num_parameters == 16
    leaky = vnet(3, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    assert not any(isinstance(m, nn.PReLU) for m in leaky.modules())
    assert any(isinstance(m, nn.LeakyReLU) for m in leaky.modules())


def test_split_puts_the_deepest_stage_in_the_encoder_and_the_1x1x1_conv_in_the_head():
    network = vnet(3)
    parts = partition(network)
    assert parts.modules["head"] == (network.head,)
    assert network.head.kernel_size == (1, 1, 1)
    part_of = parts.part_of()
    assert {part_of[id(p)] for p in network.encoder.stages[-1].parameters()} == {"encoder"}
    assert {part_of[id(p)] for p in network.decoder.stages[0].up.parameters()} == {"decoder"}


@pytest.mark.parametrize("override, message", [
    ({"kernel_size": 4}, "odd"),
    ({"convs_per_stage": [1, 2]}, "convs_per_stage"),
    ({"convs_per_stage": [1, 0, 3, 3, 3]}, "convs_per_stage"),
])
def test_bad_settings_are_refused_at_plan_time(override, message, monkeypatch):
    assert_template_setting_refused("vnet", override, message, monkeypatch)
    with pytest.raises(UserError, match=message):
        vnet(3, **override)


def test_one_stage_plans_are_refused():
    with pytest.raises(UserError, match="at least 2 stages"):
        VNet.check_patch_size([8, 8, 8], [[1, 1, 1]], n_stages=1, kernel_sizes=[[3, 3, 3]])
