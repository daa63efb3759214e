"""UNet++: the nested dense skip pathways, the deep-supervision mapping, the paper's size."""

from __future__ import annotations

import pytest
import torch

from nnunet_transfer.architectures import partition
from nnunet_transfer.architectures.stage_settings import cumulative_strides
from nnunet_transfer.architectures.unetpp import UNetPlusPlus, node_name
from nnunet_transfer.errors import UserError

from support.small_architectures import UNETPP_ANISOTROPIC, unetpp


def record(network: UNetPlusPlus):
    """Outputs of every node and up-sampler, and the input of every nested node and head."""
    outputs, inputs, handles = {}, {}, []
    for prefix, modules in (("enc", network.encoder.nodes), ("node", network.decoder.nodes),
                            ("up", network.decoder.up)):
        for name, module in modules.items():
            handles.append(module.register_forward_hook(
                lambda m, args, out, key=(prefix, name): outputs.__setitem__(key, out)))
    for name, module in network.decoder.nodes.items():
        handles.append(module.register_forward_pre_hook(
            lambda m, args, key=name: inputs.__setitem__(key, args[0])))
    for i, head in enumerate(network.decoder.seg_layers):
        handles.append(head.register_forward_pre_hook(
            lambda m, args, key=("head", i): inputs.__setitem__(key, args[0])))
    return outputs, inputs, handles


def node_output(outputs, i, j):
    return outputs[("enc", node_name(i, 0))] if j == 0 else outputs[("node", node_name(i, j))]


def test_every_nested_node_sees_all_earlier_nodes_of_its_row_and_the_upsampled_row_below():
    network = unetpp()
    outputs, inputs, _ = record(network)
    with torch.no_grad():
        network(torch.randn(1, 1, 8, 16, 16))
    depth = 4
    nested = [(i, j) for j in range(1, depth) for i in range(depth - j)]
    assert sorted(network.decoder.nodes) == sorted(node_name(i, j) for i, j in nested)
    for i, j in nested:
        expected = torch.cat([*(node_output(outputs, i, k) for k in range(j)),
                              outputs[("up", node_name(i, j))]], dim=1)
        assert torch.equal(inputs[node_name(i, j)], expected), (i, j)
        # the up-sampler of X(i, j) brings X(i+1, j-1) to row i's size and width
        assert outputs[("up", node_name(i, j))].shape == node_output(outputs, i, 0).shape
        assert network.decoder.up[node_name(i, j)].in_channels == \
            node_output(outputs, i + 1, j - 1).shape[1]


def test_outputs_are_the_last_node_of_each_row_at_each_resolution_of_the_plans():
    network = unetpp()
    outputs, inputs, _ = record(network)
    patch = (8, 16, 16)
    with torch.no_grad():
        logits = network(torch.randn(2, 1, *patch))
    factors = cumulative_strides(UNETPP_ANISOTROPIC)
    assert [tuple(o.shape) for o in logits] == [
        (2, 3, *(p // f for p, f in zip(patch, factors[i]))) for i in range(3)]
    for i in range(3):
        assert torch.equal(inputs[("head", i)], node_output(outputs, i, 3 - i)), i
    # the backbone pools by the plans' strides, anisotropically
    for i in range(4):
        assert node_output(outputs, i, 0).shape[2:] == tuple(
            p // f for p, f in zip(patch, factors[i]))


def test_without_deep_supervision_only_the_full_resolution_head_runs_and_it_sees_every_node():
    network = unetpp(deep_supervision=False)
    calls = []
    for i, head in enumerate(network.decoder.seg_layers):
        head.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    x = torch.randn(1, 1, 8, 16, 16)
    out = network(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 8, 16, 16)
    assert calls == [0]
    out.square().mean().backward()
    # X(0, L-1) depends on every node of the grid: every encoder / decoder weight gets gradient
    parts = partition(network)
    for part in ("encoder", "decoder"):
        assert all(p.grad is not None and p.grad.abs().sum() > 0
                   for p in parts.parameters(part)), part


def conv_units_count(features, taps, up_taps, in_channels, classes, per_unit_extra=0):
    """Parameters of a UNet++ with one output layer, counted from the paper's wiring:
    backbone units, then for every nested node X(i, j) a transposed conv from row i+1 and a
    unit over (j + 1) * features[i] channels."""
    def conv(cin, cout):
        return taps * cin * cout + cout

    depth, total = len(features), 0
    for i, f in enumerate(features):
        previous = in_channels if i == 0 else features[i - 1]
        total += conv(previous, f) + conv(f, f) + per_unit_extra * f
    for j in range(1, depth):
        for i in range(depth - j):
            f = features[i]
            total += up_taps * features[i + 1] * f + f
            total += conv((j + 1) * f, f) + conv(f, f) + per_unit_extra * f
    return total + features[0] * classes + classes


def test_size_at_the_papers_widths_matches_the_authors_network():
    paper = [32, 64, 128, 256, 512]
    # The authors' 2D Keras Nest_Net (one input channel, one sigmoid output) reports
    # "Total params: 9,041,601"; the same wiring counted here must give it.
    assert conv_units_count(paper, 9, 4, 1, 1) == 9_041_601
    network = UNetPlusPlus(input_channels=1, num_classes=1, n_stages=5, features_per_stage=paper,
                           strides=[[1, 1, 1]] + [[2, 2, 2]] * 4, kernel_sizes=[[3, 3, 3]] * 5)
    # 3D: 27-tap convs, 8-tap up-sampling; plus two affine instance norms per unit and the
    # auxiliary 1x1x1 heads on X(1, 3), X(2, 2), X(3, 1).
    expected = (conv_units_count(paper, 27, 8, 1, 1, per_unit_extra=4)
                + sum(f + 1 for f in paper[1:4]))
    assert sum(p.numel() for p in network.parameters()) == expected


def test_split_and_analysis_layers_follow_the_docstring():
    network = unetpp()
    parts = partition(network)
    head = {id(p) for p in parts.parameters("head")}
    assert head == {id(p) for p in network.decoder.seg_layers.parameters()}
    assert {id(p) for p in parts.parameters("encoder")} == {
        id(p) for p in network.encoder.parameters()}
    layers = network.analysis_layers()
    assert layers == {"encoder": ["encoder.nodes.x0_0", "encoder.nodes.x1_0", "encoder.nodes.x3_0"],
                      "decoder": ["decoder.nodes.x2_1", "decoder.nodes.x1_2",
                                  "decoder.nodes.x0_3"]}
    for strides in ([[1, 1, 1], [2, 2, 2]], [[1, 1, 1], [2, 2, 2], [2, 2, 2]]):
        shallow = unetpp(strides=strides, kernels=[[3, 3, 3]] * len(strides))
        names = shallow.analysis_layers()
        modules = dict(shallow.named_modules())
        assert all(len(set(v)) == 3 and all(n in modules for n in v) for v in names.values())


def test_deep_supervision_outputs_under_autocast():
    network = unetpp(strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], kernels=[[3, 3, 3]] * 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = network(torch.randn(1, 1, 8, 8, 8))
    assert [o.shape[2:] for o in outputs] == [(8, 8, 8), (4, 4, 4)]
    assert all(torch.isfinite(o.float()).all() for o in outputs)


def test_plans_it_cannot_take_are_refused():
    kernels = [[3, 3, 3]]
    with pytest.raises(UserError, match="patch size"):
        UNetPlusPlus.check_patch_size([8, 8, 8], [[1, 1, 1]], n_stages=1,
                                      features_per_stage=[4], kernel_sizes=kernels)
    with pytest.raises(UserError, match="first stage must not down-sample"):
        UNetPlusPlus.check_patch_size([8, 8, 8], [[2, 2, 2], [2, 2, 2]], n_stages=2,
                                      features_per_stage=[4, 8], kernel_sizes=kernels * 2)
    with pytest.raises(UserError, match="kernel_sizes has 1 entries for 2 stages"):
        UNetPlusPlus(1, 2, 2, [4, 8], [[1, 1, 1], [2, 2, 2]], kernels)
    with pytest.raises(TypeError):
        UNetPlusPlus(1, 2, 2, [4, 8], [[1, 1, 1], [2, 2, 2]], kernels * 2, dropout_op=None)
