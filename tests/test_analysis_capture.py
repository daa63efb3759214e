"""Activation capture (nnunet_transfer.analysis.blocks, .capture, .layers): seeded blocks of
preprocessed images read with nnU-Net's own dataset classes, the same blocks for every network,
moments equal to a direct computation on all hooked activations, and clear refusals.

The preprocessed folders are written with nnU-Net 2.8.1's own writers (`save_case` of its
blosc2 and numpy dataset classes); networks are tiny nnU-Net U-Nets and extra architectures
built as nnU-Net builds them.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest
import torch
from support.networks import plain_unet, residual_unet
from nnunetv2.training.dataloading.nnunet_dataset import (
    comp_blosc2_params,
    nnUNetDatasetBlosc2,
    nnUNetDatasetNumpy,
)
from support.architecture_checks import base_kwargs

from nnunet_transfer.analysis import linear_cka, pwcca, svcca
from nnunet_transfer.analysis.blocks import BlockSampler, preprocessed_folder
from nnunet_transfer.analysis.capture import capture_moments, layer_plan
from nnunet_transfer.analysis.layers import (
    default_layer_names,
    default_layers,
    find_layer,
)
from nnunet_transfer.architectures.registry import ARCHITECTURES, build_network
from nnunet_transfer.errors import UserError

PATCH = (16, 16, 16)
# Spatial shapes of the fake cases: one is shorter than the patch on its first axis (padded),
# one equals it on the last axis.
CASE_SHAPES = {"case_a": (20, 24, 22), "case_b": (12, 30, 16), "case_c": (24, 20, 18)}


def write_preprocessed(folder: str, dataset_class=nnUNetDatasetBlosc2, channels: int = 1) -> str:
    """A folder of preprocessed cases as nnU-Net writes them (data, seg, properties)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for case, shape in CASE_SHAPES.items():
        # Smooth-ish images with non-zero mean, so that layers see structure, not white noise.
        data = rng.normal(size=(channels, *shape)).cumsum(axis=1).astype(np.float32) / 3 + 1
        seg = (data[:1] > 1).astype(np.int8)
        properties = {"class_locations": {}, "shape_after_cropping_and_before_resampling": shape}
        target = os.path.join(folder, case)
        if dataset_class is nnUNetDatasetBlosc2:
            blocks, chunks = comp_blosc2_params(data.shape, PATCH)
            dataset_class.save_case(data, seg, properties, target, chunks=chunks, blocks=blocks)
        else:
            dataset_class.save_case(data, seg, properties, target)
    return folder


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on maps this small, thread hand-offs cost more than the work, and on
    a busy 2-core machine two threads made each forward pass about 20 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory) -> str:
    return write_preprocessed(str(tmp_path_factory.mktemp("preprocessed") / "Plans_3d_fullres"))


def unets(count: int = 2, n_stages: int = 3) -> dict[str, torch.nn.Module]:
    networks = {}
    for i in range(count):
        torch.manual_seed(i)
        networks[f"net{i}"] = plain_unet(n_stages=n_stages)
    return networks


def direct_activations(networks, sampler, plan) -> dict[str, dict[str, np.ndarray]]:
    """{label: {network: (voxels of all blocks, channels)}} by hooking and concatenating."""
    collected = {label: {name: [] for name in members} for label, members in plan.items()}
    with torch.no_grad():
        for name, network in networks.items():
            network.eval()
            handles = [find_layer(network, members[name]).register_forward_hook(
                lambda module, inputs, output, label=label, name=name:
                collected[label][name].append(
                    output[0].reshape(output.shape[1], -1).T.double().numpy().copy()))
                for label, members in plan.items() if name in members]
            for block in sampler:
                network(torch.from_numpy(sampler.read(block))[None])
            for handle in handles:
                handle.remove()
    return {label: {name: np.concatenate(parts) for name, parts in members.items()}
            for label, members in collected.items()}


# -- blocks ------------------------------------------------------------------------------------


def test_blocks_are_seeded_balanced_and_padded_like_nnunet(preprocessed):
    sampler = BlockSampler(preprocessed, PATCH, 7, seed=3)
    again = BlockSampler(preprocessed, PATCH, 7, seed=3)
    assert sampler.blocks == again.blocks
    assert BlockSampler(preprocessed, PATCH, 7, seed=4).blocks != sampler.blocks
    # Rounds of a permutation of the cases: 7 blocks over 3 cases give 3, 2, 2.
    counts = sorted(sum(b.case == case for b in sampler) for case in CASE_SHAPES)
    assert counts == [2, 2, 3]
    for block in sampler:
        shape = CASE_SHAPES[block.case]
        for (start, stop), size, patch in zip(block.bbox, shape, PATCH):
            assert stop - start == patch
            if size >= patch:
                assert 0 <= start and stop <= size
            else:  # nnU-Net's get_bbox: need = patch - size, start = -(need // 2)
                assert start == -((patch - size) // 2)
    padded = next(b for b in sampler if b.case == "case_b")
    data = sampler.read(padded)
    assert data.shape == (1, *PATCH) and data.dtype == np.float32
    dataset = nnUNetDatasetBlosc2(preprocessed, ["case_b"])
    image = np.asarray(dataset.load_case("case_b")[0][:])
    (z0, _), (y0, y1), (x0, x1) = padded.bbox
    assert np.all(data[:, : -z0] == 0) and np.all(data[:, -z0 + 12:] == 0)
    np.testing.assert_array_equal(data[:, -z0:-z0 + 12], image[:, :, y0:y1, x0:x1])


def test_numpy_preprocessed_data_is_read_with_nnunets_numpy_dataset(tmp_path, preprocessed):
    folder = write_preprocessed(str(tmp_path / "npz"), nnUNetDatasetNumpy)
    from_npz = BlockSampler(folder, PATCH, 4, seed=1)
    from_blosc2 = BlockSampler(preprocessed, PATCH, 4, seed=1)
    assert from_npz.blocks == from_blosc2.blocks
    for block in from_npz:
        np.testing.assert_array_equal(from_npz.read(block), from_blosc2.read(block))


def test_sampler_refusals(tmp_path, preprocessed):
    with pytest.raises(UserError, match="does not exist"):
        BlockSampler(str(tmp_path / "nowhere"), PATCH, 2)
    with pytest.raises(UserError, match=r"no preprocessed case \['case_z'\].*case_a, case_b"):
        BlockSampler(preprocessed, PATCH, 2, identifiers=["case_a", "case_z"])
    with pytest.raises(UserError, match="at least 1"):
        BlockSampler(preprocessed, PATCH, 0)
    with pytest.raises(UserError, match="2D configurations"):
        BlockSampler(preprocessed, (16, 16), 1)


def test_preprocessed_folder_from_plans(tmp_path):
    architecture = {"network_class_name": "dynamic_network_architectures.architectures.unet."
                                          "PlainConvUNet", "arch_kwargs": {},
                    "_kw_requires_import": []}
    plans = {"dataset_name": "Dataset502_X", "plans_name": "P",
             "configurations": {"3d_fullres": {"data_identifier": "P_3d_fullres",
                                               "patch_size": [16, 20, 24],
                                               "architecture": architecture}}}
    folder, patch = preprocessed_folder(plans, "3d_fullres", str(tmp_path))
    assert folder == os.path.join(str(tmp_path), "Dataset502_X", "P_3d_fullres")
    assert patch == (16, 20, 24)
    with pytest.raises(UserError, match="no configuration '2d'.*3d_fullres"):
        preprocessed_folder(plans, "2d", str(tmp_path))


# -- layers ------------------------------------------------------------------------------------


def test_default_layers_of_nnunet_unets_are_spread_shallow_to_deep():
    assert default_layers(plain_unet(n_stages=5)) == {
        "encoder-1": "encoder.stages.0", "encoder-2": "encoder.stages.2",
        "encoder-3": "encoder.stages.4", "decoder-1": "decoder.stages.0",
        "decoder-2": "decoder.stages.2", "decoder-3": "decoder.stages.3"}
    # Too few stages on a side: the blocks inside the stages (and the up-sampling) fill in.
    shallow = default_layer_names(plain_unet(n_stages=2))
    assert shallow == {"encoder": ["encoder.stages.0.0.convs.0", "encoder.stages.0",
                                   "encoder.stages.1"],
                       "decoder": ["decoder.transpconvs.0", "decoder.stages.0.convs.0",
                                   "decoder.stages.0"]}
    residual = default_layer_names(residual_unet(n_stages=2))
    assert residual["encoder"] == ["encoder.stem", "encoder.stages.0", "encoder.stages.1"]
    for network in (plain_unet(n_stages=2), residual_unet(n_stages=4)):
        for name in default_layers(network).values():
            find_layer(network, name)


def test_default_layers_of_extra_architectures_are_their_analysis_layers():
    kwargs = base_kwargs([[1, 1, 1], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3)
    network = build_network("karimi", kwargs, PATCH, 1, 2)
    declared = network.analysis_layers()
    assert default_layers(network) == {
        **{f"encoder-{i + 1}": n for i, n in enumerate(declared["encoder"])},
        **{f"decoder-{i + 1}": n for i, n in enumerate(declared["decoder"])}}


def test_a_missing_layer_is_named_with_close_matches():
    network = plain_unet(n_stages=4)
    with pytest.raises(UserError) as error:
        find_layer(network, "encoder.stage.1", "network scratch")
    message = str(error.value)
    assert "network scratch has no layer 'encoder.stage.1'" in message
    assert "Closest names: encoder.stages.1" in message
    assert "decoder.transpconvs.0" in message  # the names at that depth are listed
    # nnU-Net's alias of the encoder inside the decoder resolves to the same module.
    assert find_layer(network, "decoder.encoder.stages.1") is network.encoder.stages[1]


def test_layer_plan_forms():
    networks = unets(2)
    assert layer_plan(networks, ["encoder.stages.1"]) == {
        "encoder.stages.1": {"net0": "encoder.stages.1", "net1": "encoder.stages.1"}}
    plan = layer_plan(networks, {"net0": {"deep": "encoder.stages.2"}})
    assert plan["deep"] == {"net0": "encoder.stages.2"}
    assert plan["encoder-1"] == {"net1": "encoder.stages.0"}  # net1 keeps its defaults
    with pytest.raises(UserError, match="unknown networks"):
        layer_plan(networks, {"other": ["encoder.stages.0"]})


# -- capture -----------------------------------------------------------------------------------


def test_capture_equals_direct_computation_on_all_activations(preprocessed):
    networks = unets(3)
    sampler = BlockSampler(preprocessed, PATCH, 4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deepest layer has few voxels per channel
        captured = capture_moments(networks, sampler)
        plan = layer_plan(networks)
        direct = direct_activations(networks, sampler, plan)
        assert captured.layers == plan
        for label in plan:
            assert captured.layout[label] == "stacked"
            assert captured.datapoints[label] == direct[label]["net0"].shape[0]
            for a, b in [("net0", "net1"), ("net1", "net0"), ("net2", "net0")]:
                x, y = direct[label][a], direct[label][b]
                assert abs(captured.pwcca(a, b, label) - pwcca(x, y)) < 1e-8
                assert abs(captured.pwcca(a, b, label, weighting="morcos")
                           - pwcca(x, y, weighting="morcos")) < 1e-8
                assert abs(captured.svcca(a, b, label) - svcca(x, y)) < 1e-8
                assert abs(captured.linear_cka(a, b, label) - linear_cka(x, y)) < 1e-8
    assert captured.blocks == sampler.blocks
    assert captured.channels["encoder-3"] == {"net0": 16, "net1": 16, "net2": 16}
    assert captured.feature_shape["encoder-3"] == (4, 4, 4)


def test_every_network_sees_the_same_blocks_and_voxels(preprocessed):
    network = unets(1)["net0"]
    twin = copy.deepcopy(network)
    sampler = BlockSampler(preprocessed, PATCH, 3, seed=5)
    captured = capture_moments({"a": network, "b": twin}, sampler,
                               ["encoder.stages.0", "decoder.stages.1"], voxels_per_block=300)
    for label in captured.labels:
        # The same function of the same input on the same voxels: the co-moment of a with b is
        # that of a with itself.
        assert abs(captured.linear_cka("a", "b", label) - 1.0) < 1e-12
        assert abs(captured.pwcca("a", "b", label) - 1.0) < 1e-8
        assert captured.datapoints[label] == 3 * 300
    # The voxel subset is seeded: another capture keeps the same voxels, whatever the batch
    # size (which changes float32 convolution results in the last bits only).
    again = capture_moments({"a": network, "b": twin}, sampler, ["encoder.stages.0"],
                            voxels_per_block=300, batch_size=3)
    first, _, _ = captured.moments("a", "b", "encoder.stages.0")
    second, _, _ = again.moments("a", "b", "encoder.stages.0")
    np.testing.assert_allclose(second.comoment, first.comoment, rtol=1e-5)
    np.testing.assert_allclose(second.mean, first.mean, rtol=1e-5)


def test_requested_pairs_take_the_cheaper_layout_with_the_same_values(preprocessed):
    networks = unets(3)
    sampler = BlockSampler(preprocessed, PATCH, 2, seed=1)
    layers = ["encoder.stages.1", "decoder.stages.1"]
    stacked = capture_moments(networks, sampler, layers)
    # Two of three pairs: 2 x (2C)^2 < (3C)^2, so one accumulator per pair.
    paired = capture_moments(networks, sampler, layers,
                             pairs=[("net0", "net1"), ("net2", "net0")])
    for label in layers:
        assert paired.layout[label] == "pairs"
        assert paired.pairs(label) == [("net0", "net1"), ("net0", "net2")]
        for a, b in [("net0", "net1"), ("net0", "net2"), ("net2", "net0")]:
            assert abs(paired.pwcca(a, b, label) - stacked.pwcca(a, b, label)) < 1e-10
    with pytest.raises(UserError, match=r"pair \(net1, net2\) was not requested"):
        paired.pwcca("net1", "net2", "encoder.stages.1")
    with pytest.raises(UserError, match="no layer 'encoder.stages.7' was captured"):
        paired.pwcca("net0", "net1", "encoder.stages.7")


def test_networks_of_different_architectures_pair_by_label(preprocessed):
    kwargs = base_kwargs([[1, 1, 1], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3, features=(4, 8, 16))
    torch.manual_seed(0)
    karimi = build_network("karimi", kwargs, PATCH, 1, 2)
    unet = unets(1)["net0"]
    sampler = BlockSampler(preprocessed, PATCH, 2, seed=2)
    layers = {"unet": {"full resolution": "encoder.stages.0"},
              "karimi": {"full resolution": "encoder.stages.0"}}
    captured = capture_moments({"unet": unet, "karimi": karimi}, sampler, layers)
    assert 0.0 <= captured.pwcca("unet", "karimi", "full resolution") <= 1.0
    mismatched = {"unet": {"x": "encoder.stages.0"}, "karimi": {"x": "encoder.stages.1"}}
    with pytest.raises(UserError, match="'x' has maps of .* in unet .* but .* in karimi"):
        capture_moments({"unet": unet, "karimi": karimi}, sampler, mismatched)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_default_layers_of_every_extra_architecture_are_captured(preprocessed, name):
    kwargs = base_kwargs([[1, 1, 1], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3, features=(4, 8, 16))
    networks = {}
    for seed in range(2):
        torch.manual_seed(seed)
        networks[f"seed{seed}"] = build_network(name, kwargs, PATCH, 1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few voxels per channel at the coarsest maps
        captured = capture_moments(networks, BlockSampler(preprocessed, PATCH, 1))
        assert len(captured.labels) == 6
        for label in captured.labels:
            assert 0.0 <= captured.pwcca("seed0", "seed1", label) <= 1.0


def test_eval_mode_no_grad_and_training_flag_restored(preprocessed):
    network = unets(1)["net0"]
    network.train()
    network.encoder.eval()  # as a frozen encoder is kept during training
    seen = {}
    handle = network.decoder.stages[0].register_forward_hook(
        lambda m, i, o: seen.update(training=m.training, grad=torch.is_grad_enabled()))
    capture_moments({"a": network}, BlockSampler(preprocessed, PATCH, 1), ["encoder.stages.0"])
    handle.remove()
    assert seen == {"training": False, "grad": False}
    assert network.training and network.decoder.training
    assert not network.encoder.training and not network.encoder.stages[0].training
    assert not network.encoder.stages[0]._forward_hooks  # our hooks are gone


def test_too_few_voxels_warn_with_the_ratio_and_none_is_refused(preprocessed):
    networks = unets(2)
    sampler = BlockSampler(preprocessed, PATCH, 1)
    with pytest.warns(UserWarning, match=r"only 0\.25 datapoints per channel \(4 datapoints, "
                                         r"16 channels\)"):
        capture_moments(networks, sampler, ["encoder.stages.2"], voxels_per_block=4)
    with pytest.raises(UserError, match="voxels_per_block must be at least 1"):
        capture_moments(networks, sampler, ["encoder.stages.2"], voxels_per_block=0)


def test_refusals_of_unusable_layers_and_inputs(preprocessed):
    networks = unets(2)
    sampler = BlockSampler(preprocessed, PATCH, 1)
    with pytest.raises(UserError, match="network net0 has no layer 'encoder.stage.0'"):
        capture_moments(networks, sampler, ["encoder.stage.0"])
    with pytest.raises(UserError, match="layer decoder of net0 returns list, not a feature map"):
        capture_moments(networks, sampler, ["decoder"])
    shared = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1))
    twice = torch.nn.Sequential(shared, torch.nn.ReLU(), torch.nn.Conv3d(4, 1, 1), shared)
    with pytest.raises(UserError, match="runs more than once per forward pass"):
        capture_moments({"twice": twice}, sampler, ["0"])
    two_channel = {"a": plain_unet(in_channels=2)}
    with pytest.raises(UserError, match=r"network a \(PlainConvUNet\) failed .*input channels"):
        capture_moments(two_channel, sampler, ["encoder.stages.0"])
    with pytest.raises(UserError, match="pairs name unknown networks"):
        capture_moments(networks, sampler, pairs=[("net0", "other")])
