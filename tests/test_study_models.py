"""Models as sources of a study, through `nnunet-transfer study check` / `study run` in
subprocesses and `load_study`: the `models:` block and its mistakes, every (source, strategy)
pair judged with `inspect`'s verdicts, the model files held by their sha256, and what the study
chooses where the file is silent."""

from __future__ import annotations

import json
import os
import subprocess

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
import pydoc

from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.study.grid import (StudyLayout, configuration_of, expand,
                                        preprocessing_source, transferred_plans)
from nnunet_transfer.study.study_file import load_study

from support.checkpoint_files import (nnssl_checkpoint, plain_arch_kwargs, v2_plans,
                                      write_v2_model)
from support.refusals import assert_refused
from support.smoke_study import cli, environment
from support.study_files import write_study_text

DATASET_JSON = {"labels": {"background": 0, "organ": 1}, "channel_names": {"0": "MRI"},
                "file_ending": ".nii.gz", "numTraining": 4}
OTHER_LABELS = {**DATASET_JSON, "labels": {"background": 0, "liver": 1}}


def _v2_model(root, dataset_json=DATASET_JSON, features=(4, 8, 16), plans_name="nnUNetPlans"
              ) -> str:
    plans = v2_plans(plain_arch_kwargs(list(features)), [32, 32, 32], plans_name=plans_name)
    content = {"network_weights": {}, "init_args": {
        "plans": plans, "configuration": "3d_fullres", "dataset_json": dataset_json}}
    torch.manual_seed(0)
    weights = Checkpoint.of(content).network(load_weights=False).state_dict()
    return write_v2_model(str(root), plans, dataset_json, weights)


def _nnssl_file(root) -> str:
    kwargs = {**plain_arch_kwargs([4, 8])}
    kwargs.pop("n_conv_per_stage")
    kwargs.update(n_blocks_per_stage=[1, 1], n_conv_per_stage_decoder=[1])
    built = {k: (pydoc.locate(v) if k in ("conv_op", "norm_op", "nonlin") else v)
             for k, v in kwargs.items()}
    network = ResidualEncoderUNet(1, num_classes=2, deep_supervision=True, **built)
    path = os.path.join(str(root), "encoder.pth")
    torch.save(nnssl_checkpoint(network, kwargs, [32, 32, 32]), path)
    return path


STUDY = """\
    study: models
    device: cpu
    datasets:
      src: {{id: 801, name: Src, synthetic: {{cases: 6}}}}
      tgt: {{id: 802, name: Tgt, synthetic: {{cases: 9, low_quality: true}}}}
    models:
{models}
    source: {source}
    target: tgt
    test_cases: 3
    sizes: [2]
{rest}
"""


def _study(tmp_path, models: dict, source: str, rest: str = "") -> str:
    lines = "\n".join(f"      {key}: {{path: {path}}}" for key, path in models.items())
    return write_study_text(tmp_path, STUDY.format(models=lines, source=source, rest=rest))


def _check(path: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli("study", "check", path), env=environment(), capture_output=True,
                          text=True, timeout=300)


def test_models_and_datasets_mix_as_sources(tmp_path):
    """A v2 model folder and a copy of it (same plans: one preprocessing) beside a dataset
    source; the runs of a model load its path, train its configuration, and have no
    pretraining; the default strategies leave out the one the model's labels cannot feed."""
    own = _v2_model(tmp_path / "own")
    copy = _v2_model(tmp_path / "copy")
    other = _v2_model(tmp_path / "other", OTHER_LABELS, features=(4, 8))
    path = _study(tmp_path, {"own": os.path.relpath(own, tmp_path),
                             "copy": os.path.relpath(copy, tmp_path), "other": other},
                  "[src, own, copy, other]", "    seeds: [0]")
    spec = load_study(path)
    assert spec.models["own"].path == own and spec.models["own"].configuration == "3d_fullres"
    assert spec.models["own"].labels == ("background", "organ")
    assert len(spec.models["own"].files) == 3   # checkpoint, plans.json, dataset.json
    # the one-phase strategies every source can feed: 'other' has no label 'organ'
    names = [s.name for s in spec.strategies]
    assert "FrozenDecoderAndHead" not in names and "FrozenDecoder" in names
    assert any("FrozenDecoderAndHead" in line and "'other'" in line for line in spec.defaults)
    # one seed, no Scratch-free problem: similarity and reuse need two seeds / are left out
    assert "similarity" not in spec.analyses and "weights" in spec.analyses
    layout = StudyLayout(spec)
    assert layout.source_weights("own", "unet") == own
    assert layout.source_weights("src", "unet").endswith("checkpoint_final.pth")
    assert configuration_of(spec, "own", "unet") == "3d_fullres"
    plans = {s: transferred_plans(spec, s) for s in spec.sources}
    assert len(set(plans.values())) == 4 and plans["own"] == "nnUNetPlans_from_own"
    assert preprocessing_source(spec, "copy") == "own"
    assert preprocessing_source(spec, "other") == "other"
    pretrainings, runs = expand(spec, 6)
    assert [p.source for p in pretrainings] == ["src"]
    assert {r.source for r in runs} == {"src", "own", "copy", "other"}

    result = _check(path)
    assert result.returncode == 0, result.stderr
    assert "own: nnU-Net v2 checkpoint" in result.stdout
    assert "src: dataset Dataset801_Src, pretrained in the study" in result.stdout
    assert "strategies not given" in result.stdout and "analyses not given" in result.stdout


def test_model_mistakes_are_reported_together_with_their_lines(tmp_path):
    pointer = tmp_path / "checkpoint_final.pth"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:"
                       + "ab" * 32 + "\nsize 123456789\n")
    own = _v2_model(tmp_path / "own")
    path = _study(tmp_path, {"src": own, "missing": "no/such/model",
                             "lfs": "checkpoint_final.pth", "own": own},
                  "[src, nope, own]", "    architectures: [unet, karimi]\n"
                  "    strategies: [Scratch, FrozenDecoderAndHead]")
    result = _check(path)
    assert_refused(result, "models.src: 'src' is also a key of datasets",
                   "the model", "no/such/model does not exist",
                   "is a Git LFS pointer", "git lfs pull",
                   "'nope' is not a key of datasets or models",
                   "extra architectures apply to dataset sources only")
    assert "study.yaml:8: models.missing.path" in result.stderr


def test_nnssl_source_with_frozen_decoder_is_refused_with_the_source_named(tmp_path):
    """inspect's verdict for the pair, at the strategy's line, beside the refusal to train an
    nnssl source (with what to run by hand); nothing is made."""
    encoder = _nnssl_file(tmp_path)
    path = _study(tmp_path, {"ssl": encoder}, "[src, ssl]",
                  "    strategies: [FineTune, FrozenDecoder]")
    result = _check(path)
    assert_refused(result, "strategies.1: source 'ssl' (nnssl checkpoint",
                   "cannot feed FrozenDecoder: freezes the decoder, which the file does not "
                   "provide fully", "models.ssl: model 'ssl' is an nnssl encoder",
                   "NNUNET_TRANSFER_LOAD=encoder nnUNetv2_train")
    assert "source 'src'" not in result.stderr   # the dataset source feeds both
    assert not os.path.exists(tmp_path / "models")


def test_frozen_head_on_a_new_label_is_refused_for_a_dataset_source(tmp_path):
    path = write_study_text(tmp_path, STUDY.format(models="      {}", source="src", rest=(
        "    strategies: [Scratch, FrozenDecoderAndHead]")).replace(
        "low_quality: true}", "low_quality: true, core: true}").replace(
        "    models:\n      {}\n", ""))
    result = _check(path)
    assert_refused(result, "source 'src' (dataset) cannot feed FrozenDecoderAndHead",
                   "the target's label(s) core are not the source's (background, organ)")


def test_written_analyses_are_still_refused(tmp_path):
    path = _study(tmp_path, {"own": _v2_model(tmp_path / "own")}, "own",
                  "    strategies: [FineTune]\n    analyses: [weights, similarity]")
    result = _check(path)
    assert_refused(result, "analyses:")
    assert "similarity" in result.stderr or "seeds" in result.stderr


def test_a_changed_model_file_is_refused_on_the_next_run(tmp_path):
    """The hashes are recorded when the study starts; after the checkpoint changed, `study
    run` names the source, the file and both hashes, exits 2 and runs nothing."""
    own = _v2_model(tmp_path / "own")
    path = _study(tmp_path, {"own": own}, "own", "    strategies: [FineTune]\n"
                                                 "    analyses: [weights]")
    spec = load_study(path)
    from nnunet_transfer.study.model_sources import hold_model_files
    layout = StudyLayout(spec)
    hold_model_files(spec.models, layout.models_record)   # what the first `study run` does
    with open(layout.models_record) as f:
        recorded = json.load(f)["models"]["own"]
    checkpoint = spec.models["own"].checkpoint
    before = recorded[checkpoint]
    content = torch.load(checkpoint, weights_only=False)
    content["current_epoch"] = 999
    torch.save(content, checkpoint)

    result = subprocess.run(cli("study", "run", path), env=environment(), capture_output=True,
                            text=True, timeout=300)
    assert_refused(result, "source 'own'", checkpoint, before, "changed since the study started")
    assert not os.path.exists(layout.path("setup"))   # nothing ran
    assert not os.path.exists(layout.state_file)
    with open(layout.models_record) as f:
        assert json.load(f)["models"]["own"][checkpoint] == before   # the record is kept
