"""Checks that several per-architecture tests make in the same way."""

from __future__ import annotations

import pytest
import torch

from nnunet_transfer.architectures import partition
from nnunet_transfer.architectures.registry import architecture_entry, template
from nnunet_transfer.errors import UserError


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
    from test_architectures import PLANS
    patch, kwargs = PLANS["isotropic"]
    spec = template(name)
    spec["arch_kwargs"].update(override)
    monkeypatch.setattr("nnunet_transfer.architectures.registry.template",
                        lambda template_name: spec)
    with pytest.raises(UserError, match=message):
        architecture_entry(name, kwargs, patch)
