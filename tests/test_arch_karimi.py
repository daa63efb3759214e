"""KarimiNet: the paper's layer counts, the residual wiring of the encoder, the concatenation
convolution split in two, and the cheap frozen-encoder step it is there for."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nnunet_transfer.architectures.karimi import ConcatConv, KarimiNet
from nnunet_transfer.architectures.registry import architecture_entry
from nnunet_transfer.errors import UserError

from support.small_architectures import KARIMI_ISOTROPIC, karimi
from support.script_modules import apply_strategy


def conv_layers(module: nn.Module) -> int:
    """Convolution layers as the paper counts them: a ConcatConv (two nn.Conv3d) is one."""
    modules = list(module.modules())
    convs = sum(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) for m in modules)
    return convs - sum(isinstance(m, ConcatConv) for m in modules)


def test_layer_counts_and_widths_at_the_papers_five_stages():
    net = karimi(n_stages=5, base=14)
    assert conv_layers(net.encoder) == 33
    assert conv_layers(net.decoder) + conv_layers(net.head) == 17  # the paper: 18
    assert [stage.entry[0].out_channels for stage in net.encoder.stages] == [14, 28, 56, 112, 224]
    assert [len(stage.units) for stage in net.encoder.stages] == [3, 3, 2, 2, 2]
    assert all(isinstance(m, nn.ReLU) for m in net.modules()
               if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.PReLU)))
    assert sum(p.numel() for p in net.parameters()) == 10_280_538


def test_identity_units_leave_the_long_skip_and_the_extra_connection():
    """With the last norm of every residual unit zeroed, each unit is the identity (short
    skip), so a stage returns entry + entry (long skip) + pooled previous map (extra
    connection, from the second stage on)."""
    torch.manual_seed(0)
    net = karimi(n_stages=3, base=4)
    for stage in net.encoder.stages:
        for unit in stage.units:
            nn.init.zeros_(unit.norm2.weight)
            nn.init.zeros_(unit.norm2.bias)
    x = torch.randn(1, 1, 8, 12, 8)
    with torch.no_grad():
        first, second = net.encoder.stages[0], net.encoder.stages[1]
        out0 = first(x)
        torch.testing.assert_close(out0, 2 * first.entry(x))
        assert first.shortcut is None
        expected = 2 * second.entry(out0) + second.shortcut(out0)
        torch.testing.assert_close(second(out0), expected)
        assert second.shortcut(out0).abs().sum() > 0


def test_concat_conv_is_one_convolution_over_the_concatenation():
    torch.manual_seed(0)
    net = karimi(n_stages=2, base=4)
    net.apply(net.initialize)
    fuse = net.decoder.stages[0].fuse.conv
    up, skip = torch.randn(2, 4, 6, 6, 6), torch.randn(2, 4, 6, 6, 6)
    whole = nn.functional.conv3d(
        torch.cat([up, skip], 1),
        torch.cat([fuse.conv_up.weight, fuse.conv_skip.weight], 1), fuse.conv_up.bias, padding=1)
    torch.testing.assert_close(fuse(up, skip), whole)
    assert fuse.conv_skip.bias is None
    # Drawn as one convolution with 8 * 27 inputs, not as two with 4 * 27 each.
    big = KarimiNet(1, 2, n_stages=2, features_per_stage=[32, 64], **{
        k: v[:2] for k, v in KARIMI_ISOTROPIC.items()})
    torch.manual_seed(1)
    big.apply(big.initialize)
    conv = big.decoder.stages[0].fuse.conv
    weights = torch.cat([conv.conv_up.weight.flatten(), conv.conv_skip.weight.flatten()])
    assert weights.std().item() == pytest.approx((2 / (64 * 27)) ** 0.5, rel=0.05)


def step_flops(net: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        net(x).square().mean().backward()
    return counter.get_total_flops()


def test_frozen_random_encoder_step_costs_well_under_the_full_step():
    """The work model behind the benchmark target (<= 0.62x the full step's time), counted on
    the meta device at the benchmark's setting (batch 2, 40x56x40, four stages): the encoder
    carries most of the forward work, and with it frozen the decoder computes no input
    gradient for the skips."""
    x = torch.randn(2, 1, 40, 56, 40, device="meta")
    full = karimi(n_stages=4, base=14).to("meta")
    frozen = karimi(n_stages=4, base=14)
    apply_strategy(frozen, frozenset({"encoder"}), random_init=True)
    frozen.to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        full.encoder(x)
    encoder_forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        full(x)
    assert encoder_forward / counter.get_total_flops() > 0.6
    assert step_flops(frozen, x) / step_flops(full, x) < 0.57

    skips = frozen.encoder(x)
    assert not any(s.requires_grad for s in skips)
    stage = frozen.decoder.stages[-1]
    out = stage.fuse.conv(stage.upsample(torch.randn(2, 28, 20, 28, 20, device="meta")),
                          skips[0])
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    # Weight gradients of both halves and the input gradient of the up-sampled half only;
    # one concatenated convolution would also pay the skip half's input gradient (2x).
    fuse_forward = 2 * 14 * 27 * (14 + 14) * 2 * 40 * 56 * 40
    assert counter.get_total_flops() <= 1.5 * fuse_forward + 2 * 14 * 28 * 2 * 40 * 56 * 40


def test_plans_kernels_and_strides_are_followed():
    net = karimi(n_stages=4, base=4, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                 kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]])
    first_stage = [m for m in net.encoder.stages[0].modules() if isinstance(m, nn.Conv3d)]
    assert {m.kernel_size for m in first_stage} == {(1, 3, 3)}
    assert net.encoder.stages[1].entry[0].stride == (1, 2, 2)
    assert net.decoder.stages[-1].upsample.stride == (1, 2, 2)
    assert net.decoder.stages[-1].fuse.conv.conv_skip.kernel_size == (1, 3, 3)


def test_analysis_layers_need_two_decoder_convolutions_per_stage():
    with pytest.raises(UserError, match="decoder_convs_per_stage >= 2"):
        karimi(n_stages=3, decoder_convs_per_stage=1)


@pytest.mark.parametrize("change, message", [
    ({"strides": [[2, 2, 2]] + [[2, 2, 2]] * 3}, "full resolution"),
    ({"kernel_sizes": [[3, 3, 3], [2, 2, 2], [3, 3, 3], [3, 3, 3]]}, "odd"),
    ({"units_per_stage": [3, 3]}, "units_per_stage"),
])
def test_settings_it_cannot_build_are_refused_at_plan_time(change, message):
    strides = [[1, 1, 1]] + [[2, 2, 2]] * 3
    base = {"n_stages": 4, "features_per_stage": [8, 16, 32, 64], "strides": strides,
            "kernel_sizes": [[3, 3, 3]] * 4, "conv_op": "torch.nn.modules.conv.Conv3d",
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}
    with pytest.raises(UserError, match=message):
        KarimiNet.check_patch_size([32, 32, 32], change.get("strides", strides),
                                   **{k: v for k, v in {**base, **change}.items()
                                      if k != "strides"})
    entry = architecture_entry("karimi", base, [32, 32, 32])["arch_kwargs"]
    assert entry["units_per_stage"] == [3, 3, 2, 2, 2] and entry["nonlin"] == "torch.nn.ReLU"
