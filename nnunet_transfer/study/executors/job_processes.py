"""Every process of a job, found and stopped by whoever cancels it.

A cancelled job must leave nothing running (a training that outlives its cancel holds a GPU).
Signalling the wrapper's process group and waiting for the wrapper to end is not enough: the
wrapper ends (by SIGKILL, or because its command ended) while other processes of the job may
still be alive, or be about to die with a SIGKILL not yet acted on, or have left the group
(`setsid`). So the side that cancels makes sure itself, never trusting the wrapper to pass
anything on:

1. the job's processes are those that carry its mark: the wrapper puts
   `run_job.JOB_MARK` = the job's exit path in its command's environment, and every process
   the command starts inherits it (`/proc/PID/environ` is what a process was started with);
   once seen, a process is followed through its pid and start time until it has ended (an
   exiting process's environment can no longer be read, and a large one, a training, takes a
   while to exit); the wrapper itself is followed that way from the start;
2. SIGTERM to each of their process groups and to the wrapper's, then up to `grace_s` for all
   of them to end;
3. SIGKILL to whatever still runs, repeated (a process may fork while it is signalled) until
   none is alive, for at most `KILL_WAIT_S`;
4. the processes still alive after that are returned, so that the caller can say so.

A group is signalled only while it is known to be the job's: its leader is the wrapper (same
pid and start time, a zombie included: the id stays reserved until it is reaped), or a marked
process is in it. Without /proc (not Linux) only the wrapper's group is signalled, while the
wrapper runs.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from nnunet_transfer.study.executors import run_job
from nnunet_transfer.study.executors.base import (
    ENDED_STATES, proc_stat, process_alive, process_start_time, signal_group)

KILL_WAIT_S = 30.0
POLL_S = 0.1   # each look reads /proc/*/stat (cheap) and the environ of the newer ones


class JobSurvivedCancel(RuntimeError):
    """Processes of a cancelled job still ran KILL_WAIT_S after SIGKILL (stuck in the kernel,
    e.g. in a GPU driver)."""

    def __init__(self, key: str, pids: list[int]):
        super().__init__(f"cancel: job {key} still has processes {pids} after SIGKILL; they "
                         f"hold what they use (a GPU) until they end; stop them by hand")
        self.key, self.pids = key, pids


@dataclass(frozen=True)
class JobProcess:
    pid: int
    pgid: int
    start_time: int


def marked_processes(mark: str, started_after: int | None = None) -> list[JobProcess]:
    """The live processes (zombies excluded) whose environment holds JOB_MARK=`mark`; only
    those started at or after `started_after` (a start time) are looked at."""
    entry = f"{run_job.JOB_MARK}={mark}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = proc_stat(int(name))
        if stat is None or stat.state in ENDED_STATES:
            continue
        if started_after is not None and stat.start_time < started_after:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:   # gone, or another user's
            continue
        if entry in environ:
            found.append(JobProcess(int(name), stat.pgid, stat.start_time))
    return found


@dataclass(frozen=True)
class JobToStop:
    """What identifies a job's processes: its mark (the exit path), a start time none of them
    is older than (the wrapper's, or the submitit controller's), and the wrapper leading a
    group of its own where known (None under submitit, where the canceller does not know it)."""

    mark: str
    started_after: int | None = None
    wrapper_pid: int | None = None
    wrapper_start_time: int | None = None

    def wrapper_group_is_ours(self) -> bool:
        """The wrapper's pid (its group's id) still names the wrapper, zombie or not."""
        if self.wrapper_pid is None:
            return False
        if self.wrapper_start_time is None:   # no /proc: only while it runs
            return process_alive(self.wrapper_pid, None)
        return process_start_time(self.wrapper_pid) == self.wrapper_start_time


class _Stopping:
    """The processes of one job while it is being stopped: those marked now, and those seen
    marked before that still run (an exiting process's environment can no longer be read, and
    a large one, a training, may take seconds to exit)."""

    def __init__(self, job: JobToStop):
        self.job = job
        self.known: dict[int, JobProcess] = {}

    def _refresh(self) -> list[JobProcess]:
        """The job's processes marked now (the others stay known while they run)."""
        marked = []
        if os.path.isdir("/proc/self"):
            marked = marked_processes(self.job.mark, self.job.started_after)
            self.known.update((p.pid, p) for p in marked)
        self.known = {pid: p for pid, p in self.known.items() if process_alive(pid, p.start_time)}
        return marked

    def alive(self) -> list[int]:
        """The pids of the job that still run (the wrapper first, if it does)."""
        self._refresh()
        job = self.job
        wrapper = ([job.wrapper_pid] if job.wrapper_pid is not None
                   and process_alive(job.wrapper_pid, job.wrapper_start_time) else [])
        return wrapper + [pid for pid in self.known if pid not in wrapper]

    def signal(self, signum: int) -> None:
        """`signum` to the wrapper's group while it is ours, to the groups of the marked
        processes and to each known process (those that left for a group of their own)."""
        groups = {p.pgid for p in self._refresh()}
        if self.job.wrapper_group_is_ours():
            groups.add(self.job.wrapper_pid)
        for pgid in groups:
            signal_group(pgid, signum)
        for process in self.known.values():
            _kill(process.pid, signum)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_until_gone(stopping: _Stopping, seconds: float,
                     repeat_signal: int | None = None) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = stopping.alive()
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        if repeat_signal is not None:
            stopping.signal(repeat_signal)
        alive = stopping.alive()
    return alive


def stop_job(job: JobToStop, grace_s: float) -> list[int]:
    """SIGTERM, up to `grace_s`, SIGKILL until nothing of `job` runs (see the module doc);
    the pids still alive after KILL_WAIT_S more (none, but for a process stuck in the kernel)."""
    stopping = _Stopping(job)
    if not stopping.alive():
        return []
    stopping.signal(signal.SIGTERM)
    if not _wait_until_gone(stopping, grace_s):
        return []
    stopping.signal(signal.SIGKILL)
    return _wait_until_gone(stopping, KILL_WAIT_S, repeat_signal=signal.SIGKILL)


def release_after_stop(share, handle: dict, pid: int, survivors: list[int]) -> None:
    """Free the slot a cancelled job held on this machine (`sharing.MachineShare`), then name
    the job if anything of it outlived the cancel: the slot is freed either way, since what
    survived SIGKILL is stuck in the kernel and no new job would start sooner for waiting."""
    share.release(handle.get("slot"), pid)
    if survivors:
        raise JobSurvivedCancel(handle["key"], survivors)
