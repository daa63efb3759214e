"""Autofocus network: shared-weight dilated branches, attention over the rates, layout."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from nnunet_transfer.architectures import partition
from nnunet_transfer.architectures.autofocus import AutofocusConv, AutofocusNet, dilated_conv3d
from nnunet_transfer.architectures.registry import architecture_entry
from nnunet_transfer.errors import UserError

from support.networks import AUTOFOCUS_RATES, autofocus_layer
from support.small_architectures import autofocus


def test_attention_weights_are_a_distribution_over_the_rates_at_every_voxel():
    x = torch.randn(2, 4, 6, 7, 5)
    weights = autofocus_layer().attention_weights(x)
    assert weights.shape == (2, len(AUTOFOCUS_RATES), 6, 7, 5)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 6, 7, 5))
    assert weights.std(dim=1).mean() > 0  # not a constant split


def test_branches_share_one_convolution_applied_at_each_rate():
    af = autofocus_layer()
    convs = [m for m in af.modules() if isinstance(m, torch.nn.Conv3d) and m.out_channels == 3]
    assert convs == [af.conv]  # one set of branch weights, whatever the number of rates
    assert len(af.norms) == len(AUTOFOCUS_RATES)  # but one norm per branch
    x = torch.randn(1, 4, 20, 24, 18)
    branches = af.branches(x)
    for rate, branch in zip(AUTOFOCUS_RATES, branches):
        expected = F.conv3d(x, af.conv.weight, af.conv.bias, padding=rate, dilation=rate)
        torch.testing.assert_close(branch, expected)
    # changing the shared weights changes every branch
    with torch.no_grad():
        af.conv.weight.mul_(2)
    for old, new in zip(branches, af.branches(x)):
        torch.testing.assert_close(new - af.conv.bias.view(1, -1, 1, 1, 1),
                                   2 * (old - af.conv.bias.view(1, -1, 1, 1, 1)))


def test_output_is_the_attention_weighted_sum_of_the_normalised_branches():
    af = autofocus_layer()
    x = torch.randn(2, 4, 8, 9, 7)
    weights = af.attention_weights(x)
    expected = sum(weights[:, k:k + 1] * norm(branch)
                   for k, (norm, branch) in enumerate(zip(af.norms, af.branches(x))))
    torch.testing.assert_close(af(x), expected)
    # an attention that picks rate k alone makes the layer that branch
    for k in range(len(AUTOFOCUS_RATES)):
        with torch.no_grad():
            af.attention[-1].weight.zero_()
            chosen = torch.arange(len(AUTOFOCUS_RATES)) == k
            af.attention[-1].bias.copy_(torch.where(chosen, 50.0, -50.0))
        torch.testing.assert_close(af(x), af.norms[k](af.branches(x)[k]))


@pytest.mark.parametrize("kernel", [(3, 3, 3), (1, 3, 3)])
def test_fast_cpu_path_equals_the_dilated_convolution_in_value_and_gradient(kernel):
    torch.manual_seed(1)
    double = {"dtype": torch.float64, "requires_grad": True}  # no rounding to tell them apart
    x = torch.randn(2, 3, 7, 9, 5, **double)
    weight = torch.randn(4, 3, *kernel, **double)
    bias = torch.randn(4, **double)
    for rate in (1, 2, 3, 6, 9):
        padding = [rate * (k - 1) // 2 for k in kernel]
        expected = F.conv3d(x, weight, bias, padding=padding, dilation=rate)
        result = dilated_conv3d(x, weight, bias, rate)
        torch.testing.assert_close(result, expected)
        target = torch.randn_like(expected)
        want = torch.autograd.grad((expected * target).sum(), (x, weight, bias))
        got = torch.autograd.grad((result * target).sum(), (x, weight, bias))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


def test_attention_learns_from_the_loss_but_sends_no_gradient_below_it_unless_asked():
    for stop, reaches_input in ((True, False), (False, True)):
        af = autofocus_layer(stop_gradient=stop)
        x = torch.randn(1, 4, 6, 6, 6, requires_grad=True)
        af.attention_weights(x)[:, 0].square().sum().backward()
        assert (x.grad is not None and x.grad.abs().sum() > 0) == reaches_input
        assert af.attention[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("layers_per_block", [1, 2])
def test_autofocus_layers_sit_at_the_bottleneck_and_in_every_decoder_stage(layers_per_block):
    network = autofocus(layers_per_block)
    located = [name for name, m in network.named_modules() if isinstance(m, AutofocusConv)]
    per_block = ["block.second"] if layers_per_block == 1 else ["block.first.0", "block.second"]
    assert located == (
        [f"encoder.stages.2.1.{p[len('block.'):]}" for p in per_block]
        + [f"decoder.stages.{s}.{p}" for s in range(2) for p in per_block])
    patch = (4, 16, 16)
    x = torch.randn(2, 1, *patch)
    out = network(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, *patch)
    network.decoder.deep_supervision = True  # no deep supervision in the paper: one output
    assert [o.shape for o in network(x)] == [out.shape]


def test_split_and_analysis_layers_follow_the_docstring():
    network = autofocus()
    parts = partition(network)
    ids = {part: {id(p) for p in parts.parameters(part)} for part in ("encoder", "decoder", "head")}
    assert ids["encoder"] == {id(p) for p in network.encoder.parameters()}
    assert ids["head"] == {id(p) for p in network.decoder.seg_layers.parameters()}
    bottleneck = network.encoder.stages[-1]
    assert all(id(p) in ids["encoder"] for p in bottleneck.parameters())
    assert network.analysis_layers() == {
        "encoder": ["encoder.stages.0", "encoder.stages.1", "encoder.stages.2"],
        "decoder": ["decoder.stages.1", "decoder.stages.0.block.first", "decoder.stages.0"]}
    two = autofocus(strides=((1, 1, 1), (2, 2, 2)))
    modules = dict(two.named_modules())
    for names in two.analysis_layers().values():
        assert len(set(names)) == 3 and all(name in modules for name in names)


def test_template_defaults_are_the_papers_rates():
    plans = {"n_stages": 4, "features_per_stage": [8, 16, 32, 64],
             "strides": [[1, 1, 1]] + [[2, 2, 2]] * 3, "kernel_sizes": [[3, 3, 3]] * 4}
    arch = architecture_entry("autofocus", plans, [40, 56, 40])["arch_kwargs"]
    assert arch["dilations"] == [2, 6, 10, 14]
    assert arch["attention_stop_gradient"] is True


def test_settings_it_cannot_use_are_refused():
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    kernels = [[3, 3, 3]] * 3
    common = dict(n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=kernels)
    AutofocusNet.check_patch_size([12, 12, 12], strides, **common)  # 3 voxels > rate 2
    with pytest.raises(UserError, match="patch size .* bottleneck"):
        AutofocusNet.check_patch_size([8, 12, 12], strides, **common)  # 2 voxels on axis 0
    AutofocusNet.check_patch_size([8, 12, 12], strides, dilations=[1, 2], **common)
    for bad in ([2], [2, 2], [0, 2], [1.5, 3], "26"):
        with pytest.raises(UserError, match="dilations"):
            AutofocusNet.check_patch_size([16, 16, 16], strides, dilations=bad, **common)
    with pytest.raises(UserError, match="layers_per_block"):
        AutofocusNet(1, 2, strides=strides, layers_per_block=3, **common)
    with pytest.raises(UserError, match="patch size"):
        AutofocusNet.check_patch_size([8, 8, 8], [[1, 1, 1]], n_stages=1,
                                      features_per_stage=[4], kernel_sizes=kernels[:1])
