"""The study report enumerates its runs from the grid and their outcomes from the saved state,
without building the study's jobs: the job keys the grid names are those of the jobs, and a
failure recorded in the state reaches the report."""

from __future__ import annotations

import json
import os

from nnunet_transfer.study.grid import expand, job_keys
from nnunet_transfer.study.results import write_study_report
from nnunet_transfer.study.state import StudyState
from nnunet_transfer.study.study_file import load_study

from test_study_predictions import SMALLER, study_jobs, write


def test_the_grid_names_every_job_of_the_study(tmp_path):
    jobs = study_jobs(write(tmp_path))
    pretrainings, runs = expand(jobs.spec, 6)
    assert job_keys(jobs.spec, pretrainings, runs) == [job.key for job in jobs.all()]


def test_report_counts_jobs_and_names_failures_from_the_saved_state(tmp_path):
    spec = load_study(write(tmp_path), overrides=SMALLER)
    pretrainings, runs = expand(spec, 6)
    keys = job_keys(spec, pretrainings, runs)
    failed = runs[0].train_key
    os.makedirs(spec.state_folder)
    state_file = os.path.join(spec.state_folder, "state.json")
    with open(state_file, "w") as f:
        json.dump({"jobs": {failed: {"state": "failed", "attempts": 3,
                                     "note": "exit 1: out of memory", "log": "x.log"},
                            keys[0]: {"state": "succeeded", "attempts": 1}}}, f)
    write_study_report(spec, StudyState(state_file), 6)
    with open(os.path.join(spec.state_folder, "report.md"), encoding="utf-8") as f:
        text = f.read()
    assert f"{len(runs)} runs" in text
    assert f"1 failed, {len(keys) - 2} pending, 1 succeeded" in text
    assert "Failed jobs" in text and "out of memory" in text
