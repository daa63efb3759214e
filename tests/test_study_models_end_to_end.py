"""A study with four sources, one of each kind, through `nnunet-transfer study run`: a dataset
pretrained in the study, a v2 model folder trained by nnU-Net's own trainer under plans of its
own (other patch and features than the target would get), a v1 model made by v1's own
Generic_UNet, and an nnssl encoder (a small ResidualEncoderUNet: the target planned by nnU-Net,
the encoder's network, its encoder loaded). Every run starts from its source's tensors; the
report has a panel per source; the nnssl source is left out of the ranking, saying why.

The runner is killed twice on the way, with everything it started: while the target is planned
from a model, and while the sources are ranked; each next `study run` redoes nothing that had
finished and loses nothing."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import textwrap
import time

import pytest
import torch

from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.study.grid import RANKING_KEY, StudyLayout, expand
from nnunet_transfer.study.study_file import load_study

from support.checkpoint_files import (V1_MISSING, v1_available, v1_network, v1_plans,
                                      write_nnssl_encoder, write_v1_model)
from support.smoke_study import cli, environment, read_state, wait_for

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
      ssl: {{path: encoder.pth}}
    source: [src, plain, old, ssl]
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
    # a small ResidualEncoderUNet (4, 8, 16 features): the study's 24^3 patch suits its strides
    write_nnssl_encoder(os.path.join(folder, "encoder.pth"), (4, 8, 16), seed=13)
    path = os.path.join(folder, "study.yaml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(STUDY.format(plain=plain_model, v1=os.path.relpath(v1, folder))))
    setup = os.path.join(folder, "study", "setup")
    started = time.time()

    def planning_a_model():
        return (os.path.isfile(os.path.join(setup, "transfer_plans_plain.log"))
                and not os.path.isfile(os.path.join(setup, "transfer_plans_plain.done")))

    def ranking():
        record = read_state(folder).get(RANKING_KEY, {})
        return record if record.get("state") == "running" and record.get("handle") else None

    kills = [_run_until(path, folder, planning_a_model, "the target planned from a model")]
    record = None

    def ranking_seen():
        nonlocal record
        record = ranking()
        return record

    kills.append(_run_until(path, folder, ranking_seen, "the sources being ranked",
                            job_group=lambda: record["handle"]["pgid"]))
    result = subprocess.run(cli("study", "run", path), env=environment(), capture_output=True,
                            text=True, timeout=1200)
    print(f"four-source study, killed twice: {time.time() - started:.0f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {"path": path, "folder": folder, "result": result, "kills": kills}


def _run_until(path: str, folder: str, predicate, what: str, job_group=None) -> dict:
    """Run the study until `predicate` holds, then SIGKILL the runner with what it started (its
    process group; and the job's own group, given `job_group`). What had finished then: the
    setup steps done and the jobs succeeded, with their attempts."""
    runner = subprocess.Popen(cli("study", "run", path), env=environment(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_for(predicate, 900, what, runner)
    finally:
        groups = [runner.pid] + ([job_group()] if job_group and runner.poll() is None else [])
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        runner.wait()
    setup = os.path.join(folder, "study", "setup")
    return {"done": {name: os.path.getmtime(os.path.join(setup, name))
                     for name in os.listdir(setup) if name.endswith(".done")},
            "succeeded": {k: r["attempts"] for k, r in read_state(folder).items()
                          if r["state"] == "succeeded"}}


def test_four_sources_run_to_the_end_from_their_own_tensors(study):
    spec = load_study(study["path"])
    layout = StudyLayout(spec)
    pretrainings, runs = expand(spec, 3)
    assert [p.source for p in pretrainings] == ["src"]   # the models are not pretrained
    jobs = read_state(study["folder"])
    assert jobs and all(r["state"] == "succeeded" for r in jobs.values()), {
        k: (r["state"], r.get("note")) for k, r in jobs.items() if r["state"] != "succeeded"}
    assert len(runs) == 8
    for run in runs:
        source = Checkpoint.read(layout.source_weights(run.source, run.architecture)).weights
        start = torch.load(layout.run_folder(run).snapshot_path(0), map_location="cpu",
                           weights_only=False)["network_weights"]
        keys = [k for k in source if k in start and start[k].shape == source[k].shape]
        if run.source == "ssl":   # the encoder's network: every tensor of the file loads
            assert keys == list(source) and len(keys) < len(start), run.key
        else:   # the body; the head too, its labels being the target's (background, organ)
            assert len(keys) >= 0.9 * len(start), (run.key, len(keys), len(start))
        assert all(torch.equal(start[k], source[k]) for k in keys), run.key
    # the nnssl encoder stays as it was where it is frozen, and trains where it is not
    for run in (r for r in runs if r.source == "ssl"):
        source = Checkpoint.read(layout.source_weights(run.source, run.architecture)).weights
        final = torch.load(layout.run_folder(run).final_checkpoint, map_location="cpu",
                           weights_only=False)["network_weights"]
        unchanged = all(torch.equal(final[k], source[k]) for k in source)
        assert unchanged == (run.strategy.name == "FrozenEncoder"), run.key
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
    for source in ("src", "plain", "old", "ssl"):
        assert f"source {source}, unet" in report, source


def test_a_second_run_redoes_nothing(study):
    before = read_state(study["folder"])
    result = subprocess.run(cli("study", "run", study["path"]), env=environment(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started" not in result.stdout
    assert {k: r["attempts"] for k, r in read_state(study["folder"]).items()} == {
        k: r["attempts"] for k, r in before.items()}


def test_killed_planning_and_ranking_redo_nothing_finished(study):
    setup = os.path.join(study["folder"], "study", "setup")
    jobs = read_state(study["folder"])
    planning, ranking = study["kills"]
    assert "transfer_plans_plain.done" not in planning["done"]   # killed in that step
    assert os.path.isfile(os.path.join(setup, "transfer_plans_plain.done"))
    for kill in (planning, ranking):
        for name, mtime in kill["done"].items():   # a finished step is never run again
            assert os.path.getmtime(os.path.join(setup, name)) == mtime, name
        for key, attempts in kill["succeeded"].items():
            assert jobs[key]["attempts"] == attempts, key
    assert RANKING_KEY not in ranking["succeeded"]
    assert jobs[RANKING_KEY]["state"] == "succeeded" and jobs[RANKING_KEY]["attempts"] == 2


def test_sources_ranked_on_the_training_pool_only(study):
    layout = StudyLayout(load_study(study["path"]))
    with open(layout.ranking_csv) as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["source"] for r in rows) == ["old", "plain", "src"]
    assert sorted(int(r["rank"]) for r in rows) == [1, 2, 3]
    with open(layout.ranking_excluded_cases) as f:
        held_out = f.read().split()
    assert len(held_out) == 2
    log = os.path.join(layout.job_folder(RANKING_KEY), "attempt2.log")
    with open(log) as f:
        text = f.read()
    assert "3 training case(s), 2 excluded" in text, text[-2000:]
    with open(os.path.join(study["folder"], "study", "report.md")) as f:
        report = f.read()
    assert "Which source" in report and "Kendall" in report
    assert "Not ranked by the study, so left out of tau: ssl (an nnssl encoder" in report
