"""HRNet3D: s + 1 parallel streams in stage s at the plans' resolutions, all-to-all fusion after
every stage, the HRNetV2 head, its size, its split and analysis layers, and its refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_transfer.architectures import partition
from nnunet_transfer.architectures.conv_settings import ConvSettings
from nnunet_transfer.architectures.stage_settings import cumulative_strides
from nnunet_transfer.architectures.hrnet import (DownPath, HRNet3D, ResidualBlock, SameStream,
                                                 UpPath)
from nnunet_transfer.architectures.registry import architecture_entry, build_network, template
from nnunet_transfer.errors import UserError

from support.script_modules import apply_strategy

from support.small_architectures import (HRNET_KERNELS, HRNET_LAYERS, HRNET_PATCH,
                                         HRNET_STRIDES, hrnet)


def sizes(patch, strides):
    return [tuple(p // f for p, f in zip(patch, factor)) for factor in cumulative_strides(strides)]


def conv(i, o, k):
    """Parameters of a conv with bias (the plans' conv_bias)."""
    return i * o * k + o


def cna(i, o, k):
    return conv(i, o, k) + 2 * o  # conv + affine instance norm


def fusion(widths, kvol):
    total = 0
    for target, wt in enumerate(widths):
        for source, ws in enumerate(widths):
            if source > target:
                total += cna(ws, wt, 1)  # 1x1x1 conv + norm (no activation: no parameters)
            elif source < target:
                total += (target - source - 1) * cna(ws, ws, kvol) + cna(ws, wt, kvol)
    return total


def expected_parameters(in_channels, classes, widths, num_blocks, representation, kvol=27):
    """Parameter count of the structure the docstring describes, for 3x3x3 kernels."""
    n = len(widths)
    total = cna(in_channels, widths[0], kvol) + cna(widths[0], widths[0], kvol)  # stem
    for s in range(n):
        if s:
            total += cna(widths[s - 1], widths[s], kvol)  # new stream
        total += sum(num_blocks * (cna(w, w, kvol) + cna(w, w, kvol)) for w in widths[:s + 1])
        if 0 < s < n - 1:
            total += fusion(widths[:s + 1], kvol)
    total += fusion(widths, kvol) + cna(sum(widths), representation, 1)  # decoder
    return total + conv(representation, classes, 1)  # head


@pytest.mark.parametrize("widths,num_blocks,representation", [
    ((4, 8, 12, 16), 1, None), ((4, 8, 16), 2, 10), ((16, 32, 64, 128), 1, 64)])
def test_parameter_count_matches_the_described_structure(widths, num_blocks, representation):
    isotropic = [[1, 1, 1]] + [[2, 2, 2]] * 3
    net = hrnet(2, 3, widths, isotropic, [[3, 3, 3]] * 4, num_blocks=num_blocks,
                representation_features=representation)
    rep = representation or sum(widths)  # the paper's width: the sum of the stream widths
    assert sum(p.numel() for p in net.parameters()) == expected_parameters(
        2, 3, widths, num_blocks, rep)


def test_template_defaults_on_the_contract_plans():
    spec = template("hrnet")
    assert spec["max_stages"] == 4 and spec["features"] == {"base": 16, "max": 128}
    assert spec["arch_kwargs"] == {"num_blocks": 1, "upsampling": "trilinear",
                                   "representation_features": 64}
    kwargs = dict(n_stages=4, features_per_stage=[8, 16, 32, 64], strides=[[1, 1, 1]] +
                  [[2, 2, 2]] * 3, kernel_sizes=[[3, 3, 3]] * 4, n_conv_per_stage=[2] * 4,
                  n_conv_per_stage_decoder=[2] * 3, dropout_op=None, dropout_op_kwargs=None,
                  **HRNET_LAYERS)
    net = build_network("hrnet", kwargs, [24, 40, 24], 2, 3)
    widths = [16, 32, 64, 128]
    assert [net.encoder.stages[3].branches[r][0].conv2.out_channels for r in range(4)] == widths
    total = sum(p.numel() for p in net.parameters())
    assert total == expected_parameters(2, 3, widths, 1, 64) == 2_540_387
    counts = partition(net).parameter_counts()
    assert counts["head"]["trainable"] == 64 * 3 + 3
    assert counts["decoder"]["trainable"] == fusion(widths, 27) + cna(240, 64, 1)


def test_streams_live_at_the_plans_resolutions_with_the_plans_widths():
    net = hrnet()
    seen = {}
    for s, stage in enumerate(net.encoder.stages):
        stage.register_forward_hook(lambda m, i, out, s=s: seen.__setitem__(s, out))
    with torch.no_grad():
        net(torch.randn(1, 1, *HRNET_PATCH))
    expected = sizes(HRNET_PATCH, HRNET_STRIDES)
    for s in range(4):
        assert [tuple(x.shape[1:]) for x in seen[s]] == [
            (w, *size) for w, size in zip((4, 8, 12, 16)[:s + 1], expected[:s + 1])]
    # No 4x reduction in the stem: the first stream is at full resolution.
    assert expected[0] == HRNET_PATCH
    # The new stream of each stage is a strided conv with the plans' stride and kernel.
    for s in range(1, 4):
        new = net.encoder.stages[s].new_stream[0]
        assert list(new.stride) == HRNET_STRIDES[s] and list(new.kernel_size) == HRNET_KERNELS[s]
    # Every stream's residual blocks use that resolution's kernel (1x3x3 at full resolution).
    block = net.encoder.stages[3].branches[0][0]
    assert isinstance(block, ResidualBlock) and block.conv2.kernel_size == (1, 3, 3)


def test_every_fusion_connects_every_stream_to_every_resolution():
    net = hrnet()
    fusions = [stage.fuse for stage in net.encoder.stages]
    assert fusions[0] is None and fusions[-1] is None  # one stream; the last one is the decoder's
    fusions = fusions[1:-1] + [net.decoder.fuse]
    for fuse in fusions:
        n = len(fuse.outputs)
        for target, output in enumerate(fuse.outputs):
            assert len(output.paths) == n
            for source, path in enumerate(output.paths):
                if source == target:
                    assert isinstance(path, SameStream)
                elif source > target:
                    assert isinstance(path, UpPath) and path.conv.kernel_size == (1, 1, 1)
                else:
                    assert isinstance(path, DownPath)
                    convs = [m for m in path.modules() if isinstance(m, nn.Conv3d)]
                    assert [list(c.stride) for c in convs] == HRNET_STRIDES[source + 1:target + 1]
                    kernels = HRNET_KERNELS[source + 1:target + 1]
                    assert [list(c.kernel_size) for c in convs] == kernels
    # Functionally: a change in any one stream reaches every fused output.
    fuse = net.decoder.fuse
    shapes = sizes(HRNET_PATCH, HRNET_STRIDES)
    streams = [torch.randn(1, w, *s) for w, s in zip((4, 8, 12, 16), shapes)]
    with torch.no_grad():
        base = fuse(streams)
        for source in range(4):
            changed = list(streams)
            changed[source] = streams[source] + torch.randn_like(streams[source])
            after = fuse(changed)
            for target in range(4):
                assert after[target].shape == base[target].shape
                assert not torch.allclose(after[target], base[target]), (source, target)


def test_hrnetv2_head_concatenates_every_stream_at_full_resolution():
    net = hrnet(representation_features=None)
    assert net.decoder.representation[0].in_channels == 4 + 8 + 12 + 16
    assert net.decoder.representation[0].out_channels == 40  # the paper keeps the width
    assert net.decoder.representation[0].kernel_size == (1, 1, 1)
    assert net.head.kernel_size == (1, 1, 1)
    captured = {}
    net.decoder.fuse.register_forward_hook(lambda m, inputs, out: captured.update(fused=out))
    net.decoder.representation.register_forward_hook(
        lambda m, inputs, out: captured.update(concatenated=inputs[0]))
    with torch.no_grad():
        net(torch.randn(1, 1, *HRNET_PATCH))
    assert tuple(captured["concatenated"].shape) == (1, 40, *HRNET_PATCH)
    # The concatenation is every fused stream of the last stage, up-sampled (trilinear) to the
    # first stream's size, finest first.
    expected = torch.cat([nn.functional.interpolate(x, size=HRNET_PATCH, mode="trilinear")
                          for x in captured["fused"]], 1)
    assert torch.allclose(captured["concatenated"], expected, atol=1e-6)


def test_residual_blocks_add_their_input():
    block = ResidualBlock(ConvSettings(), 4, 3)
    nn.init.zeros_(block.norm2.weight)
    nn.init.zeros_(block.norm2.bias)
    x = torch.randn(1, 4, 5, 6, 7)
    with torch.no_grad():
        assert torch.allclose(block(x), nn.functional.leaky_relu(x, 0.01))


def test_split_and_analysis_layers():
    net = hrnet()
    parts = partition(net)
    assert parts.modules == {"encoder": (net.encoder,), "decoder": (net.decoder,),
                             "head": (net.head,)}
    layers = net.analysis_layers()
    assert layers == {
        "encoder": ["encoder.stem", "encoder.stages.1.branches.1", "encoder.stages.3.branches.3"],
        "decoder": ["decoder.fuse.outputs.3", "decoder.fuse.outputs.0", "decoder.representation"]}
    modules = dict(net.named_modules())
    captured = {}
    for name in layers["encoder"] + layers["decoder"]:
        modules[name].register_forward_hook(
            lambda m, i, out, name=name: captured.update({name: out}))
    with torch.no_grad():
        net(torch.randn(1, 1, *HRNET_PATCH))
    full, half, _, eighth = sizes(HRNET_PATCH, HRNET_STRIDES)
    shapes = [tuple(captured[n].shape[1:]) for n in layers["encoder"] + layers["decoder"]]
    assert shapes == [(4, *full), (8, *half), (16, *eighth),
                      (16, *eighth), (4, *full), (40, *full)]
    # Two stages give three distinct layers too.
    two = hrnet(widths=(4, 8)).analysis_layers()
    assert len(set(two["encoder"])) == 3 and len(set(two["decoder"])) == 3


def test_frozen_encoder_sends_no_gradient_into_it():
    net = hrnet()
    net.apply(net.initialize)
    apply_strategy(net, {"encoder"}, random_init=True)
    net(torch.randn(1, 1, *HRNET_PATCH)).square().mean().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert all(p.grad is not None for p in (*net.decoder.parameters(), *net.head.parameters()))


def test_a_first_stride_above_one_still_gives_full_resolution_logits():
    net = hrnet(widths=(4, 8), strides=[[1, 2, 2], [2, 2, 2]], kernels=[[3, 3, 3]] * 2)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 8, 16, 16)).shape == (1, 2, 8, 16, 16)


def test_refusals():
    kwargs = dict(n_stages=4, features_per_stage=[4, 8, 12, 16], kernel_sizes=HRNET_KERNELS,
                  **HRNET_LAYERS)
    HRNet3D.check_patch_size(list(HRNET_PATCH), HRNET_STRIDES, **kwargs)
    # The coarsest stream shorter than its 3-voxel kernel on a down-sampled axis.
    with pytest.raises(UserError, match="patch size .* fewer than its kernel"):
        HRNet3D.check_patch_size([12, 16, 16], HRNET_STRIDES, **kwargs)
    # An axis that is never down-sampled only needs the contract's 2 voxels.
    HRNet3D.check_patch_size([2, 24, 24], [[1, 1, 1], [1, 2, 2], [1, 2, 2], [1, 2, 2]], **kwargs)
    with pytest.raises(UserError, match="patch size .* at least 2 resolutions"):
        HRNet3D.check_patch_size([16, 16, 16], [[1, 1, 1]], **{**kwargs, "n_stages": 1})
    with pytest.raises(UserError, match="upsampling"):
        HRNet3D.check_patch_size(list(HRNET_PATCH), HRNET_STRIDES, upsampling="bicubic", **kwargs)
    with pytest.raises(UserError, match="num_blocks"):
        hrnet(num_blocks=0)
    with pytest.raises(UserError, match="at least 2 resolutions"):
        hrnet(widths=(4,))
    with pytest.raises(TypeError):  # nnU-Net's U-Net settings are not silently ignored
        hrnet(n_conv_per_stage=[2] * 4)
    with pytest.raises(UserError, match="patch size"):
        architecture_entry("hrnet", dict(n_stages=5, features_per_stage=[8] * 5,
                                         strides=[[1, 1, 1]] + [[2, 2, 2]] * 4,
                                         kernel_sizes=[[3, 3, 3]] * 5, **HRNET_LAYERS),
                           [16, 16, 16])
