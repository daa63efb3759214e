"""`inspect` and `plans-transfer --source-model` on models made elsewhere, from real files made
here: every strategy judged with the parts it needs, plans naming a network that is not
installed, Git LFS pointers in place of weights, plans of nnU-Net 2.0-2.2, and parameters counted
on torch's meta device."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from nnunet_transfer.architectures import partition
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.architectures.registry import ARCHITECTURES, architecture_entry
from nnunet_transfer.cli import main
from nnunet_transfer.planning.transfer import model_plans
from nnunet_transfer.checkpoints.inspection import part_coverage
from nnunet_transfer.training.schedule import Phase, Rule, Schedule
from nnunet_transfer.training.strategies import STRATEGIES

from support.checkpoint_files import (
    old_format_plans, plain_arch_kwargs, v2_plans, write_v2_model)

PATCH = [32, 32, 32]
DATASET_JSON = {"labels": {"background": 0, "liver": 1}, "channel_names": {"0": "CT"},
                "file_ending": ".nii.gz", "numTraining": 4}
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def _resenc_kwargs(features: list[int]) -> dict:
    kwargs = plain_arch_kwargs(features)
    n = kwargs.pop("n_conv_per_stage") and len(features)
    return {**kwargs, "n_blocks_per_stage": [1] * n, "n_conv_per_stage_decoder": [1] * (n - 1)}


def _network(plans: dict) -> torch.nn.Module:
    """The network `plans` describe, built (randomly initialised) as nnU-Net builds it."""
    torch.manual_seed(0)
    content = {"network_weights": {}, "init_args": {
        "plans": plans, "configuration": "3d_fullres", "dataset_json": DATASET_JSON}}
    return Checkpoint.of(content).network(load_weights=False)


def _weights_of(plans: dict) -> dict:
    return _network(plans).state_dict()


def _model(root, plans: dict, weights: dict | None = None, **kwargs) -> str:
    return write_v2_model(str(root), plans, DATASET_JSON,
                          _weights_of(plans) if weights is None else weights, **kwargs)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI's own entry point in this process: exit code, stdout, stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _table(out: str) -> dict[str, tuple[str, str]]:
    """inspect's strategy table: trainer -> (needs, verdict)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  trainer "))
    header = lines[start]
    needs_at, verdict_at = header.index("needs"), header.index("verdict")
    rows = lines[start + 1:lines.index("", start)]
    return {row[:needs_at].strip(): (row[needs_at:verdict_at].strip(), row[verdict_at:])
            for row in rows}


# -- every strategy and the parts it needs ------------------------------------------------------

def test_schedule_holds_the_parts_some_phase_keeps_from_training():
    probe = Phase("probe", (Rule(parts=("head",)),), fraction=0.2)
    # the decoder trains whole, then a later rule sets its last stage to zero
    refrozen = Phase("late", (Rule(), Rule(parts=("decoder",), stages=(-1,), lr=0.0)))
    norms = Phase("norms", (Rule(parts=("encoder",), kinds=("norms",)),
                            Rule(parts=("decoder", "head"))))
    assert Schedule((probe, Phase("all", (Rule(),)))).parts_held() == {
        "encoder": "probe", "decoder": "probe"}
    assert Schedule((Phase("all", (Rule(),), epochs=3), refrozen)).parts_held() == {
        "decoder": "late"}
    assert Schedule((norms,)).parts_held() == {"encoder": "norms"}
    # a rule after a zero one trains the whole part again
    again = Phase("again", (Rule(lr=0.0), Rule(lr=0.5)))
    assert Schedule((again,)).parts_held() == {}


def test_inspect_judges_every_strategy_by_the_parts_it_needs(tmp_path, capsys):
    """A model whose file holds the encoder only (decoder and head missing): a strategy that
    holds the decoder in some phase is refused naming that phase, one that trains every
    part from the start runs with the decoder fresh; a custom strategy file is judged too."""
    plans = v2_plans(plain_arch_kwargs([4, 8, 16]), PATCH)
    network = _network(plans)
    part_of = partition(network).state_dict_parts(network)
    weights = {k: v for k, v in network.state_dict().items() if part_of[k] == "encoder"}
    folder = _model(tmp_path, plans, weights)
    custom = tmp_path / "ProbeEncoder.yaml"
    custom.write_text("phases:\n  - name: probe\n    epochs: 2\n    train:\n"
                      "      - parts: [decoder, head]\n  - name: rest\n    train:\n"
                      "      - parts: [encoder, decoder, head]\n")
    code, out, err = _cli(capsys, "inspect", folder, "--strategy-file", str(custom))
    assert code == 0, err
    table = _table(out)
    assert set(table) == {s.trainer_name for s in STRATEGIES} | {
        "nnUNetTrainer_Custom (ProbeEncoder)"}
    assert table["nnUNetTrainer_Scratch"] == (
        "-", "trains from random weights (takes no -pretrained_weights)")
    fresh_decoder = "yes, with NNUNET_TRANSFER_LOAD=encoder (decoder and head start fresh)"
    for trainer in ("FineTune", "LayerwiseLR", "WarmupFineTune"):
        assert table[f"nnUNetTrainer_{trainer}"] == ("nothing", fresh_decoder), trainer
    assert table["nnUNetTrainer_FrozenEncoder"] == ("encoder", fresh_decoder)
    for trainer, phase in (("LinearProbeThenFineTune", "probe"), ("GradualUnfreeze", "head")):
        assert table[f"nnUNetTrainer_{trainer}"] == (
            "encoder, decoder", f"no: holds the decoder (from phase {phase!r}), which the "
                                "file does not provide fully"), trainer
    for trainer in ("NormAndBias", "LoRA", "HeadOnly"):
        assert table[f"nnUNetTrainer_{trainer}"] == (
            "encoder, decoder", "no: freezes the decoder, which the file does not provide "
                                "fully"), trainer
    assert table["nnUNetTrainer_Custom (ProbeEncoder)"] == ("encoder", fresh_decoder)

    code, out, _ = _cli(capsys, "inspect", folder)
    assert _table(out)["nnUNetTrainer_Custom"][0] == "its file's"
    assert "--strategy-file FILE" in _table(out)["nnUNetTrainer_Custom"][1]


# -- parameters counted without initialising ----------------------------------------------------

@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_lays_out_on_the_meta_device_as_built(name):
    """The meta-device network inspect counts has the tensors, shapes and part split of the
    network nnU-Net builds, for every architecture we ship and nnU-Net's two U-Nets."""
    base = plain_arch_kwargs([4, 8, 16, 32])
    entry = architecture_entry(name, base, PATCH)
    plans = v2_plans(entry["arch_kwargs"], PATCH, entry["network_class_name"],
                     requires_import=entry["_kw_requires_import"])
    _assert_same_layout(plans)


@pytest.mark.parametrize("class_name", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_nnunet_unets_lay_out_on_the_meta_device_as_built(class_name):
    kwargs = (plain_arch_kwargs([4, 8, 16]) if class_name == "PlainConvUNet"
              else _resenc_kwargs([4, 8, 16]))
    _assert_same_layout(v2_plans(
        kwargs, PATCH, f"dynamic_network_architectures.architectures.unet.{class_name}"))


def _assert_same_layout(plans: dict) -> None:
    checkpoint = Checkpoint.of({"network_weights": {}, "init_args": {
        "plans": plans, "configuration": "3d_fullres", "dataset_json": DATASET_JSON}})
    built, laid_out = checkpoint.network(load_weights=False), checkpoint.network(
        load_weights=False, shapes_only=True)
    assert all(t.is_meta for t in laid_out.state_dict().values())
    assert {k: t.shape for k, t in laid_out.state_dict().items()} == {
        k: t.shape for k, t in built.state_dict().items()}
    built_parts, meta_parts = partition(built), partition(laid_out)
    for part in ("encoder", "decoder", "head"):
        assert (sum(p.numel() for p in meta_parts.parameters(part))
                == sum(p.numel() for p in built_parts.parameters(part)) > 0), part


def test_inspect_counts_the_parameters_of_the_network_nnunet_builds(tmp_path):
    plans = v2_plans(_resenc_kwargs([4, 8, 16]), PATCH, RESENC)
    weights = _weights_of(plans)
    counts, coverage = part_coverage(Checkpoint.read(_model(tmp_path, plans, weights)))
    network = Checkpoint.of({"network_weights": weights, "init_args": {
        "plans": plans, "configuration": "3d_fullres", "dataset_json": DATASET_JSON}}).network()
    parts = partition(network)
    assert counts == {p: sum(t.numel() for t in parts.parameters(p))
                      for p in ("encoder", "decoder", "head")}
    assert sum(counts.values()) == sum(t.numel() for t in network.parameters())
    assert coverage == {"encoder": "all", "decoder": "all", "head": "all"}


# -- a network class that is not installed here -------------------------------------------------

def _with_class(tmp_path, network_class: str, name: str) -> str:
    """A model folder whose plans name `network_class` (weights of a PlainConvUNet)."""
    plans = v2_plans(plain_arch_kwargs([4, 8, 16]), PATCH)
    weights = _weights_of(plans)
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = network_class
    return _model(tmp_path / name, plans, weights)


def test_uninstalled_network_class_is_refused_by_inspect_and_plans_transfer(
        tmp_path, capsys, monkeypatch):
    """A class from a package not installed here, and one the installed
    dynamic_network_architectures lacks: both commands name the class and what to install,
    exit 2, and plans-transfer writes nothing."""
    from importlib.metadata import requires
    pinned = next(r for r in requires("nnunet-transfer")
                  if r.startswith("dynamic-network-architectures"))
    cases = {
        _with_class(tmp_path, "fancy_nets.architectures.unet.FancyUNet", "other"): (
            "name the network class FancyUNet (fancy_nets.architectures.unet.FancyUNet), "
            "which is not installed here",
            "install the package that provides the module fancy_nets.architectures.unet"),
        _with_class(tmp_path, "dynamic_network_architectures.architectures.unet.NewerUNet",
                    "newer"): (
            "name the network class NewerUNet", "the installed dynamic_network_architectures",
            "lacks it", f"`pip install {pinned}`")}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    for folder, words in cases.items():
        for command in (("inspect", folder),
                        ("plans-transfer", "--source-model", folder, "--target", "7")):
            code, out, err = _cli(capsys, *command)
            assert code == 2 and "Traceback" not in err, (command, err)
            assert "checkpoint_final.pth: its plans (nnUNetPlans, configuration 3d_fullres)" in err
            assert all(w in err for w in words), (command, err)
    assert not os.listdir(tmp_path / "nnUNet_preprocessed")


def test_refusal_comes_before_anything_is_built(tmp_path):
    """As a real process: exit 2 without a traceback, and neither nnU-Net's network builder
    nor its search through every architecture module (which ends in its ImportError) ran."""
    folder = _with_class(tmp_path, "fancy_nets.FancyUNet", "fancy")
    script = ("import sys\nfrom nnunet_transfer.cli import main\n"
              f"try:\n    main(['inspect', {folder!r}])\n"
              "except SystemExit as stop:\n    print('exit', stop.code)\n"
              "print(sorted(m for m in sys.modules if m.endswith(('get_network_from_plans', "
              "'.primus', '.nnUNetTrainer'))))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.splitlines() == ["exit 2", "[]"], result
    assert "FancyUNet" in result.stderr and "Traceback" not in result.stderr


def test_a_class_nnunet_finds_by_its_name_is_accepted(tmp_path):
    """Plans naming a module that moved (nnU-Net's own conversion of old ResEnc plans names
    residual_unet): nnU-Net finds the class by name, and so does the check."""
    moved = "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet"
    plans = v2_plans(_resenc_kwargs([4, 8, 16]), PATCH, moved)
    checkpoint = Checkpoint.read(_model(tmp_path, plans, _weights_of(
        v2_plans(_resenc_kwargs([4, 8, 16]), PATCH, RESENC))))
    assert checkpoint.require_installed_network() == RESENC
    assert checkpoint.network().__class__.__name__ == "ResidualEncoderUNet"


# -- Git LFS pointers -----------------------------------------------------------------------------

LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
               "size 246123456\n")


def test_git_lfs_pointer_in_place_of_the_checkpoint(tmp_path, capsys):
    """checkpoint_final.pth, a v1 .model and plans.json as pointers: each is named as a Git
    LFS pointer with the size of the file it stands for and how to fetch it."""
    plans = v2_plans(plain_arch_kwargs([4, 8, 16]), PATCH)
    v2 = _model(tmp_path / "v2", plans)
    with open(os.path.join(v2, "fold_0", "checkpoint_final.pth"), "w") as f:
        f.write(LFS_POINTER)
    stripped = _model(tmp_path / "stripped", plans, with_init_args=False)
    with open(os.path.join(stripped, "plans.json"), "w") as f:
        f.write(LFS_POINTER)
    v1_model = tmp_path / "v1" / "fold_0" / "model_final_checkpoint.model"
    v1_model.parent.mkdir(parents=True)
    v1_model.write_text(LFS_POINTER)
    (tmp_path / "v1" / "plans.pkl").write_text(LFS_POINTER)
    for given, pointer in ((v2, "checkpoint_final.pth"), (stripped, "plans.json"),
                           (str(v1_model), "plans.pkl")):
        for command in (("inspect", given), ("plans-transfer", "--source-model", given,
                                             "--target", "7")):
            code, _, err = _cli(capsys, *command)
            assert code == 2 and "Traceback" not in err, (command, err)
            for words in (f"{pointer} is a Git LFS pointer", "standing for a 246,123,456-byte "
                          "file", "git lfs pull", "download the file itself"):
                assert words in err, (command, words, err)


# -- plans of nnU-Net 2.0-2.2 ---------------------------------------------------------------------

@pytest.mark.parametrize("network_class", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_old_format_plans_are_converted_once_and_said_so(tmp_path, capsys, network_class):
    """Old-format plans of both U-Nets nnU-Net converts: the network is the one the current
    plans describe (the file's weights load), inspect says so in one note line, and
    plans-transfer takes the converted plans; nnU-Net's own warnings stay off the screen."""
    kwargs = (plain_arch_kwargs([4, 8, 16]) if network_class == "PlainConvUNet"
              else _resenc_kwargs([4, 8, 16]))
    current = v2_plans(kwargs, PATCH, f"dynamic_network_architectures.architectures.unet."
                                      f"{network_class}")
    weights = _weights_of(current)
    folder = _model(tmp_path, old_format_plans(current), weights)
    checkpoint = Checkpoint.read(folder)
    assert checkpoint.details["converted_configurations"] == ["3d_fullres"]
    assert (checkpoint.plans["configurations"]["3d_fullres"]["architecture"]
            == current["configurations"]["3d_fullres"]["architecture"])
    network = checkpoint.network()
    assert all(torch.equal(network.state_dict()[k], v) for k, v in weights.items())
    plans, configuration = model_plans(folder)
    assert configuration == "3d_fullres" and plans == checkpoint.plans

    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "nnunet-transfer"),
                             "inspect", folder], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if "old format" in line]
    assert notes == ["note:          plans in nnU-Net's old format (2.0-2.2), converted to the "
                     "current one as nnU-Net converts them (configuration 3d_fullres)"]
    for nnunet_says in ("old nnU-Net plans format", "not found", "FOUND IT"):
        assert nnunet_says not in result.stderr + result.stdout
