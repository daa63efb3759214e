"""The live progress line of `study run`: jobs done / running / failed / left, elapsed time and
an estimate of the time left.

On a terminal it is one line redrawn in place by rich (the runner's own messages scroll above
it); otherwise (a log file, a pipe, CI) a plain line is printed whenever the counts change, so a
log stays readable and short. The time left is `estimate_time_left`'s, the one estimate that
`study status` shows too.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nnunet_transfer.study.executors.slurm import job_kind
from nnunet_transfer.study.state import (
    BLOCKED, FAILED, PENDING, RUNNING, SKIPPED, SUCCEEDED, StudyState)


@dataclass(frozen=True)
class KindTimes:
    """What the estimate knows of one kind of job."""

    durations: tuple[float, ...]   # seconds each of its succeeded jobs took
    left: float                    # jobs still to run: the pending ones, half of the running


@dataclass(frozen=True)
class TimeLeft:
    seconds: float | None          # None only while no job of any kind has finished
    guessed: tuple[str, ...]       # kinds left with no finished job, counted at the fallback


def estimate_seconds_left(kinds: Mapping[str, KindTimes], capacity: int) -> TimeLeft:
    """The time left, from the durations of the jobs finished so far.

    Each job left counts its kind's median duration; a running job counts half of it (it is
    about half done, on average). A kind none of whose jobs has finished yet counts the median
    duration of all finished jobs, whatever their kind: a rough guess (a prediction is shorter
    than a training), named in `guessed`, until a job of that kind finishes. The sum is divided
    by `capacity`, the jobs that run at once. So there is an estimate from the first finished
    job on; before that (nothing finished, something left) `seconds` is None.
    """
    finished = [d for times in kinds.values() for d in times.durations]
    fallback = statistics.median(finished) if finished else None
    seconds, guessed = 0.0, []
    for kind, times in sorted(kinds.items()):
        if not times.left:
            continue
        if times.durations:
            seconds += statistics.median(times.durations) * times.left
        elif fallback is not None:
            seconds += fallback * times.left
            guessed.append(kind)
        else:
            return TimeLeft(None, ())
    return TimeLeft(seconds / max(1, capacity), tuple(guessed))


def estimate_time_left(records: Mapping[str, dict], capacity: int) -> TimeLeft:
    """`estimate_seconds_left` of the jobs whose state records are `records` (key -> record)."""
    by_kind: dict[str, list[dict]] = {}
    for key, record in records.items():
        by_kind.setdefault(job_kind(key), []).append(record)
    kinds = {}
    for kind, group in by_kind.items():
        states = [r["state"] for r in group]
        kinds[kind] = KindTimes(
            tuple(r["finished"] - r["started"] for r in group if r["state"] == SUCCEEDED
                  and r.get("finished") is not None and r.get("started") is not None),
            states.count(PENDING) + states.count(RUNNING) / 2)
    return estimate_seconds_left(kinds, capacity)


@dataclass(frozen=True)
class Counts:
    done: int
    running: int
    failed: int     # failed or blocked by a failure
    left: int
    seconds_left: float | None

    @property
    def total(self) -> int:
        return self.done + self.running + self.failed + self.left


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def count_jobs(keys: Sequence[str], state: StudyState, capacity: int) -> Counts:
    records = {key: state.jobs.get(key, {"state": PENDING}) for key in keys}
    states = [record["state"] for record in records.values()]
    return Counts(states.count(SUCCEEDED) + states.count(SKIPPED), states.count(RUNNING),
                  states.count(FAILED) + states.count(BLOCKED), states.count(PENDING),
                  estimate_time_left(records, capacity).seconds)


def progress_text(counts: Counts, elapsed: float) -> str:
    left = ("unknown until a job finishes" if counts.seconds_left is None
            else f"~{_clock(counts.seconds_left)}")
    return (f"jobs {counts.done}/{counts.total} done, {counts.running} running, "
            f"{counts.failed} failed, {counts.left} left; elapsed {_clock(elapsed)}, "
            f"time left {left}")


class StudyProgress:
    """`update()` after each pass of the runner's loop, `close()` at its end."""

    def __init__(self, keys: Sequence[str], state: StudyState, capacity: int, stream=None):
        self.keys, self.state, self.capacity = list(keys), state, capacity
        self.stream = stream or sys.stdout
        self.start = time.time()
        self._last: Counts | None = None
        self._live = None
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.live import Live
            self._live = Live("", console=Console(file=self.stream, highlight=False),
                              refresh_per_second=2, transient=False)
            self._live.start()
        self.update()

    def update(self) -> None:
        counts = count_jobs(self.keys, self.state, self.capacity)
        text = progress_text(counts, time.time() - self.start)
        if self._live is not None:
            from rich.text import Text
            self._live.update(Text(text, no_wrap=True, overflow="ellipsis"))
        elif (counts.done, counts.running, counts.failed, counts.left) != (
                (self._last.done, self._last.running, self._last.failed, self._last.left)
                if self._last else None):
            print(f"progress: {text}", file=self.stream, flush=True)
        self._last = counts

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
