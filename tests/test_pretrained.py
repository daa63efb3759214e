"""The preflight report and the tolerant loader, on real nnU-Net networks in-process."""

import os

import pytest
import torch

from nnunet_transfer.architectures import partition
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.pretrained import (
    PRETRAINED, adapt_input_channels, apply_load, plan_load, refusal_message)

from support.networks import batch, checkpoint_of, plain_unet

LABELS2 = {"background": 0, "organ": 1}
LABELS3 = {"background": 0, "organ": 1, "core": 2}


def _save(tmp_path, content, name="source.pth"):
    path = os.path.join(tmp_path, name)
    torch.save(content, path)
    return path


def _plan(tmp_path, source_net, target_net, source_labels=LABELS2, target_labels=LABELS2,
          **options):
    source = Checkpoint.read(_save(tmp_path, checkpoint_of(source_net, source_labels)),
                             PRETRAINED)
    return plan_load(target_net, partition(target_net), source,
                     num_input_channels=target_net.encoder.stages[0][0].convs[0].conv.in_channels,
                     target_dataset_json={"labels": target_labels}, **options)


def test_same_network_and_labels_loads_everything(tmp_path):
    torch.manual_seed(0)
    source, target = plain_unet(), plain_unet()
    report = _plan(tmp_path, source, target)
    assert not report.problems and {r.status for r in report.rows} == {"loaded"}
    apply_load(target, report)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(),
                                                  target.state_dict().values()))


def test_other_classes_keep_the_shared_labels_output_channels(tmp_path):
    """Heads by label name (issue 12; before, the whole head was re-initialised): background
    and organ keep the source's channels in every output layer, the new label 'core' keeps
    the network's own init."""
    source, target = plain_unet(classes=2), plain_unet(classes=3)
    heads_before = [layer.weight.clone() for layer in target.decoder.seg_layers]
    report = _plan(tmp_path, source, target, target_labels=LABELS3)
    assert not report.problems
    statuses = {(r.part, r.status) for r in report.rows}
    assert statuses == {("encoder", "loaded"), ("decoder", "loaded"), ("head", "adapted")}
    assert all(r.partial and "core" in r.note for r in report.rows if r.part == "head")
    assert not report.fully_loaded("head")
    apply_load(target, report)
    for layer_s, layer_t, before in zip(source.decoder.seg_layers, target.decoder.seg_layers,
                                        heads_before):
        assert torch.equal(layer_t.weight[:2], layer_s.weight)
        assert torch.equal(layer_t.bias[:2], layer_s.bias)
        assert torch.equal(layer_t.weight[2], before[2])
    assert torch.equal(target.encoder.stages[0][0].convs[0].conv.weight,
                       source.encoder.stages[0][0].convs[0].conv.weight)
    assert report.head_note.startswith("by label name: background, organ from the source")


def test_other_label_names_keep_only_the_shared_ones(tmp_path):
    other = {"background": 0, "tumour": 1}
    source, target = plain_unet(), plain_unet()
    tumour_before = target.decoder.seg_layers[-1].weight[1].clone()
    report = _plan(tmp_path, source, target, target_labels=other)
    assert {r.status for r in report.rows if r.part == "head"} == {"adapted"}
    apply_load(target, report)
    assert torch.equal(target.decoder.seg_layers[-1].weight[0],
                       source.decoder.seg_layers[-1].weight[0])
    assert torch.equal(target.decoder.seg_layers[-1].weight[1], tumour_before)
    nothing_shared = {"nothing": 0, "tumour": 1}
    report = _plan(tmp_path, plain_unet(), plain_unet(), target_labels=nothing_shared)
    assert {r.status for r in report.rows if r.part == "head"} == {"fresh"}
    assert report.head_note.startswith("fresh: no label name in common")


def test_labels_are_matched_by_name_not_by_value(tmp_path):
    """A label's output channel follows its name: swapped values swap the channels."""
    swapped = {"background": 0, "core": 1, "organ": 2}
    source, target = plain_unet(classes=3), plain_unet(classes=3)
    report = _plan(tmp_path, source, target, source_labels=LABELS3, target_labels=swapped)
    assert {r.status for r in report.rows if r.part == "head"} == {"adapted"}
    assert report.fully_loaded("head")
    apply_load(target, report)
    assert torch.equal(target.decoder.seg_layers[0].weight[[0, 2, 1]],
                       source.decoder.seg_layers[0].weight)
    # The order of dataset.json's entries does not change a channel's label: loaded as is.
    reordered = {"background": 0, "core": 2, "organ": 1}
    report = _plan(tmp_path, plain_unet(classes=3), plain_unet(classes=3),
                   source_labels=LABELS3, target_labels=reordered)
    assert {r.status for r in report.rows if r.part == "head"} == {"loaded"}


def test_head_reinit_option(tmp_path):
    report = _plan(tmp_path, plain_unet(), plain_unet(), head="reinit")
    assert {r.status for r in report.rows if r.part == "head"} == {"fresh"}
    assert report.head_note == "fresh (NNUNET_TRANSFER_HEAD=reinit)"


@pytest.mark.parametrize("source_channels, target_channels", [(1, 2), (3, 1), (2, 4)])
def test_input_channels_are_adapted(tmp_path, source_channels, target_channels):
    torch.manual_seed(1)
    source, target = plain_unet(in_channels=source_channels), plain_unet(in_channels=target_channels)
    report = _plan(tmp_path, source, target)
    adapted = [r for r in report.rows if r.status == "adapted"]
    assert [r.key for r in adapted] == ["encoder.stages.0.0.convs.0.conv.weight"]
    apply_load(target, report)
    # An image repeated on every channel gives the source's response to that image.
    image = batch(1)
    conv_s = source.encoder.stages[0][0].convs[0].conv
    conv_t = target.encoder.stages[0][0].convs[0].conv
    expected = conv_s(image.repeat(1, source_channels, 1, 1, 1))
    assert torch.allclose(conv_t(image.repeat(1, target_channels, 1, 1, 1)), expected, atol=1e-5)


def test_adapt_input_channels_formula():
    weight = torch.arange(2 * 3 * 1 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1, 1)
    adapted = adapt_input_channels(weight, 2)
    assert adapted.shape == (2, 2, 1, 1, 1)
    assert torch.allclose(adapted[:, 0].flatten(), weight.mean(1).flatten() * 1.5)


def test_other_architecture_is_refused_with_table_and_fix(tmp_path):
    """Other channel counts start fresh tensor by tensor (issue 12; before, each one refused
    the load); the load is refused when none of the encoder's weights loaded."""
    report = _plan(tmp_path, plain_unet(n_stages=4, features=4), plain_unet(n_stages=3, features=6))
    assert not report.encoder_loaded
    kinds = {r.status for r in report.problems}
    assert {"fresh", "unused"} <= kinds
    message = refusal_message(report, "Dataset802_T, plans P, configuration 3d_fullres",
                              report.source.network_class or "x.PlainConvUNet")
    assert "nnunet-transfer plans-transfer --source" in message
    assert "channel counts differ" in message
    mismatched = next(r for r in report.rows if "channel counts differ" in r.note)
    assert f"{mismatched.key}" in message
    assert "NNUNET_TRANSFER_LOAD=encoder" in message


def test_checkpoint_of_another_architecture_names_both(tmp_path):
    report = _plan(tmp_path, plain_unet(n_stages=4, features=4), plain_unet(n_stages=3, features=6))
    report.source.network_class = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    message = refusal_message(report, "Dataset802_T, plans P, configuration 3d_fullres_hrnet",
                              "nnunet_transfer.architectures.hrnet.HRNet3D")
    assert "another architecture" in message
    assert "PlainConvUNet" in message and "HRNet3D" in message
    assert "add-architectures" in message


def test_encoder_only_loading_leaves_decoder_random(tmp_path):
    torch.manual_seed(2)
    source, target = plain_unet(), plain_unet()
    decoder_before = target.decoder.stages[0].convs[0].conv.weight.clone()
    report = _plan(tmp_path, source, target, load="encoder")
    assert not report.problems and report.fully_loaded("encoder")
    assert not report.fully_loaded("decoder")
    apply_load(target, report)
    assert torch.equal(target.decoder.stages[0].convs[0].conv.weight, decoder_before)
    assert torch.equal(target.encoder.stages[1][0].convs[0].conv.weight,
                       source.encoder.stages[1][0].convs[0].conv.weight)


def test_encoder_only_loading_tolerates_other_decoder(tmp_path):
    source = plain_unet(n_stages=3)
    target = plain_unet(n_stages=3)
    target.decoder.stages[0].convs[0].conv = torch.nn.Conv3d(16, 8, 1)  # another decoder
    report = _plan(tmp_path, source, target, load="encoder")
    assert not report.problems


def test_wrapper_prefixes_are_stripped(tmp_path):
    source = plain_unet()
    weights = {"module._orig_mod." + k: v for k, v in source.state_dict().items()}
    path = _save(tmp_path, {"network_weights": weights})
    assert set(Checkpoint.read(path, PRETRAINED).weights) == set(source.state_dict())


def test_bare_state_dict_is_accepted(tmp_path):
    source = plain_unet()
    checkpoint = Checkpoint.read(_save(tmp_path, source.state_dict()), PRETRAINED)
    assert checkpoint.labels is None and set(checkpoint.weights) == set(source.state_dict())


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    (b"not a checkpoint at all", "not a readable PyTorch checkpoint"),
    ({"epoch": 3}, "holds no network weights"),
])
def test_bad_checkpoint_files_are_user_errors(tmp_path, content, words):
    path = os.path.join(tmp_path, "bad.pth")
    if isinstance(content, bytes):
        open(path, "wb").write(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UserError, match=words):
        Checkpoint.read(path, PRETRAINED)


def test_truncated_checkpoint_is_a_user_error(tmp_path):
    path = _save(tmp_path, checkpoint_of(plain_unet()))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated"):
        Checkpoint.read(path, PRETRAINED)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        Checkpoint.read(str(tmp_path), PRETRAINED)
