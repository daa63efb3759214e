"""The live progress line of `study run`: jobs done / running / failed / left, elapsed time and
an estimate of the time left.

On a terminal it is one line redrawn in place by rich (the runner's own messages scroll above
it); otherwise (a log file, a pipe, CI) a plain line is printed whenever the counts change, so a
log stays readable and short. The estimate is the median duration of the jobs finished so far
of each kind, times the jobs of that kind left, over the executor's capacity (as `study status`).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from nnunet_transfer.study.state import (
    BLOCKED, FAILED, PENDING, RUNNING, SKIPPED, SUCCEEDED, StudyState)


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
    by_kind: dict[str, list[dict]] = {}
    for key in keys:
        by_kind.setdefault(key.split("__", 1)[0], []).append(
            state.jobs.get(key, {"state": PENDING}))
    done = running = failed = left = 0
    seconds, known = 0.0, True
    for records in by_kind.values():
        states = [r["state"] for r in records]
        kind_left = states.count(PENDING) + states.count(RUNNING) / 2
        done += states.count(SUCCEEDED) + states.count(SKIPPED)
        running += states.count(RUNNING)
        failed += states.count(FAILED) + states.count(BLOCKED)
        left += states.count(PENDING)
        durations = [r["finished"] - r["started"] for r in records if r["state"] == SUCCEEDED
                     and r.get("finished") and r.get("started")]
        if durations:
            seconds += statistics.median(durations) * kind_left
        elif kind_left:
            known = False     # a kind none of whose jobs has finished: no estimate yet
    return Counts(done, running, failed, left,
                  seconds / max(1, capacity) if known else None)


def progress_text(counts: Counts, elapsed: float) -> str:
    left = "unknown yet" if counts.seconds_left is None else f"~{_clock(counts.seconds_left)}"
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
