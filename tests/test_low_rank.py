"""Low-rank adapters on convolution weights: function unchanged at start, merged weights equal
base + adapters, the base untouched by training, the rank's parameter count, shared weights
adapted once, save / load, and every architecture."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nnunet_transfer.architectures import partition
from nnunet_transfer.architectures.parts import unwrap
from nnunet_transfer.architectures.registry import ARCHITECTURES, architecture_entry
from nnunet_transfer.errors import UserError
from nnunet_transfer.training import low_rank
from nnunet_transfer.training.adapter_files import AdapterFiles
from nnunet_transfer.training.bookkeeping import RunRecord
from nnunet_transfer.training.low_rank import (
    ALPHA, adapter_parameters, adapter_state_dict, add_adapters, base_state_dict, has_adapters,
    load_adapter_state_dict, merged_state_dict)

from support.architecture_checks import base_kwargs
from support.networks import autofocus_layer, batch, plain_unet

RANK = 2
PATCH = (16, 16, 16)
# Each architecture at a few thousand parameters (its template's widths cost minutes here).
SMALL = {"features_per_stage": [4, 8, 8], "units_per_stage": [1, 1, 1],
         "decoder_convs_per_stage": 2, "representation_features": 8, "growth_rate": 4,
         "kernel_size": 3, "dilations": [1, 2]}
SMALL_PER_ARCHITECTURE = {"vnet": {"convs_per_stage": [1, 1, 1]},
                          "weatheritt": {"convs_per_stage": 1},
                          "tiramisu": {"layers_per_block": [2, 2, 2]}}


def small_network(name: str) -> nn.Module:
    """Architecture `name` as nnU-Net builds it from our configuration, at small widths."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    torch.manual_seed(0)
    entry = architecture_entry(name, base_kwargs([[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                                                 [[3, 3, 3]] * 3), list(PATCH))
    kwargs = entry["arch_kwargs"]
    kwargs.update({k: v for k, v in SMALL.items() if k in kwargs})
    kwargs.update(SMALL_PER_ARCHITECTURE.get(name, {}))
    return get_network_from_plans(entry["network_class_name"], kwargs,
                                  entry["_kw_requires_import"], 1, 2, allow_init=True,
                                  deep_supervision=True)


def convs_of(network: nn.Module) -> list[nn.modules.conv._ConvNd]:
    return list({id(m): m for m in network.modules()
                 if isinstance(m, nn.modules.conv._ConvNd)}.values())


def first_output(output):
    return output[0] if isinstance(output, (list, tuple)) else output


def loss(output) -> torch.Tensor:
    """Every output counts (deep supervision), so that every adapter gets a gradient."""
    return sum(o.square().mean() for o in (output if isinstance(output, (list, tuple))
                                           else [output]))


def lora_steps(network: nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    """Freeze everything but the adapters and take a few SGD steps, with a learning rate large
    enough that the adapters move well away from zero."""
    for p in network.parameters():
        p.requires_grad_(False)
    params = add_adapters([network], RANK, seed=0)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(params, lr=0.5, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(network(x)).backward()
        optimizer.step()
    assert all(p.grad is not None for p in params)


def test_function_unchanged_at_init_and_parameter_count_is_the_ranks():
    network = plain_unet().eval()
    x = batch()
    with torch.no_grad():
        before = first_output(network(x))
    convs = convs_of(network)
    params = add_adapters([network.encoder, network.decoder], RANK, seed=0)
    assert has_adapters(network) and adapter_parameters(network) == params
    with torch.no_grad():
        torch.testing.assert_close(first_output(network(x)), before, rtol=0, atol=0)
    # rank * (rows + columns) of each conv weight flattened to (shape[0], the rest), once each
    # although the decoder reaches the encoder again through decoder.encoder
    expected = sum(RANK * (c.weight.shape[0] + math.prod(c.weight.shape[1:])) for c in convs)
    assert sum(p.numel() for p in params) == expected
    assert len(params) == 2 * len(convs)


def test_a_is_seeded_kaiming_uniform_and_b_zero():
    one, two, other = plain_unet(), plain_unet(), plain_unet()
    a1, a2, a3 = (add_adapters([n], RANK, seed=s) for n, s in ((one, 3), (two, 3), (other, 4)))
    assert all(torch.equal(p, q) for p, q in zip(a1, a2))
    assert not torch.equal(a1[0], a3[0])
    conv = convs_of(one)[1]
    A, B = conv.parametrizations.weight[0].A, conv.parametrizations.weight[0].B
    assert not B.any() and A.abs().max() <= 1 / math.sqrt(A.shape[1])
    assert A.std() > 0.5 / math.sqrt(3 * A.shape[1])  # uniform in +-bound, not all near zero
    assert conv.parametrizations.weight[0].scale == ALPHA / RANK


@pytest.mark.parametrize("factorised", [True, False])
def test_after_steps_merged_weights_compute_the_same_and_the_base_is_bit_identical(
        factorised, monkeypatch):
    # this small network's convolutions are too narrow to factorise unless told to
    monkeypatch.setattr(low_rank, "FACTORISE_WIDTH_PER_RANK", 0 if factorised else 10 ** 6)
    torch.manual_seed(0)
    network = plain_unet()
    x = batch()
    original = {k: v.clone() for k, v in network.state_dict().items()}
    lora_steps(network, x)
    assert all(("forward" in vars(c)) == factorised
               for c in convs_of(network) if type(c).__name__ == "ParametrizedConv3d")
    assert any(p.abs().sum() > 0 for p in adapter_parameters(network)[1::2])  # B moved
    base = base_state_dict(network)
    assert base.keys() == original.keys()
    assert all(torch.equal(base[k], original[k]) for k in original)
    merged = merged_state_dict(network)
    assert merged.keys() == original.keys()
    assert any(not torch.equal(merged[k], original[k]) for k in original)
    # what nnUNetv2_predict does: a plain network, the merged weights, strictly
    plain = plain_unet()
    plain.load_state_dict(merged)
    network.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(first_output(plain(x)), first_output(network(x)),
                                   rtol=1e-5, atol=1e-5)
    # the factorised training forward computes what the merged weight computes
    network.train(), plain.train()
    torch.testing.assert_close(first_output(plain(x)), first_output(network(x)),
                               rtol=1e-5, atol=1e-5)


def test_no_gradient_reaches_a_frozen_base_weight():
    network = plain_unet()
    for p in network.parameters():
        p.requires_grad_(False)
    for p in add_adapters([network], RANK, seed=0):
        p.requires_grad_(True)
    first_output(network(batch())).sum().backward()
    conv = convs_of(network)[0]
    assert conv.parametrizations.weight.original.grad is None
    assert conv.parametrizations.weight[0].A.grad is not None


def test_adapters_survive_a_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    network = plain_unet()
    x = batch()
    lora_steps(network, x)
    torch.save({"base": base_state_dict(network), "adapters": adapter_state_dict(network)},
               tmp_path / "lora.pth")
    saved = torch.load(tmp_path / "lora.pth", weights_only=True)
    # the small file: the adapters alone, each once (decoder.encoder is not saved twice)
    assert all(".parametrizations.weight.0." in k for k in saved["adapters"])
    assert sum(v.numel() for v in saved["adapters"].values()) == sum(
        p.numel() for p in adapter_parameters(network))
    restored = plain_unet()
    restored.load_state_dict(saved["base"])
    add_adapters([restored], RANK, seed=1)
    load_adapter_state_dict(restored, saved["adapters"])
    network.eval(), restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(first_output(restored(x)), first_output(network(x)))
    other_rank = plain_unet()
    add_adapters([other_rank], RANK + 1, seed=0)
    with pytest.raises(UserError, match="LoRA rank"):
        load_adapter_state_dict(other_rank, saved["adapters"])


def test_checkpoint_is_written_once_with_the_merged_weights(tmp_path):
    """nnU-Net's save_checkpoint takes the (unwrapped) network's state_dict(): within
    `merged_state_while_saving` that is the merged state, also under torch.compile's wrapper;
    afterwards the network's own (with its adapters) again."""
    torch.manual_seed(0)
    network = plain_unet()
    lora_steps(network, batch())
    files = AdapterFiles(RunRecord(str(tmp_path)))
    adapted_keys = set(network.state_dict())
    for wrapped in (network, torch.compile(network)):
        with files.merged_state_while_saving(wrapped):
            torch.save({"network_weights": unwrap(wrapped).state_dict()}, tmp_path / "c.pth")
        saved = torch.load(tmp_path / "c.pth", weights_only=True)["network_weights"]
        merged = merged_state_dict(network)
        assert saved.keys() == merged.keys() and all(torch.equal(saved[k], merged[k])
                                                     for k in merged)
        assert set(network.state_dict()) == adapted_keys != set(merged)


def test_autofocus_shared_weight_is_adapted_once_and_every_branch_uses_it():
    af = autofocus_layer()
    x = torch.randn(1, 4, 12, 14, 10)
    params = add_adapters([af], RANK, seed=0)
    assert len(params) == 2 * len(convs_of(af))
    adapter = af.conv.parametrizations.weight[0]
    with torch.no_grad():
        adapter.B.normal_()
    # every branch convolves with the adapted weight (read directly, not through a forward)
    merged = af.conv.weight
    assert not torch.equal(merged, af.conv.parametrizations.weight.original)
    for rate, branch in zip(af.dilations, af.branches(x)):
        torch.testing.assert_close(
            branch, F.conv3d(x, merged, af.conv.bias, padding=rate, dilation=rate))
    # and the loss of every branch reaches the one adapter
    for p in af.parameters():
        p.requires_grad_(p is adapter.A or p is adapter.B)
    af(x).sum().backward()
    assert adapter.B.grad is not None and adapter.B.grad.abs().sum() > 0


def test_a_weight_shared_by_two_modules_gets_one_adapter():
    one, two = nn.Conv3d(2, 3, 3), nn.Conv3d(2, 3, 3)
    two.weight = one.weight
    params = add_adapters([nn.Sequential(one, two)], RANK, seed=0)
    assert len(params) == 2
    assert one.parametrizations.weight[0] is two.parametrizations.weight[0]


def test_transposed_and_strided_convolutions_factorise_exactly(monkeypatch):
    monkeypatch.setattr(low_rank, "FACTORISE_WIDTH_PER_RANK", 0)
    torch.manual_seed(0)
    modules = [nn.ConvTranspose3d(4, 3, 2, stride=2), nn.Conv3d(4, 3, 3, stride=2, padding=1),
               nn.Conv2d(4, 3, (1, 3), dilation=2, padding="same")]
    for module in modules:
        x = torch.randn(2, 4, 6, 7, 5) if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)) \
            else torch.randn(2, 4, 7, 5)
        module.weight.requires_grad_(False)
        A, B = add_adapters([module], RANK, seed=0)
        assert "forward" in vars(module)
        with torch.no_grad():
            B.normal_()
        plain = copy.deepcopy(module)
        assert plain.forward.__self__ is plain  # the copy's forward acts on the copy
        plain.forward = type(module).forward.__get__(plain)  # the merged weight, one conv
        torch.testing.assert_close(module(x), plain(x), rtol=1e-5, atol=1e-5)
        module(x).square().sum().backward()
        grad = B.grad.clone()
        B.grad = None
        plain(x).square().sum().backward()
        copied = plain.parametrizations.weight[0].B
        torch.testing.assert_close(grad, copied.grad, rtol=1e-4, atol=1e-4)


def test_partition_and_state_dict_parts_follow_the_parametrized_modules():
    network = plain_unet()
    add_adapters([network.encoder, network.decoder], RANK, seed=0)
    parts = partition(network)
    key_parts = parts.state_dict_parts(network)
    for key, part in key_parts.items():
        expected = "head" if key.startswith("decoder.seg_layers") else (
            "encoder" if key.startswith(("encoder.", "decoder.encoder.")) else "decoder")
        assert part == expected, key
    # the analyses read saved (merged) dicts: no parametrization key in them
    assert not any("parametrizations" in k for k in merged_state_dict(network))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_adapts_and_merges(name):
    network = small_network(name)
    x = torch.randn(1, 1, *PATCH)
    network.eval()
    with torch.no_grad():
        before = first_output(network(x))
    parts = partition(network)
    add_adapters([*parts.modules["encoder"], *parts.modules["decoder"]], RANK, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(first_output(network(x)), before, rtol=0, atol=0)
    partition(network)  # the split still covers every parameter, adapters included
    network.train()
    lora_steps_on_existing(network, x)
    plain = small_network(name)
    plain.load_state_dict(merged_state_dict(network))
    network.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(first_output(plain(x)), first_output(network(x)),
                                   rtol=1e-4, atol=1e-4)


def lora_steps_on_existing(network: nn.Module, x: torch.Tensor) -> None:
    params = adapter_parameters(network)
    for p in network.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(params, lr=0.5, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad()
        loss(network(x)).backward()
        optimizer.step()
    assert all(p.grad is not None for p in params[1::2])
