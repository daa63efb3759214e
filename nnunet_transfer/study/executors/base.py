"""The job interface of the executors: a `CommandJob`, its `JobStatus`, the `Executor` that
runs it, and how a job's end is known from files and processes.

How a job ended is known from files, never from the process that started it. Every command
runs through a small wrapper (`run_job.py` in this folder) that appends the command's output to
`job.log_path` and, when the command ends, writes its exit code to `job.exit_path` atomically
(128 + N when it was killed by signal N). So `status` works from a handle stored by an earlier
runner that was killed or crashed: an exit file means succeeded (0) or failed (anything else);
no exit file and the job still alive means running; no exit file and nothing alive means lost
(the wrapper itself was killed, e.g. with SIGKILL, or the machine went down): the runner
re-submits it. The command runs with "parent death signal" SIGKILL, so the command of a lost
job is not running any more (processes it started itself may outlive it, as they would outlive
it killed by hand). `submit` removes an exit file left by an earlier attempt. An executor starts
what it is given: keeping at most `capacity` jobs in flight is the runner's part.

A handle names the kind of executor that made it (`handle_kind`); the status of a handle of
another kind (the study switched executors while jobs of the old one were still running) is
asked of an executor of that kind, its `follower`.
"""

from __future__ import annotations

import abc
import os
import sys
from dataclasses import dataclass
from typing import ClassVar, Literal, Mapping, Sequence

from nnunet_transfer.study.executors import run_job

WRAPPER = os.path.abspath(run_job.__file__)
CANCEL_GRACE_S = 10.0
ENDED_STATES = ("Z", "X", "x")   # /proc states of a process that has ended (zombie, dead)


@dataclass(frozen=True)
class CommandJob:
    key: str                      # unique, filesystem-safe id, e.g. "train__FineTune__n5__seed0__unet"
    argv: tuple[str, ...]         # the command (absolute path of the tool first)
    env: Mapping[str, str]        # variables added on top of the runner's environment
    log_path: str                 # stdout+stderr of the command go here (appended; the folder is created)
    exit_path: str                # the wrapper writes the exit code here atomically when the command ends
    cwd: str | None = None
    uses_accelerator: bool = True # False for jobs that never use a GPU (evaluation, analysis on CPU)

    def wrapper_argv(self) -> list[str]:
        """The command line that runs `argv` through the wrapper."""
        return [sys.executable, WRAPPER, os.path.abspath(self.exit_path),
                os.path.abspath(self.log_path), "--", *self.argv]


@dataclass(frozen=True)
class JobStatus:
    state: Literal["running", "succeeded", "failed", "lost"]
    exit_code: int | None = None
    reason: str | None = None     # why a job is lost, where known (SLURM's state: TIMEOUT, ...)


_HANDLE_KINDS: dict[str, type["Executor"]] = {}


class Executor(abc.ABC):
    name: str
    capacity: int                 # jobs at once
    handle_kind: ClassVar[str]    # the "kind" of the handles it makes

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "handle_kind" in cls.__dict__:   # the class that follows the handles of that kind
            _HANDLE_KINDS[cls.handle_kind] = cls

    @abc.abstractmethod
    def submit(self, job: CommandJob) -> dict:
        """Start `job`; return a JSON-serialisable handle record."""

    def submit_many(self, jobs: Sequence[CommandJob]) -> list[dict]:
        """Start several jobs (a job array on SLURM); handles in the same order."""
        return [self.submit(job) for job in jobs]

    def owns(self, handle: dict) -> bool:
        """Whether `handle` is of the kind this executor follows itself."""
        return handle.get("kind") == self.handle_kind

    def status(self, handle: dict) -> JobStatus:
        """Works for handles made by an earlier process, and by an executor of another kind."""
        if not self.owns(handle):
            return follower_for(handle).status(handle)
        return self._status(handle)

    def cancel(self, handle: dict) -> None:
        """Returns once nothing of the job runs any more (on SLURM: once SLURM was told)."""
        if not self.owns(handle):
            return follower_for(handle).cancel(handle)
        return self._cancel(handle)

    @abc.abstractmethod
    def _status(self, handle: dict) -> JobStatus:
        """`status` of a handle of this kind."""

    @abc.abstractmethod
    def _cancel(self, handle: dict) -> None:
        """`cancel` of a handle of this kind."""

    @classmethod
    @abc.abstractmethod
    def follower(cls, handle: dict) -> "Executor":
        """One that can follow (status, cancel) `handle`, made by another process."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for `study status` and logs."""

    def describe_job(self, handle: dict) -> str:
        """The state of one job in the executor's words, for `study status`."""
        if not self.owns(handle):
            return follower_for(handle).describe_job(handle)
        return self.status(handle).state


def follower_for(handle: dict) -> Executor:
    """An executor of the kind that made `handle`."""
    kind = _HANDLE_KINDS.get(handle.get("kind"))
    if kind is None:
        raise ValueError(f"not an executor handle: {handle!r}")
    return kind.follower(handle)


# ---------------------------------------------------------------------------------------------
# Exit files and processes


def read_exit_status(exit_path: str) -> JobStatus | None:
    """succeeded / failed from the wrapper's exit file, None while there is none."""
    try:
        with open(exit_path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    try:
        code = int(text)
    except ValueError:  # not written by the wrapper (it writes atomically)
        return JobStatus("failed", None)
    return JobStatus("succeeded" if code == 0 else "failed", code)


def remove_stale(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def prepare_attempt(job: CommandJob) -> None:
    """Remove the exit file of an earlier attempt and create the log's folder."""
    remove_stale(job.exit_path)
    os.makedirs(os.path.dirname(os.path.abspath(job.log_path)), exist_ok=True)


@dataclass(frozen=True)
class ProcStat:
    """What /proc/<pid>/stat says of a process (fields 3, 5 and 22 of proc(5))."""

    state: str          # R, S, D, Z (zombie), ...
    pgid: int
    start_time: int     # clock ticks since boot


def proc_stat(pid: int) -> ProcStat | None:
    """/proc/<pid>/stat of `pid`, None when there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()  # the command name may contain spaces and ')'
    return ProcStat(fields[0], int(fields[2]), int(fields[19]))


def process_start_time(pid: int) -> int | None:
    """The start time of `pid` (zombies included), None when there is no such process or no
    /proc: with the pid it identifies the process even after the pid is recycled."""
    stat = proc_stat(pid)
    return None if stat is None else stat.start_time


def process_alive(pid: int, start_time: int | None) -> bool:
    """`pid` runs and is the process that had `start_time` (a zombie has ended)."""
    if os.path.isdir("/proc/self"):
        stat = proc_stat(pid)
        if stat is None or stat.state in ENDED_STATES:
            return False
        return start_time is None or stat.start_time == start_time
    try:  # no /proc: only whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
