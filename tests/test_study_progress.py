"""The live progress line of `study run`: counts and estimate from the state file, one plain
line per change when not on a terminal, a rich live line on one."""

from __future__ import annotations

import io

from nnunet_transfer.study.progress import StudyProgress, count_jobs, progress_text
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
    # predictions: none finished yet, so no estimate
    assert counts.seconds_left is None
    state.update("predict__A", state="succeeded", finished=180.0)
    counts = count_jobs(KEYS, state, capacity=2)
    # train: median 50 s x (0 pending + 1 running / 2); predict: 10 s x 2 pending; over 2
    assert counts.seconds_left == (50 * 0.5 + 10 * 2) / 2
    assert progress_text(counts, 75) == ("jobs 3/6 done, 1 running, 0 failed, 2 left; elapsed "
                                         "0:01:15, time left ~0:00:22")


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
