"""Plans nnU-Net would write for the extra architectures, the networks built from them, and the
checks that several per-architecture tests make in the same way."""

from __future__ import annotations

import pytest
import torch

from nnunet_transfer.architectures import partition
from nnunet_transfer.architectures.registry import architecture_entry, build_network, template
from nnunet_transfer.errors import UserError


def base_kwargs(strides, kernel_sizes, features=(8, 16, 32, 64, 64)):
    """arch_kwargs of a 3d_fullres configuration as nnU-Net 2.8 writes them."""
    n = len(strides)
    return {
        "n_stages": n, "features_per_stage": list(features[:n]),
        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": kernel_sizes,
        "strides": strides, "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


# Isotropic plans with a coarsest map of 4 x 5 x 4 (nnU-Net's patches are multiples of the
# total stride, not powers of two; its planner keeps at least 4 voxels per down-sampled axis)
# and anisotropic plans with 1x3x3 kernels in the first stage (coarsest map 5 x 6 x 5).
PLANS = {
    "isotropic": ([32, 40, 32], base_kwargs([[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                                            [[3, 3, 3]] * 4)),
    "anisotropic": ([20, 48, 40], base_kwargs([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                                              [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]])),
}


def build(name, plans="isotropic", channels=2, classes=3, deep_supervision=False):
    patch, kwargs = PLANS[plans]
    return build_network(name, kwargs, patch, channels, classes, deep_supervision), patch


def assert_analysis_layers_in_their_parts(network) -> dict[str, list[str]]:
    """Three distinct analysis layers per part, every parameter of each in that part (a layer
    reaching into another part would not show that part's representation alone)."""
    layers = network.analysis_layers()
    modules = dict(network.named_modules())
    part_of = partition(network).part_of()
    for part, names in layers.items():
        assert len(set(names)) == 3
        for name in names:
            assert {part_of[id(p)] for p in modules[name].parameters()} == {part}
    return layers


def assert_finite_logits_under_autocast(network, patch, num_classes: int = 2) -> None:
    """One single-channel patch through `network` under bfloat16 autocast on the CPU gives
    full-resolution logits, all finite."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = network(torch.randn(1, 1, *patch))
    assert logits.shape == (1, num_classes, *patch) and torch.isfinite(logits.float()).all()


def assert_template_setting_refused(name: str, override: dict, message: str,
                                    monkeypatch) -> None:
    """Writing the plans of architecture `name` with `override` in its template's arch_kwargs
    raises a UserError matching `message` (refused at plan time, before any training)."""
    patch, kwargs = PLANS["isotropic"]
    spec = template(name)
    spec["arch_kwargs"].update(override)
    monkeypatch.setattr("nnunet_transfer.architectures.registry.template",
                        lambda template_name: spec)
    with pytest.raises(UserError, match=message):
        architecture_entry(name, kwargs, patch)
