"""Models as sources of a study, through `nnunet-transfer study check` / `study run` in
subprocesses and `load_study`: the `models:` block and its mistakes, every (source, strategy)
pair judged with `inspect`'s verdicts, the model files held by their sha256, and what the study
chooses where the file is silent."""

from __future__ import annotations

import json
import os
import pydoc
import subprocess

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

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


def test_default_analyses_apply_and_written_ones_are_still_refused(tmp_path):
    """One seed, no Scratch: the default leaves out similarity and reuse (saying why); a file
    that names them is refused at the line of `analyses`."""
    own = _v2_model(tmp_path / "own")
    silent = load_study(_study(tmp_path, {"own": own}, "own", "    strategies: [FineTune]"))
    assert silent.analyses == ("convergence", "evolution", "weights")
    assert any("left out: similarity (" in line and "reuse (" in line
               for line in silent.defaults)
    path = _study(tmp_path, {"own": own}, "own",
                  "    strategies: [FineTune]\n    analyses: [weights, similarity, reuse]")
    result = _check(path)
    assert_refused(result, "study.yaml:13: analyses: similarity compares networks within a "
                           "strategy: it needs at least two seeds",
                   "study.yaml:13: analyses: reuse compares transfer runs with Scratch runs")


def test_models_with_the_same_plans_share_one_preprocessing(tmp_path):
    """The second model's setup step writes its own plans identifier over the first model's
    preprocessed data (data_identifier kept), without preprocessing again."""
    from nnunet_transfer.study.setup import StudySetup
    path = _study(tmp_path, {"own": _v2_model(tmp_path / "own"),
                             "copy": _v2_model(tmp_path / "copy")}, "[own, copy]",
                  "    strategies: [FineTune]\n    analyses: [weights]")
    spec = load_study(path)
    setup = StudySetup(spec)
    folder = setup.preprocessed_folder("tgt")
    os.makedirs(folder)
    first = {"plans_name": "nnUNetPlans_from_own", "transferred_from": {"model": "x"},
             "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_from_own_3d"}}}
    with open(os.path.join(folder, "nnUNetPlans_from_own.json"), "w") as f:
        json.dump(first, f)
    os.makedirs(setup.layout.path("setup"))
    setup.transfer_plans("copy")
    with open(os.path.join(folder, "nnUNetPlans_from_copy.json")) as f:
        copied = json.load(f)
    assert copied["plans_name"] == "nnUNetPlans_from_copy"
    assert copied["configurations"] == first["configurations"]
    assert copied["transferred_from"] == {"model": spec.models["copy"].path, "data_of": "own"}


def test_setup_checks_the_labels_the_datasets_turned_out_to_have(tmp_path):
    """An existing target not yet in nnU-Net's raw folder: its labels are unknown to the file's
    check, so the setup step refuses the pair once the dataset is there, before training."""
    from nnunet_transfer.errors import UserError
    from nnunet_transfer.study.setup import StudySetup
    path = _study(tmp_path, {"own": _v2_model(tmp_path / "own")}, "own",
                  "    strategies: [FineTune, FrozenDecoderAndHead]\n    analyses: [weights]"
                  )
    with open(path) as f:
        text = f.read().replace("synthetic: {cases: 9, low_quality: true}", "existing: true")
    with open(path, "w") as f:
        f.write(text)
    spec = load_study(path)   # the target's labels are not known yet: accepted
    setup = StudySetup(spec)
    raw = setup.raw_folder("tgt")
    os.makedirs(raw)
    with open(os.path.join(raw, "dataset.json"), "w") as f:
        json.dump({**DATASET_JSON, "labels": {"background": 0, "organ": 1, "tumour": 2}}, f)
    try:
        setup.check_sources()
    except UserError as error:
        message = str(error)
    else:
        raise AssertionError("the pair was not refused")
    assert "source 'own' cannot feed FrozenDecoderAndHead" in message
    assert "label(s) tumour are not the source's (background, organ)" in message
    with open(os.path.join(raw, "dataset.json"), "w") as f:
        json.dump(DATASET_JSON, f)
    setup.check_sources()   # the same labels: nothing to refuse


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


def test_a_source_pointed_at_another_model_is_refused(tmp_path):
    """The same key, another model: its files are not the ones the study started with."""
    from dataclasses import replace

    from nnunet_transfer.errors import UserError
    from nnunet_transfer.study.model_sources import hold_model_files, read_model
    first = read_model("own", _v2_model(tmp_path / "first"))[0]
    other = read_model("own", _v2_model(tmp_path / "other", features=(4, 8)))[0]
    record = str(tmp_path / "models.json")
    hold_model_files({"own": first}, record)
    hold_model_files({"own": first}, record)   # unchanged: accepted again
    try:
        hold_model_files({"own": other}, record)
    except UserError as error:
        assert "source 'own' now reads" in str(error) and other.checkpoint in str(error)
    else:
        raise AssertionError("another model under the same key was accepted")
    hold_model_files({"own": first, "new": replace(other, key="new")}, record)   # added: held
    with open(record) as f:
        assert set(json.load(f)["models"]) == {"own", "new"}
