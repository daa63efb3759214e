"""Models as sources of a study, through `nnunet-transfer study check` / `study run` in
subprocesses and `load_study`: the `models:` block and its mistakes, every (source, strategy)
pair judged with `inspect`'s verdicts, the model files held by their sha256, and what the study
chooses where the file is silent."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace

import pytest
import torch

from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.errors import UserError
from nnunet_transfer.planning.nnssl_plans import NnsslArchitecture
from nnunet_transfer.study.commands import check_summary
from nnunet_transfer.study.grid import (StudyLayout, configuration_of, expand,
                                        preprocessing_source, ranked_sources, ranks_sources,
                                        transferred_plans)
from nnunet_transfer.study.model_sources import hold_model_files, read_model
from nnunet_transfer.study.setup import StudySetup
from nnunet_transfer.study.study_file import load_study

from support.checkpoint_files import (plain_arch_kwargs, v2_plans, write_nnssl_encoder,
                                      write_v2_model)
from support.refusals import assert_refused
from support.smoke_study import cli, environment
from support.study_files import write_study_text

DATASET_JSON = {"labels": {"background": 0, "organ": 1}, "channel_names": {"0": "MRI"},
                "file_ending": ".nii.gz", "numTraining": 4}
OTHER_LABELS = {**DATASET_JSON, "labels": {"background": 0, "liver": 1}}
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def _v2_model(root, dataset_json=DATASET_JSON, features=(4, 8, 16), plans_name="nnUNetPlans"
              ) -> str:
    plans = v2_plans(plain_arch_kwargs(list(features)), [32, 32, 32], plans_name=plans_name)
    content = {"network_weights": {}, "init_args": {
        "plans": plans, "configuration": "3d_fullres", "dataset_json": dataset_json}}
    torch.manual_seed(0)
    weights = Checkpoint.of(content).network(load_weights=False).state_dict()
    return write_v2_model(str(root), plans, dataset_json, weights)


def _nnssl_file(root, features=(4, 8)) -> str:
    return write_nnssl_encoder(os.path.join(str(root), "encoder.pth"), features)


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
    """inspect's verdict for the pair, at the strategy's line; the pair that loads the encoder
    is accepted; nothing is made."""
    encoder = _nnssl_file(tmp_path)
    path = _study(tmp_path, {"ssl": encoder}, "[src, ssl]",
                  "    strategies: [FineTune, FrozenDecoder]")
    result = _check(path)
    assert_refused(result, "strategies.1: source 'ssl' (nnssl checkpoint",
                   "cannot feed FrozenDecoder: freezes the decoder, which the file does not "
                   "provide fully")
    assert "source 'src'" not in result.stderr   # the dataset source feeds both
    assert "FineTune" not in result.stderr   # the encoder feeds it
    assert not os.path.exists(tmp_path / "models")


def test_an_nnssl_source_trains_its_network_under_the_targets_own_plans(tmp_path):
    """The target is planned by nnU-Net (a setup step); the nnssl source's plans are the
    target's own (data identifier kept: no second preprocessing) with the encoder's network and
    a patch its strides divide, which nnU-Net builds with the encoder's shapes; Scratch from it
    trains that network too; it is left out of the ranking, and `study check` says all this."""
    encoder = _nnssl_file(tmp_path, features=(4, 8, 16))   # strides 1, 2, 2: patch axes % 4
    path = _study(tmp_path, {"ssl": encoder}, "[src, ssl]",
                  "    strategies: [Scratch, FrozenEncoder]\n    analyses: [weights]")
    spec = load_study(path)
    assert transferred_plans(spec, "ssl") == "nnUNetPlans_from_ssl"
    assert configuration_of(spec, "ssl", "unet") == "3d_fullres"
    assert ranked_sources(spec) == ("src",) and not ranks_sources(spec)
    runs = [r for r in expand(spec, 6)[1] if r.source == "ssl"]
    assert {r.strategy.name for r in runs} == {"Scratch", "FrozenEncoder"}
    assert all("nnUNetPlans_from_ssl" in StudyLayout(spec).run_folder(r).path for r in runs)
    setup = StudySetup(spec)
    assert [s.name for s in setup.steps() if s.name.startswith("plan_")] == [
        "plan_src", "plan_tgt"]
    summary = check_summary(spec)
    assert ("the target planned by nnU-Net with the study's plans nnUNetPlans (3d_fullres), "
            "its network the encoder's ResidualEncoderUNet") in summary
    assert "not ranked: an nnssl encoder" in summary

    folder = setup.preprocessed_folder("tgt")
    os.makedirs(folder)
    os.makedirs(setup.layout.path("setup"))
    own = v2_plans(plain_arch_kwargs([4, 8, 16, 32]), [29, 33, 30],
                   dataset_name="Dataset802_Tgt")   # as nnU-Net planned the target
    with open(os.path.join(folder, "nnUNetPlans.json"), "w") as f:
        json.dump(own, f)
    setup.transfer_plans("ssl")
    with open(os.path.join(folder, "nnUNetPlans_from_ssl.json")) as f:
        plans = json.load(f)
    config, planned = plans["configurations"]["3d_fullres"], own["configurations"]["3d_fullres"]
    architecture = config["architecture"]
    adaptation = torch.load(encoder, weights_only=False)["nnssl_adaptation_plan"]
    assert architecture["network_class_name"] == RESENC
    assert architecture["arch_kwargs"] == adaptation["architecture_plans"]["arch_kwargs"]
    assert sorted(architecture["_kw_requires_import"]) == ["conv_op", "nonlin", "norm_op"]
    assert config["patch_size"] == [28, 32, 28]
    assert config["data_identifier"] == planned["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert {k: config[k] for k in ("spacing", "normalization_schemes", "batch_size")} == {
        k: planned[k] for k in ("spacing", "normalization_schemes", "batch_size")}
    network = Checkpoint.of({"network_weights": {}, "init_args": {
        "plans": plans, "configuration": "3d_fullres", "dataset_json": DATASET_JSON}}).network(
        load_weights=False).state_dict()
    weights = Checkpoint.read(encoder).weights   # the encoder and stem, renamed as v2 names them
    assert weights and {k: network[k].shape for k in weights} == {
        k: v.shape for k, v in weights.items()}


def test_an_nnssl_architecture_the_plans_cannot_describe_is_refused(tmp_path):
    """A Primus encoder: refused at the model's path, saying what the study plans and how to
    fine-tune by hand; nnssl's ResEncL preset (no arch_kwargs) is nnU-Net's ResEnc-L."""
    path = _nnssl_file(tmp_path)
    content = torch.load(path, weights_only=False)

    def architecture(name: str) -> NnsslArchitecture:
        content["nnssl_adaptation_plan"]["architecture_plans"] = {"arch_class_name": name,
                                                                  "arch_kwargs": None}
        torch.save(content, path)
        return NnsslArchitecture.of(Checkpoint.read(path))

    resenc_l = architecture("ResEncL")
    assert resenc_l.network_class == RESENC and resenc_l.divisors(3) == [32, 32, 32]
    assert resenc_l.arch_kwargs["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    try:
        architecture("PrimusM")
    except UserError as error:
        assert "this one is PrimusM" in str(error) and "inspect PATH --target" in str(error)
    else:
        raise AssertionError("a Primus encoder was accepted")


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


def test_an_unreadable_record_of_the_model_files_is_named_and_kept(tmp_path):
    """study/models.json damaged (not JSON, or not an object): a message naming the file and
    the fix, never a traceback; the file is left as it was."""
    model = read_model("own", _v2_model(tmp_path / "own"))[0]
    record = tmp_path / "models.json"
    for text in ("{not json", "[1, 2]"):
        record.write_text(text)
        with pytest.raises(UserError, match="record of the model files' sha256") as error:
            hold_model_files({"own": model}, str(record))
        assert str(record) in str(error.value) and "restore the file" in str(error.value)
        assert record.read_text() == text
