"""The study's predictions: nnUNetv2_predict's settings from the study file (nnU-Net's defaults
kept, mistakes reported with their lines), a run predicted as soon as it has trained, and the
time estimate counting every kind of job."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time

import pytest

from nnunet_transfer.errors import UserError
from nnunet_transfer.study.executors.base import CommandJob
from nnunet_transfer.study.executors.kinds import make_executor
from nnunet_transfer.study.jobs import StudyJob, StudyJobs
from nnunet_transfer.study.runner import StudyRunner, study_status
from nnunet_transfer.study.state import StudyState
from nnunet_transfer.study.study_file import load_study

from support.study_files import SMALL_STUDY

# SMALL_STUDY's grid cut down to one size and architecture: 4 runs, one pretraining, one analysis
SMALLER = {"sizes": [2], "strategies": ["Scratch", "FineTune"], "architectures": ["unet"],
           "analyses": ["convergence"]}


def write(tmp_path, extra: str = "") -> str:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(SMALL_STUDY) + textwrap.dedent(extra))
    return str(path)


class SetupDone:
    """What the jobs take from the study's setup (`StudySetup`), for a target pool of 6."""
    env: dict = {}

    def pool_size(self) -> int:
        return 6


def study_jobs(path: str) -> StudyJobs:
    spec = load_study(path, overrides=SMALLER)
    return StudyJobs(spec, SetupDone(), StudyState(os.path.join(spec.workdir, "state.json")),
                     "cpu")


def predict_argv(path: str) -> list[str]:
    jobs = study_jobs(path)
    return list(jobs.predict_job(jobs.runs[0]).command(1).argv)


def test_prediction_defaults_are_nnunets(tmp_path):
    argv = predict_argv(write(tmp_path))
    assert argv[argv.index("-step_size") + 1] == "0.5"
    assert argv[argv.index("-chk") + 1] == "checkpoint_final.pth"
    assert "--disable_tta" not in argv


def test_prediction_settings_reach_nnunet_predict(tmp_path):
    argv = predict_argv(write(tmp_path, """\
        prediction: {step_size: 1, disable_tta: true, checkpoint: checkpoint_best.pth}
        """))
    assert argv[argv.index("-step_size") + 1] == "1.0"
    assert argv[argv.index("-chk") + 1] == "checkpoint_best.pth"
    assert "--disable_tta" in argv


def test_prediction_mistakes_are_reported_with_their_lines(tmp_path):
    path = write(tmp_path, """\
        prediction:
          step_size: 1.5
          disable_tta: yes please
          checkpoint: checkpoint_latest.pth
          tta: false
        """)
    with pytest.raises(UserError) as error:
        load_study(path)
    text = str(error.value)
    assert "5 mistakes" not in text and "4 mistakes" in text
    first = len(textwrap.dedent(SMALL_STUDY).splitlines()) + 2
    assert f"study.yaml:{first}: prediction.step_size: 1.5 is not a number > 0 and <= 1 " \
           "(nnU-Net's default 0.5" in text
    assert f"study.yaml:{first + 1}: prediction.disable_tta: 'yes please' is not true or false" in text
    assert f"study.yaml:{first + 2}: prediction.checkpoint: 'checkpoint_latest.pth' is not " \
           "known" in text and "checkpoint_final.pth, checkpoint_best.pth" in text
    assert f"study.yaml:{first + 3}: prediction.tta: unknown key" in text


def stand_in(job: StudyJob, folder: str, evaluation_s: float) -> StudyJob:
    """The job with a command that only marks it done; a prediction's evaluation (`after`,
    in the runner) takes `evaluation_s`."""
    marker = os.path.join(folder, f"{job.key}.done")

    def command(attempt: int) -> CommandJob:
        return CommandJob(key=job.key, argv=(sys.executable, "-c", f"open({marker!r}, 'w')"),
                          env={}, log_path=os.path.join(folder, f"{job.key}.log"),
                          exit_path=os.path.join(folder, f"{job.key}.exit"))

    return StudyJob(job.key, job.kind, command,
                    lambda: None if os.path.exists(marker) else f"{marker} is missing",
                    needs=job.needs, waits_for=job.waits_for, runs=job.runs,
                    after=(lambda: time.sleep(evaluation_s)) if job.kind == "predict" else None)


def test_a_run_is_predicted_before_later_trainings_start(tmp_path):
    jobs = study_jobs(write(tmp_path))
    folder = str(tmp_path / "jobs")
    os.makedirs(folder)
    work = [stand_in(job, folder, 0.3) for job in jobs.all()]
    state = StudyState(str(tmp_path / "state.json"))
    executor = make_executor("local", jobs=1, folder=str(tmp_path / "executor"))
    StudyRunner(jobs.spec, say=lambda text: None, poll_seconds=0.05)._schedule(
        work, state, executor)
    assert {state.state(job.key) for job in work} == {"succeeded"}
    started = sorted((state.get(job.key)["started"], job.key) for job in work)
    trainings = [key for _, key in started if key.startswith(("train__", "predict__"))]
    # one job at a time: each training is followed by its own prediction
    assert trainings == [key for run in jobs.runs
                         for key in (f"train__{run.key}", f"predict__{run.key}")]
    for run in jobs.runs:   # a prediction's time includes its evaluation
        record = state.get(f"predict__{run.key}")
        assert record["finished"] - record["started"] >= 0.3


def test_status_estimates_every_kind_that_has_a_finished_job(tmp_path):
    spec = load_study(write(tmp_path), overrides=SMALLER)
    records = {
        "train__a": (100, "succeeded"), "train__b": (300, "succeeded"),
        "train__c": (None, "pending"), "train__d": (None, "pending"),
        "predict__a": (60, "succeeded"), "predict__b": (None, "pending"),
        "predict__c": (None, "pending"), "predict__d": (None, "pending"),
        "analyze_convergence__x": (None, "pending"),
    }
    jobs = {key: {"state": s, "attempts": 1, **({"started": 1000.0, "finished": 1000.0 + d}
                                                if d else {})}
            for key, (d, s) in records.items()}
    os.makedirs(spec.state_folder)
    with open(os.path.join(spec.state_folder, "state.json"), "w") as f:
        json.dump({"jobs": jobs}, f)
    text = study_status(spec)
    # 2 trainings x 200 s (median) + 3 predictions x 60 s + 1 analysis x 100 s (the median of
    # all finished jobs, none of its kind has finished), one job at a time: 680 s
    assert "about 11 min left at 1 job(s)" in text
    assert "analyze_convergence (none finished yet) at the median time of all finished" in text
