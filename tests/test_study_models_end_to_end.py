"""A study with three sources, one of each kind, through `nnunet-transfer study run`: a dataset
pretrained in the study, a v2 model folder trained by nnU-Net's own trainer under plans of its
own (other patch and features than the target would get), and a v1 model made by v1's own
Generic_UNet. Every run starts from its source's tensors; the report has a panel per source."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time

import pytest
import torch

from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.study.grid import StudyLayout, expand
from nnunet_transfer.study.study_file import load_study

from support.checkpoint_files import (V1_MISSING, v1_available, v1_network, v1_plans,
                                      write_v1_model)
from support.smoke_study import cli, environment, read_state

STUDY = """\
    study: three_sources
    workdir: .
    device: cpu
    executor: {{kind: local, jobs: 2}}
    datasets:
      src: {{id: 821, name: ThreeSource, synthetic: {{cases: 4, shape: [24, 24, 24], seed: 1}}}}
      tgt: {{id: 822, name: ThreeTarget, synthetic: {{cases: 5, low_quality: true, seed: 2}}}}
    models:
      plain: {{path: {plain}}}
      old: {{path: {v1}}}
    source: [src, plain, old]
    target: tgt
    test_cases: 2
    validation_cases: 1
    plans: {{small: {{patch: [24, 24, 24], features: 4, max_features: 16, batch: 2, stages: 3}}}}
    sizes: [2]
    seeds: [0]
    strategies: [FineTune, FrozenEncoder]
    budget: {{epochs: 1, iterations: 2, val_iterations: 1, snapshot_every: 1, source_epochs: 1}}
    analyses: [weights]
    prediction: {{disable_tta: true}}
"""


def _v1_model(root: str) -> str:
    pools, kernels = [[2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3
    torch.manual_seed(11)
    return write_v1_model(root, v1_network(1, 2, pools, kernels),
                          v1_plans([32, 32, 32], [1, 1, 1], pools, kernels, {0: "MRI"}),
                          labels={"0": "background", "1": "organ"})


@pytest.fixture(scope="module")
def study(plain_model, tmp_path_factory) -> dict:
    if not v1_available():
        pytest.skip(V1_MISSING)
    folder = str(tmp_path_factory.mktemp("three_sources"))
    v1 = _v1_model(os.path.join(folder, "v1"))
    path = os.path.join(folder, "study.yaml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(STUDY.format(plain=plain_model, v1=os.path.relpath(v1, folder))))
    started = time.time()
    result = subprocess.run(cli("study", "run", path), env=environment(), capture_output=True,
                            text=True, timeout=1200)
    print(f"three-source study: {time.time() - started:.0f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {"path": path, "folder": folder, "result": result}


def test_three_sources_run_to_the_end_from_their_own_tensors(study):
    spec = load_study(study["path"])
    layout = StudyLayout(spec)
    pretrainings, runs = expand(spec, 3)
    assert [p.source for p in pretrainings] == ["src"]   # the models are not pretrained
    jobs = read_state(study["folder"])
    assert jobs and all(r["state"] == "succeeded" for r in jobs.values()), {
        k: (r["state"], r.get("note")) for k, r in jobs.items() if r["state"] != "succeeded"}
    assert len(runs) == 6
    for run in runs:
        source = Checkpoint.read(layout.source_weights(run.source, run.architecture)).weights
        start = torch.load(layout.run_folder(run).snapshot_path(0), map_location="cpu",
                           weights_only=False)["network_weights"]
        # the body; the head too, its labels being the target's (background, organ)
        keys = [k for k in source if k in start and start[k].shape == source[k].shape]
        assert len(keys) >= 0.9 * len(start), (run.key, len(keys), len(start))
        assert all(torch.equal(start[k], source[k]) for k in keys), run.key
    # each model's network is its own: the plain model's 4 features, v1's 8
    plain = next(r for r in runs if r.source == "plain")
    old = next(r for r in runs if r.source == "old")
    first = "encoder.stages.0.0.convs.0.conv.weight"
    for run, features in ((plain, 4), (old, 8)):
        start = torch.load(layout.run_folder(run).snapshot_path(0), map_location="cpu",
                           weights_only=False)["network_weights"]
        assert start[first].shape[0] == features, run.key
    assert os.path.isfile(layout.models_record)


def test_the_report_has_a_panel_per_source(study):
    with open(os.path.join(study["folder"], "study", "report.md")) as f:
        report = f.read()
    for source in ("src", "plain", "old"):
        assert f"source {source}, unet" in report, source


def test_a_second_run_redoes_nothing(study):
    before = read_state(study["folder"])
    result = subprocess.run(cli("study", "run", study["path"]), env=environment(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started" not in result.stdout
    assert {k: r["attempts"] for k, r in read_state(study["folder"]).items()} == {
        k: r["attempts"] for k, r in before.items()}
