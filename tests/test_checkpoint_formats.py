"""The checkpoint formats users bring, read into the one Checkpoint type: nnU-Net v1 models made
by v1's own Generic_UNet, nnssl encoders; and `inspect` / bad inputs through the real CLI."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch

from nnunet_transfer.architectures import partition
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.training.pretrained import plan_load

from support.checkpoint_files import nnssl_checkpoint, v1_network, v1_plans, write_v1_model
from support.networks import residual_unet

POOLS = [[2, 2, 2], [1, 2, 2]]
SAME_KERNELS = [[3, 3, 3]] * 3
CHANNELS = {0: "CT", 1: "PET"}


@pytest.fixture(scope="module")
def v1_model(tmp_path_factory):
    """A v1 model folder (no dataset.json: label names unknown) and the v1 network."""
    torch.manual_seed(0)
    network = v1_network(2, 3, POOLS, SAME_KERNELS)
    root = str(tmp_path_factory.mktemp("v1"))
    folder = write_v1_model(root, network,
                            v1_plans([16, 32, 32], [3.0, 1.0, 1.0], POOLS, SAME_KERNELS, CHANNELS))
    return folder, network


def test_v1_model_maps_every_tensor_and_computes_the_same(v1_model):
    folder, v1 = v1_model
    checkpoint = Checkpoint.read(folder)
    v1_state = v1.state_dict()
    mapped = {k: o[3:] for k, o in checkpoint.origins.items() if o.startswith("v1 ")}
    assert set(mapped.values()) == set(v1_state)  # every v1 tensor has its place
    for name, origin in mapped.items():
        assert torch.equal(checkpoint.weights[name], v1_state[origin]), name
    zero = checkpoint.details["zero_biases"]
    assert zero and all(k.endswith(".bias") and ("transpconvs" in k or "seg_layers" in k)
                        for k in zero)
    assert all(not checkpoint.weights[k].any() for k in zero)
    assert checkpoint.origins[zero[0]] == "bias set to zero: v1 has none"

    v2 = checkpoint.network().eval()
    x = torch.randn(1, 2, 16, 32, 32)
    with torch.no_grad():
        expected, actual = v1(x), v2(x)
    assert len(expected) == len(actual) == 2
    for a, b in zip(expected, actual):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)

    assert checkpoint.labels is None and checkpoint.channel_names == {"0": "CT", "1": "PET"}
    assert checkpoint.trainer_name == "nnUNetTrainerV2"
    config = checkpoint.plans["configurations"]["3d_fullres"]
    assert config["normalization_schemes"] == ["CTNormalization", "ZScoreNormalization"]
    assert config["patch_size"] == [16, 32, 32] and config["spacing"] == [3.0, 1.0, 1.0]
    assert config["architecture"]["arch_kwargs"]["strides"] == [[1, 1, 1], *POOLS]


def test_v1_labels_from_its_dataset_json_and_decoder_kernels_of_v1(tmp_path):
    """Anisotropic kernels: v1's decoder convolves with the kernel of the stage below, v2's
    with its own; those tensors keep their v1 shape and say so."""
    kernels = [[1, 3, 3], [3, 3, 3], [3, 3, 3]]
    network = v1_network(1, 2, POOLS, kernels)
    folder = write_v1_model(str(tmp_path), network,
                            v1_plans([16, 32, 32], [3.0, 1.0, 1.0], POOLS, kernels, {0: "MRI"}),
                            labels={"0": "background", "1": "organ"})
    checkpoint = Checkpoint.read(os.path.join(folder, "fold_0", "model_final_checkpoint.model"))
    assert checkpoint.labels == {"background": 0, "organ": 1}
    other = checkpoint.details["other_kernels"]
    assert other == ["decoder.stages.1.convs.0.conv.weight", "decoder.stages.1.convs.1.conv.weight"]
    assert tuple(checkpoint.weights[other[0]].shape[2:]) == (3, 3, 3)
    assert "kernel 3x3x3 where v2 has 1x3x3" in checkpoint.origins[other[0]]


def _encoder_only_nnssl(tmp_path) -> tuple[str, dict]:
    """An nnssl file that saved the encoder alone (keys 'stem.*', 'stages.*')."""
    torch.manual_seed(1)
    network = residual_unet()
    content = nnssl_checkpoint(network, {}, [32, 32, 32])
    content["network_weights"] = network.encoder.state_dict()
    plan = content["nnssl_adaptation_plan"]
    plan["key_to_encoder"], plan["key_to_stem"] = "stages", "stem"
    path = os.path.join(tmp_path, "encoder_only.pth")
    torch.save(content, path)
    return path, network.encoder.state_dict()


def test_nnssl_encoder_is_renamed_and_loads_as_the_encoder(tmp_path):
    path, encoder = _encoder_only_nnssl(tmp_path)
    checkpoint = Checkpoint.read(path)
    assert checkpoint.encoder_only and checkpoint.architecture == "ResidualEncoderUNet"
    for key, tensor in encoder.items():
        assert torch.equal(checkpoint.weights[f"encoder.{key}"], tensor)
    assert (checkpoint.origins["encoder.stem.convs.0.conv.weight"]
            == "nnssl stem.convs.0.conv.weight")
    target = residual_unet(classes=3)
    report = plan_load(target, partition(target), checkpoint, num_input_channels=1,
                       target_dataset_json={"labels": {"background": 0, "a": 1, "b": 2}},
                       load="encoder")
    assert not report.problems and report.fully_loaded("encoder")


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "nnunet-transfer"),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def _bad_inputs(tmp_path) -> dict[str, tuple[str, ...]]:
    """Bad inputs -> words their refusal must hold."""
    nnssl, _ = _encoder_only_nnssl(tmp_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(3000))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(nnssl, "rb").read()[:4000])
    runs_code = tmp_path / "runs_code.pth"
    torch.save({"network_weights": {}, "trap": _RunsCode()}, runs_code)
    v1_copy = write_v1_model(str(tmp_path / "bad_v1"), v1_network(1, 2, POOLS, SAME_KERNELS),
                             v1_plans([16, 32, 32], [1, 1, 1], POOLS, SAME_KERNELS, {0: "MRI"}))
    with open(os.path.join(v1_copy, "plans.pkl"), "wb") as f:
        pickle.dump({"plans_per_stage": _RunsCode()}, f)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    return {str(junk): ("not a readable PyTorch checkpoint",),
            str(truncated): ("not a readable PyTorch checkpoint",),
            str(runs_code): ("asks to run posix.system", "not loaded"),
            v1_copy: ("plans.pkl", "asks to run posix.system"),
            str(empty): ("is a folder without a checkpoint",),
            str(tmp_path / "missing.pth"): ("does not exist",)}


def test_bad_inputs_are_refused_with_the_file_named(tmp_path, capsys):
    """Through the CLI's own entry point (in this process: each command would cost a Python
    start-up); the next test runs one of them as a real process."""
    from nnunet_transfer.cli import main
    for path, words in _bad_inputs(tmp_path).items():
        with pytest.raises(SystemExit) as stop:
            main(["inspect", path])
        err = capsys.readouterr().err
        assert stop.value.code == 2, (path, err)
        assert os.path.basename(path) in err and all(w in err for w in words), (path, err)
    assert "this should never run" not in capsys.readouterr().out


def test_inspect_through_the_cli(tmp_path, v1_model):
    """inspect on a v1 folder and an nnssl file as real processes (side by side); an nnssl
    file given as plans is refused with exit code 2."""
    folder, _ = v1_model
    nnssl, _ = _encoder_only_nnssl(tmp_path)
    good_v1 = _cli("inspect", folder, "--target", "502")
    good_nnssl = _cli("inspect", nnssl)
    nnssl_plans = _cli("plans-transfer", "--source-model", nnssl, "--target", "502")

    out, err = good_v1.communicate(timeout=300)
    assert good_v1.returncode == 0, err
    for words in ("nnU-Net v1 model (Generic_UNet)", "trainer:       nnUNetTrainerV2",
                  "PlainConvUNet", "16 x 32 x 32", "3.0 x 1.0 x 1.0",
                  "CTNormalization, ZScoreNormalization",
                  "labels:        unknown names; 3 output classes (background and 2 more)",
                  "0 CT, 1 PET", "bias(es) set to zero",
                  f"plans-transfer --source-model {folder} --target 502",
                  "-p nnUNetPlansv2.1_fromTask099 -tr nnUNetTrainer_FrozenEncoder"):
        assert words in out, (words, out)
    assert "no: freezes the head, and the file's label names are unknown" in out

    out, err = good_nnssl.communicate(timeout=300)
    assert good_nnssl.returncode == 0, err
    assert "nnssl checkpoint" in out and "ResidualEncoderUNet" in out
    assert "with NNUNET_TRANSFER_LOAD=encoder" in out
    assert "which the file does not provide" in out  # FrozenDecoder and the like

    out, err = nnssl_plans.communicate(timeout=300)
    assert nnssl_plans.returncode == 2 and "Traceback" not in err
    assert "encoder_only.pth is an nnssl checkpoint: it carries no nnU-Net plans" in err


def _run_python(script: str) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter, so that nnU-Net's functions start as nnU-Net made them."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)


def test_importing_the_routing_changes_nothing_and_installing_it_routes():
    """Importing pretrained_routing (and the trainer) leaves nnU-Net's loader in place; the
    trainer's explicit call installs the routing, once."""
    script = (
        "import nnunetv2.run.run_training as run_training\n"
        "from nnunetv2.run import load_pretrained_weights as loading\n"
        "before = (run_training.load_pretrained_weights, loading.load_pretrained_weights)\n"
        "from nnunet_transfer.training import pretrained_routing\n"
        "import nnunet_transfer.training.trainer\n"
        "after_import = (run_training.load_pretrained_weights, loading.load_pretrained_weights)\n"
        "print('untouched' if after_import == before else 'patched on import')\n"
        "pretrained_routing.install_pretrained_routing()\n"
        "routed = run_training.load_pretrained_weights\n"
        "pretrained_routing.install_pretrained_routing()\n"
        "print('routed' if routed is not before[0] and routed.routes_to_transfer_trainers\n"
        "      and routed.nnunet_loader is before[0] else 'not routed')\n"
        "print('once' if run_training.load_pretrained_weights is routed else 'twice')\n")
    result = _run_python(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["untouched", "routed", "once"]


def test_pretrained_routing_stops_on_an_nnunet_that_loads_elsewhere():
    """A release whose run_training no longer calls load_pretrained_weights (simulated by
    replacing maybe_load_checkpoint before the routing is installed) stops a run with
    -pretrained_weights at start-up, naming the version, instead of loading all-or-nothing."""
    script = (
        "import sys\n"
        "import nnunetv2.run.run_training as run_training\n"
        "def maybe_load_checkpoint(trainer, c, val, weights):\n"
        "    trainer.load_checkpoint(weights)\n"
        "run_training.maybe_load_checkpoint = maybe_load_checkpoint\n"
        "sys.argv = ['nnUNetv2_train', '802', '3d_fullres', '0', '-pretrained_weights', 'x.pth']\n"
        "from nnunet_transfer.training.pretrained_routing import install_pretrained_routing\n"
        "print('imported')\n"
        "install_pretrained_routing()\n"
        "print('not stopped')\n")
    result = _run_python(script)
    assert result.returncode == 2 and result.stdout.split() == ["imported"]
    from importlib.metadata import version
    assert f"with nnunetv2 {version('nnunetv2')}" in result.stderr
    assert "maybe_load_checkpoint does not call load_pretrained_weights" in result.stderr


def test_v2_model_folder_without_init_args_takes_the_folder_plans(tmp_path, v1_model):
    """A published v2 folder whose checkpoint holds only the weights (made here from the v1
    model's conversion): plans.json, dataset.json and the folder's name fill in the rest."""
    import json
    converted = Checkpoint.read(v1_model[0])
    folder = tmp_path / "nnUNetTrainer__nnUNetPlansv2.1__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(converted.plans))
    (folder / "dataset.json").write_text(json.dumps(converted.init_args["dataset_json"]))
    torch.save({"network_weights": converted.weights}, folder / "fold_0" / "checkpoint_final.pth")
    checkpoint = Checkpoint.read(folder)
    assert checkpoint.path == str(folder / "fold_0" / "checkpoint_final.pth")
    assert checkpoint.trainer_name == "nnUNetTrainer" and checkpoint.configuration == "3d_fullres"
    assert checkpoint.details["folds"] == ["fold_0"] and not checkpoint.origins
    network = checkpoint.network()
    assert all(torch.equal(network.state_dict()[k], v) for k, v in converted.weights.items())
