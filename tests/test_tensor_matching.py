"""The rules that fit a checkpoint tensor to another shape (kernels, stages, channels by
name), checked on the layers they feed: the response the rule promises is the one computed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_transfer.architectures import partition
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.training.pretrained import apply_load, frozen_part_refusal, plan_load
from nnunet_transfer.training.tensor_matching import (
    fit_kernel, output_channel_names, stage_key)

from support.networks import batch, plain_unet

LABELS2 = {"background": 0, "organ": 1}
INPUT = "encoder.stages.0.0.convs.0.conv.weight"


def _conv(kernel, seed=0) -> nn.Conv3d:
    torch.manual_seed(seed)
    return nn.Conv3d(2, 3, kernel, padding=[k // 2 for k in kernel])


def _fitted_conv(source: nn.Conv3d, kernel) -> nn.Conv3d:
    target = _conv(kernel, seed=1)
    weight, _ = fit_kernel(source.weight.detach(), tuple(kernel), transposed=False)
    with torch.no_grad():
        target.weight.copy_(weight)
        target.bias.copy_(source.bias)
    return target


def test_3x3x3_into_1x3x3_keeps_the_response_to_an_input_constant_along_the_cut_axis():
    source = _conv((3, 3, 3))
    target = _fitted_conv(source, (1, 3, 3))
    constant = torch.full((1, 2, 6, 6, 6), 0.7)
    inner = (slice(None), slice(None), slice(1, -1))  # away from the z borders' zero padding
    assert torch.allclose(target(constant)[inner], source(constant)[inner], atol=1e-5)
    along_z = torch.randn(1, 2, 1, 6, 6).expand(1, 2, 6, 6, 6)
    assert torch.allclose(target(along_z)[inner], source(along_z)[inner], atol=1e-5)
    # the central slice is kept, the outer ones summed onto it
    assert torch.allclose(target.weight[:, :, 0], source.weight.sum(2), atol=1e-6)


def test_1x3x3_into_3x3x3_is_placed_centrally_and_computes_the_same_on_any_input():
    source = _conv((1, 3, 3))
    target = _fitted_conv(source, (3, 3, 3))
    image = torch.randn(1, 2, 5, 6, 7)
    assert torch.allclose(target(image), source(image), atol=1e-5)
    assert not target.weight[:, :, [0, 2]].any()


def test_5_into_3_folds_outer_slices_onto_the_nearest_kept_one():
    weight = torch.arange(5.0).reshape(1, 1, 5, 1, 1)
    fitted, _ = fit_kernel(weight, (3, 1, 1), transposed=False)
    assert fitted.flatten().tolist() == [0 + 1, 2, 3 + 4]
    assert fit_kernel(weight, (2, 1, 1), transposed=False) is None  # no centre


def _transposed(kernel, seed=0) -> nn.ConvTranspose3d:
    torch.manual_seed(seed)
    return nn.ConvTranspose3d(2, 3, kernel, stride=kernel)


@pytest.mark.parametrize("have, want", [((2, 2, 1), (2, 2, 2)), ((2, 2, 2), (2, 2, 1))])
def test_transposed_kernel_2x2x2_and_2x2x1(have, want):
    """nnU-Net issue #2760. Upsampling gained on an axis: each output voxel gets the source's
    value (repeated), so a constant input gives the same response; lost: the mean of the
    source's two outputs."""
    source, target = _transposed(have), _transposed(want, seed=1)
    weight, _ = fit_kernel(source.weight.detach(), want, transposed=True)
    with torch.no_grad():
        target.weight.copy_(weight)
        target.bias.copy_(source.bias)
    image = torch.randn(1, 2, 3, 3, 3)
    out_s, out_t = source(image), target(image)
    if want[2] > have[2]:
        assert torch.allclose(out_t, out_s.repeat_interleave(2, dim=4), atol=1e-5)
        constant = torch.full((1, 2, 3, 3, 3), 0.3)
        assert torch.allclose(target(constant), source(constant).repeat_interleave(2, dim=4))
    else:
        pooled = nn.functional.avg_pool3d(out_s, (1, 1, 2))
        assert torch.allclose(out_t, pooled, atol=1e-5)


def _checkpoint(network, labels=LABELS2, channels=None, **fields) -> Checkpoint:
    dataset_json = {"labels": labels, **({"channel_names": channels} if channels else {})}
    return Checkpoint("source", dict(network.state_dict()), {"dataset_json": dataset_json},
                      **fields)


def _plan(source_net, target_net, checkpoint=None, labels=LABELS2, channels=None, **options):
    return plan_load(target_net, partition(target_net), checkpoint or _checkpoint(source_net),
                     num_input_channels=target_net.encoder.stages[0][0].convs[0].conv.in_channels,
                     target_dataset_json={"labels": labels,
                                          **({"channel_names": channels} if channels else {})},
                     **options)


def test_stage_key_moves_decoder_levels_only():
    assert stage_key("decoder.stages.0.convs.0.conv.weight", 3, 4) == (
        "decoder.stages.1.convs.0.conv.weight")
    assert stage_key("decoder.seg_layers.0.weight", 4, 3) is None
    assert stage_key("encoder.stages.2.0.convs.0.conv.weight", 3, 4) == (
        "encoder.stages.2.0.convs.0.conv.weight")


def test_fewer_stages_load_the_matching_levels():
    torch.manual_seed(3)
    source, target = plain_unet(n_stages=4), plain_unet(n_stages=3)
    report = _plan(source, target)
    assert report.encoder_loaded and report.fully_loaded("decoder") and report.fully_loaded("head")
    unused = {r.key for r in report.rows if r.status == "unused"}
    assert unused and all(k.startswith(("encoder.stages.3.", "decoder.stages.0.",
                                        "decoder.transpconvs.0.", "decoder.seg_layers.0."))
                          for k in unused)  # the source's deepest level
    assert "encoder.stages.3.0.convs.0.conv.weight" in unused
    apply_load(target, report)
    for j in range(2):
        assert torch.equal(target.decoder.stages[j].convs[0].conv.weight,
                           source.decoder.stages[j + 1].convs[0].conv.weight)
        assert torch.equal(target.decoder.seg_layers[j].weight,
                           source.decoder.seg_layers[j + 1].weight)
    assert torch.equal(target.encoder.stages[2][0].convs[1].conv.weight,
                       source.encoder.stages[2][0].convs[1].conv.weight)


def test_more_stages_start_the_extra_levels_fresh():
    source, target = plain_unet(n_stages=3), plain_unet(n_stages=4)
    deepest_before = target.decoder.stages[0].convs[0].conv.weight.clone()
    report = _plan(source, target)
    fresh = {r.key for r in report.rows if r.status == "fresh"}
    assert fresh and all(k.startswith(("encoder.stages.3.", "decoder.stages.0.",
                                       "decoder.transpconvs.0.", "decoder.seg_layers.0."))
                         for k in fresh)
    assert all("the source has 3 stages" in r.note for r in report.rows if r.key in fresh)
    assert not report.fully_loaded("encoder")
    apply_load(target, report)
    assert torch.equal(target.decoder.stages[0].convs[0].conv.weight, deepest_before)
    assert torch.equal(target.decoder.stages[2].convs[0].conv.weight,
                       source.decoder.stages[1].convs[0].conv.weight)
    assert "encoder.stages.3.0.convs.0.conv.weight" in frozen_part_refusal(
        "nnUNetTrainer_FrozenEncoder", "encoder", report)


def test_anisotropic_kernels_and_transposed_strides_are_adapted_in_the_table():
    source = plain_unet(n_stages=3)
    target = plain_unet(n_stages=3, kernel_sizes=[[3, 3, 3], [1, 3, 3], [1, 3, 3]],
                        strides=[[1, 1, 1], [2, 2, 2], [1, 2, 2]])
    report = _plan(source, target)
    adapted = {r.key: r.note for r in report.rows if r.status == "adapted"}
    assert "encoder.stages.1.0.convs.0.conv.weight" in adapted
    assert "3x3x3 -> 1x3x3" in adapted["encoder.stages.1.0.convs.0.conv.weight"]
    assert "2x2x2 -> 1x2x2" in adapted["decoder.transpconvs.0.weight"]
    assert report.fully_loaded("encoder") and report.fully_loaded("decoder")
    table = report.table()
    assert all(key in table for key in adapted)
    apply_load(target, report)
    out = target(batch())
    assert all(torch.isfinite(o).all() for o in out)


def test_input_channels_by_name_keep_the_named_modality():
    torch.manual_seed(4)
    source, target = plain_unet(in_channels=1), plain_unet(in_channels=2)
    checkpoint = _checkpoint(source, channels={"0": "MRI"})
    report = _plan(source, target, checkpoint, channels={"0": "CT", "1": "mri"})
    row = next(r for r in report.rows if r.key == INPUT)
    assert row.status == "adapted" and "kept mri" in row.note and "mean rule for ct" in row.note
    apply_load(target, report)
    weight_s = source.encoder.stages[0][0].convs[0].conv.weight
    weight_t = target.encoder.stages[0][0].convs[0].conv.weight
    assert torch.equal(weight_t[:, 1], weight_s[:, 0])
    assert torch.allclose(weight_t[:, 0], weight_s[:, 0] / 2)


def test_input_channels_in_another_order_are_reordered():
    source, target = plain_unet(in_channels=2), plain_unet(in_channels=2)
    checkpoint = _checkpoint(source, channels={"0": "T1", "1": "T2"})
    report = _plan(source, target, checkpoint, channels={"0": "T2", "1": "T1"})
    assert next(r for r in report.rows if r.key == INPUT).status == "adapted"
    apply_load(target, report)
    assert torch.equal(target.encoder.stages[0][0].convs[0].conv.weight,
                       source.encoder.stages[0][0].convs[0].conv.weight[:, [1, 0]])


def test_encoder_only_checkpoint_and_origins_are_in_the_notes():
    source, target = plain_unet(), plain_unet()
    encoder = {k: v for k, v in source.state_dict().items() if k.startswith("encoder.")}
    checkpoint = Checkpoint("ssl.pth", encoder, encoder_only=True,
                            origins={INPUT: "v1 conv_blocks_context.0.blocks.0.conv.weight"})
    report = _plan(source, target, checkpoint)
    assert report.fully_loaded("encoder") and not report.problems
    assert {r.status for r in report.rows if r.part != "encoder"} == {"fresh"}
    assert all("the checkpoint holds an encoder only" in r.note
               for r in report.rows if r.part != "encoder")
    assert "v1 conv_blocks_context.0.blocks.0.conv.weight" in report.table()
    assert not [r for r in report.rows if r.status == "unused"]


def test_region_and_ignore_labels_name_the_output_channels():
    assert output_channel_names({"background": 0, "b": 2, "a": 1, "ignore": 3}) == [
        "background", "a", "b"]
    assert output_channel_names({"background": 0, "whole": [1, 2], "core": 2}, [1, 2]) == [
        "region whole", "region core"]
    assert output_channel_names(None) is None
