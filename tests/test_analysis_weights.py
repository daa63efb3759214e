"""Weight dynamics (nnunet_transfer.analysis.weights): relative filter-norm and weight change per
convolution on constructed state dicts with known answers, the part of each layer, snapshots of a
run, the convergence epoch on a constructed log, and clear refusals."""

from __future__ import annotations

import csv
import math
import os

import pytest
import torch
from support.architecture_checks import base_kwargs

from nnunet_transfer.analysis.weights import (
    convergence_epoch,
    run_snapshots,
    snapshot_path,
    weight_changes,
)
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.architectures.registry import architecture_entry
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.bookkeeping import EPOCH_COLUMNS, RunRecord

PATCH = [16, 16, 16]
KWARGS = base_kwargs([[1, 1, 1], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3, features=(4, 8, 16))
UNET_ARCHITECTURE = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": KWARGS, "_kw_requires_import": ["conv_op", "norm_op", "nonlin"]}


def checkpoint(architecture: dict, weights: dict | None = None) -> dict:
    """An nnU-Net checkpoint (the entries the analysis reads) whose plans hold `architecture`."""
    plans = {"dataset_name": "Dataset501_S", "plans_name": "P", "label_manager": "LabelManager",
             "configurations": {"3d_fullres": {"data_identifier": "P_3d_fullres",
                                               "patch_size": PATCH,
                                               "architecture": architecture}}}
    content = {"init_args": {"plans": plans, "configuration": "3d_fullres",
                             "dataset_json": {"channel_names": {"0": "MR"},
                                              "labels": {"background": 0, "a": 1}}},
               "trainer_name": "nnUNetTrainer_Scratch", "current_epoch": 0}
    if weights is None:
        torch.manual_seed(0)
        weights = Checkpoint.of({**content, "network_weights": {}}).network(
            load_weights=False).state_dict()
    content["network_weights"] = weights
    return content


@pytest.fixture(scope="module")
def start() -> dict:
    return checkpoint(UNET_ARCHITECTURE)


def changed(start: dict, edit) -> dict:
    weights = {k: v.clone() for k, v in start["network_weights"].items()}
    edit(weights)
    # nnU-Net's state dicts list the encoder twice (decoder.encoder.* is the same module);
    # keep the alias equal, as a real checkpoint has it.
    for key in weights:
        if key.startswith("decoder.encoder."):
            weights[key] = weights[key[len("decoder."):]]
    return {**start, "network_weights": weights}


def by_layer(changes) -> dict:
    return {c.layer: c for c in changes}


# -- weight change -----------------------------------------------------------------------------


def test_known_changes_per_layer_and_part(start):
    first = "encoder.stages.0.0.convs.0.conv"
    flipped = "decoder.stages.0.convs.1.conv"
    up = "decoder.transpconvs.0"

    def edit(weights):
        weights[f"{first}.weight"] *= 2  # every norm doubles (x2 and x4 are exact in float32)
        weights[f"{flipped}.weight"][0] *= -1  # one filter flipped: norms unchanged
        weights[f"{up}.weight"][:, 1] *= 4  # transposed conv: output filter 1 is W[:, 1]

    changes = by_layer(weight_changes(start, changed(start, edit)))
    scaled = changes[first]
    assert scaled.part == "encoder" and scaled.module_type == "Conv3d"
    assert scaled.shape == (4, 1, 3, 3, 3) and scaled.filters == 4
    for value in (scaled.norm_change, scaled.weight_change, scaled.filter_norm_change_mean,
                  scaled.filter_norm_change_median):
        assert abs(value - 1.0) < 1e-12

    flip = changes[flipped]
    w = start["network_weights"][f"{flipped}.weight"].double()
    assert flip.part == "decoder"
    assert abs(flip.norm_change) < 1e-12 and abs(flip.filter_norm_change_mean) < 1e-12
    assert abs(flip.weight_change - 2 * w[0].norm() / w.norm()) < 1e-12

    transposed = changes[up]
    w = start["network_weights"][f"{up}.weight"].double()  # (in 16, out 8, 2, 2, 2)
    assert transposed.module_type == "ConvTranspose3d" and transposed.filters == 8
    assert abs(transposed.filter_norm_change_mean - 3 / 8) < 1e-12  # one filter of 8 x4
    assert transposed.filter_norm_change_median == 0.0
    expected = (torch.sqrt(w.norm() ** 2 + 15 * w[:, 1].norm() ** 2) - w.norm()) / w.norm()
    assert abs(transposed.norm_change - float(expected)) < 1e-12

    untouched = [c for name, c in changes.items() if name not in (first, flipped, up)]
    assert untouched and all(c.weight_change == 0.0 for c in untouched)
    assert {c.part for c in changes.values()} == {"encoder", "decoder", "head"}
    assert changes["decoder.seg_layers.0"].part == "head"
    # Every convolution once, the encoder not twice through its decoder.encoder alias.
    assert not any(name.startswith("decoder.encoder") for name in changes)


def test_zero_start_norm_gives_nan_not_an_error(start):
    def zero_first_filter(weights):
        weights["encoder.stages.0.0.convs.0.conv.weight"][0] = 0.0

    def zero_layer(weights):
        weights["decoder.seg_layers.0.weight"].zero_()

    zeroed = changed(start, zero_first_filter)
    change = by_layer(weight_changes(zeroed, start))["encoder.stages.0.0.convs.0.conv"]
    assert change.zero_filters == 1 and change.filter_norm_change_mean == 0.0
    head = by_layer(weight_changes(changed(start, zero_layer), start))["decoder.seg_layers.0"]
    assert math.isnan(head.norm_change) and math.isnan(head.weight_change)


def test_checkpoint_files_and_a_given_network(tmp_path, start):
    end = changed(start, lambda w: w["encoder.stages.1.0.convs.0.conv.weight"].mul_(0.8))
    paths = [str(tmp_path / "epoch_0000.pth"), str(tmp_path / "epoch_0002.pth")]
    for path, content in zip(paths, (start, end)):
        torch.save(content, path)
    from_files = by_layer(weight_changes(*paths))
    # Bare state dicts need the network to know module types and parts.
    network = Checkpoint.of(start).network(load_weights=False)
    bare = by_layer(weight_changes(start["network_weights"], end["network_weights"], network))
    assert from_files == bare
    assert abs(from_files["encoder.stages.1.0.convs.0.conv"].norm_change - 0.2) < 1e-6
    with pytest.raises(UserError, match="pass network="):
        weight_changes(start["network_weights"], end["network_weights"])
    with pytest.raises(UserError, match="does not exist"):
        weight_changes(str(tmp_path / "missing.pth"), paths[1])
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        weight_changes(str(tmp_path / "broken.pth"), paths[1])


def test_a_checkpoint_of_another_architecture_is_refused_naming_both(tmp_path, start):
    karimi = checkpoint(architecture_entry("karimi", KWARGS, PATCH))
    paths = {"unet": str(tmp_path / "unet.pth"), "karimi": str(tmp_path / "karimi.pth")}
    torch.save(start, paths["unet"])
    torch.save(karimi, paths["karimi"])
    with pytest.raises(UserError) as error:
        weight_changes(paths["unet"], paths["karimi"])
    message = str(error.value)
    assert f"{paths['unet']} (PlainConvUNet) and {paths['karimi']} (KarimiNet)" in message
    assert "hold different architectures" in message and "only in the first" in message
    # A network of another architecture than the checkpoints.
    with pytest.raises(UserError, match=r"the given network \(KarimiNet\) and state dict #1"):
        weight_changes(start, start, Checkpoint.of(karimi).network(load_weights=False))


# -- snapshots and convergence -----------------------------------------------------------------


def test_snapshots_of_a_run_and_clear_refusals(tmp_path):
    fold = tmp_path / "fold_0"
    with pytest.raises(UserError, match="does not exist"):
        run_snapshots(str(fold))
    fold.mkdir()
    with pytest.raises(UserError, match="not a run of nnunet-transfer's trainers"):
        run_snapshots(str(fold))
    record = RunRecord(str(fold))
    os.makedirs(record.snapshot_folder)
    with pytest.raises(UserError, match="has no snapshots"):
        run_snapshots(str(fold))
    for epochs in (10, 0, 5):
        record.save_snapshot(epochs, {"network_weights": {}})
    (tmp_path / "fold_0" / "transfer" / "snapshots" / "notes.txt").write_text("ignored")
    snapshots = run_snapshots(str(fold))
    assert list(snapshots) == [0, 5, 10]
    assert snapshot_path(str(fold), 5) == record.snapshot_path(5)
    with pytest.raises(UserError, match="no snapshot after 7 epochs; it has snapshots after "
                                        "0, 5, 10 epochs"):
        snapshot_path(str(fold), 7)


def write_log(path: str, dice: list[float], ema: list[float]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EPOCH_COLUMNS)
        writer.writeheader()
        for epoch, (d, e) in enumerate(zip(dice, ema)):
            writer.writerow({**{c: "" for c in EPOCH_COLUMNS}, "epoch": epoch,
                             "iterations": 25 * (epoch + 1), "pseudo_dice": d,
                             "ema_pseudo_dice": e, "cumulative_train_time_s": 10.0 * (epoch + 1),
                             "cumulative_time_s": 12.0 * (epoch + 1)})


def test_convergence_epoch_rule(tmp_path):
    fold = tmp_path / "fold_0"
    os.makedirs(fold / "transfer")
    log = RunRecord(str(fold)).epochs_path
    # Maximum 0.8 at epoch 4; 0.5 % below it is 0.796: epoch 2 (0.797) is the first within.
    write_log(log, [0.1, "nan", 0.797, 0.5, 0.8, 0.79], [0.05, 0.2, 0.4, 0.6, 0.7, 0.75])
    converged = convergence_epoch(log)
    assert (converged.epoch, converged.epochs_done, converged.value, converged.maximum) == (
        2, 3, 0.797, 0.8)
    assert converged.iterations == 75 and converged.cumulative_train_time_s == 30.0
    assert converged.cumulative_time_s == 36.0 and converged.column == "pseudo_dice"
    assert convergence_epoch(str(fold), tolerance=0.0).epoch == 4  # fold folder accepted
    assert convergence_epoch(log, tolerance=0.1).epoch == 2  # 0.72: still 0.797 first
    assert convergence_epoch(log, tolerance=0.9).epoch == 0  # 0.08
    # The smoother EMA: maximum 0.75, within 0.5 % only at the last epoch.
    assert convergence_epoch(log, column="ema_pseudo_dice").epoch == 5
    with pytest.raises(UserError, match="no column 'dice'; it has epoch, iterations"):
        convergence_epoch(log, column="dice")
    with pytest.raises(UserError, match="no epoch log"):
        convergence_epoch(str(tmp_path / "nowhere.csv"))
    write_log(log, ["nan"], ["nan"])
    with pytest.raises(UserError, match="no epoch with a value of pseudo_dice"):
        convergence_epoch(log)
