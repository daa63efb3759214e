"""WeatherittUNet: its size at the paper's setting, max-pooling by the plans' strides and
max-unpooling with the pooling indices, and no learned up-sampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_transfer.architectures import partition
from nnunet_transfer.architectures.registry import architecture_entry, template
from nnunet_transfer.errors import UserError

from support.small_architectures import WEATHERITT_ANISOTROPIC, weatheritt


def test_size_at_the_papers_setting_is_about_220k():
    spec = template("weatheritt")
    assert (spec["features"], spec["max_stages"]) == ({"base": 8, "max": 64}, 4)
    net = weatheritt()
    total = sum(p.numel() for p in net.parameters())
    assert total == 213_594
    assert abs(total - 220_000) / 220_000 < 0.05
    counts = partition(net).parameter_counts()
    assert counts["encoder"]["trainable"] == 164_584 + 2 * 208  # convs + affine norms
    assert counts["head"]["trainable"] == 8 * 2 + 2


def test_no_learned_upsampling_and_relu_blocks():
    net = weatheritt()
    assert not any(isinstance(m, nn.ConvTranspose3d) for m in net.modules())
    assert [type(s.unpool) for s in net.decoder.stages] == [nn.MaxUnpool3d] * 3
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert [m.kernel_size for m in convs].count((1, 1, 1)) == 1
    assert net.head.kernel_size == (1, 1, 1)
    assert {type(m) for m in net.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))} == {nn.ReLU}


def test_pooling_follows_the_plans_strides_and_unpooling_restores_the_maxima():
    torch.manual_seed(0)
    net = weatheritt(n_stages=3, base=4, **WEATHERITT_ANISOTROPIC)
    assert [p.kernel_size for p in net.encoder.pools] == [(1, 2, 2), (2, 2, 2)]
    assert net.encoder.stages[0][0][0].kernel_size == (1, 3, 3)
    x = torch.randn(2, 1, 8, 16, 16)
    with torch.no_grad():
        outputs, indices = net.encoder(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(8, 16, 16), (8, 8, 8), (4, 4, 4)]
    # The full-resolution decoder stage puts each pooled maximum back where it came from.
    skip = outputs[0]
    pooled, where = net.encoder.pools[0](skip)
    restored = net.decoder.stages[-1].unpool(pooled, where, output_size=skip.shape[2:])
    kept = restored != 0
    torch.testing.assert_close(restored[kept], skip[kept])
    assert kept.sum() <= skip.numel() // 4  # one voxel of every 1x2x2 window at most
    windows = restored.reshape(2, 4, 8, 8, 2, 8, 2).amax(dim=(4, 6))
    torch.testing.assert_close(windows, pooled)


def test_decoder_width_matches_the_unpooling_it_feeds():
    net = weatheritt(n_stages=4, base=8)
    assert net.encoder.stages[-1][-1][0].out_channels == 32  # bottleneck ends at F_2
    assert [s.convs[0][0].in_channels for s in net.decoder.stages] == [64, 32, 16]
    assert [s.convs[-1][0].out_channels for s in net.decoder.stages] == [16, 8, 8]


def test_analysis_layers_with_few_stages():
    with pytest.raises(UserError, match="decoder_convs_per_stage >= 2"):
        weatheritt(n_stages=2, base=4, decoder_convs_per_stage=1)
    for n_stages, decoder_convs in ((2, 2), (3, 1), (3, 2)):
        net = weatheritt(n_stages=n_stages, base=4, decoder_convs_per_stage=decoder_convs)
        modules = dict(net.named_modules())
        layers = net.analysis_layers()
        assert all(len(set(names)) == 3 for names in layers.values())
        assert all(name in modules and any(True for _ in modules[name].parameters())
                   for names in layers.values() for name in names)


def plans(strides, kernels, features=(8, 16, 32, 64)):
    n = len(strides)
    return {"n_stages": n, "features_per_stage": list(features[:n]), "strides": strides,
            "kernel_sizes": kernels, "conv_op": "torch.nn.modules.conv.Conv3d",
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}


def test_patches_pooled_below_four_voxels_are_refused():
    four = plans([[1, 1, 1]] + [[2, 2, 2]] * 3, [[3, 3, 3]] * 4)
    entry = architecture_entry("weatheritt", four, [32, 32, 32])["arch_kwargs"]
    assert entry["nonlin"] == "torch.nn.ReLU" and entry["decoder_convs_per_stage"] == 2
    with pytest.raises(UserError, match="patch size .*pooled to 3 voxel"):
        architecture_entry("weatheritt", four, [32, 24, 32])
    # An axis that is never pooled may stay small.
    flat = plans([[1, 1, 1], [1, 2, 2], [1, 2, 2]], [[1, 3, 3]] * 3)
    architecture_entry("weatheritt", flat, [2, 16, 16])
    with pytest.raises(UserError, match="odd"):
        architecture_entry("weatheritt", plans([[1, 1, 1], [2, 2, 2]], [[3, 3, 3], [2, 2, 2]]),
                           [16, 16, 16])
