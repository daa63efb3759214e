"""The live progress line of `study run`: counts and estimate from the state file, one plain
line per change when not on a terminal, a rich live line on one."""

from __future__ import annotations

import io

import pytest

from nnunet_transfer.study.progress import (
    KindTimes, StudyProgress, TimeLeft, count_jobs, estimate_seconds_left, progress_text)
from nnunet_transfer.study.state import StudyState

KEYS = ["train__A", "train__B", "train__C", "predict__A", "predict__B", "predict__C"]


def make_state(tmp_path) -> StudyState:
    state = StudyState(str(tmp_path / "state.json"))
    state.update("train__A", state="succeeded", started=100.0, finished=160.0)
    state.update("train__B", state="succeeded", started=100.0, finished=140.0)
    state.update("train__C", state="running", started=150.0)
    state.update("predict__A", state="failed", started=170.0, finished=171.0)
    return state


def test_counts_and_time_left(tmp_path):
    state = make_state(tmp_path)
    counts = count_jobs(KEYS, state, capacity=2)
    assert (counts.done, counts.running, counts.failed, counts.left) == (2, 1, 1, 2)
    assert counts.total == len(KEYS)
    # predictions: none finished yet, counted at the median of all finished jobs (50 s):
    # train 50 s x (1 running / 2) + predict 50 s x 2 pending, over 2
    assert counts.seconds_left == (50 * 0.5 + 50 * 2) / 2
    state.update("predict__A", state="succeeded", finished=180.0)
    counts = count_jobs(KEYS, state, capacity=2)
    # train: median 50 s x (0 pending + 1 running / 2); predict: 10 s x 2 pending; over 2
    assert counts.seconds_left == (50 * 0.5 + 10 * 2) / 2
    assert progress_text(counts, 75) == ("jobs 3/6 done, 1 running, 0 failed, 2 left; elapsed "
                                         "0:01:15, time left ~0:00:22")


def test_estimate_from_the_first_finished_job_on():
    # nothing finished yet: no estimate; nothing left: none needed
    assert estimate_seconds_left({"train": KindTimes((), 3), "predict": KindTimes((), 3)},
                                 2) == TimeLeft(None, ())
    assert estimate_seconds_left({"train": KindTimes((30.0,), 0)}, 2) == TimeLeft(0.0, ())
    # only one kind has finished (one job of it): every kind left is estimated from it
    one = estimate_seconds_left({"train": KindTimes((600.0,), 2.5),
                                 "predict": KindTimes((), 3), "analyze": KindTimes((), 1)}, 2)
    assert one == TimeLeft((600 * 2.5 + 600 * 3 + 600 * 1) / 2, ("analyze", "predict"))
    # each kind with finished jobs counts its own median; the others the median of all
    kinds = {"train": KindTimes((100.0, 300.0, 1000.0), 2), "predict": KindTimes((10.0,), 4),
             "analyze": KindTimes((), 2)}
    left = estimate_seconds_left(kinds, 3)
    all_median = 200.0   # of 10, 100, 300, 1000
    assert left == TimeLeft((300 * 2 + 10 * 4 + all_median * 2) / 3, ("analyze",))
    # a kind with nothing left does not need a duration
    assert estimate_seconds_left({"train": KindTimes((), 0), "predict": KindTimes((8.0,), 1)},
                                 1) == TimeLeft(8.0, ())
    assert estimate_seconds_left(kinds, 1).seconds == pytest.approx(3 * left.seconds)


def test_progress_line_has_an_estimate_once_any_job_finished(tmp_path):
    """The demo's case: many jobs done, but no job yet of one kind (its analyses)."""
    keys = [f"train__{i}" for i in range(20)] + [f"analyze__{i}" for i in range(10)]
    state = StudyState(str(tmp_path / "state.json"))
    counts = count_jobs(keys, state, capacity=2)
    assert counts.seconds_left is None
    assert progress_text(counts, 0).endswith("time left unknown until a job finishes")
    state.update("train__0", state="succeeded", started=0.0, finished=60.0)
    counts = count_jobs(keys, state, capacity=2)
    assert counts.seconds_left == 60 * 29 / 2
    assert "time left ~0:14:30" in progress_text(counts, 60)


def test_plain_lines_only_when_the_counts_change(tmp_path):
    state = make_state(tmp_path)
    stream = io.StringIO()
    progress = StudyProgress(KEYS, state, 2, stream=stream)
    progress.update()
    progress.update()
    state.update("train__C", state="succeeded", finished=200.0)
    progress.update()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("progress: jobs ") for line in lines)
    assert "2/6 done, 1 running" in lines[0] and "3/6 done, 0 running" in lines[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_live_line(tmp_path):
    stream = Terminal()
    progress = StudyProgress(KEYS, make_state(tmp_path), 2, stream=stream)
    progress.update()
    progress.close()
    text = stream.getvalue()
    assert "progress:" not in text and "2/6 done" in text
    assert "\x1b[" in text      # drawn in place with terminal control sequences
