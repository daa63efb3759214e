"""The "local" executor: up to `jobs` commands at once as processes of this machine.

Each wrapper starts in a session of its own (`start_new_session`), so Ctrl-C in the runner's
terminal does not reach the trainings: they finish (or are cancelled) as the runner decides, and
a restarted runner finds them through their handles. `cancel` stops every process of the job,
SIGTERM first and SIGKILL after a grace period, and returns once none runs (`job_processes`),
whichever executor started the job. The machine is shared between the jobs as `sharing`
describes.
"""

from __future__ import annotations

import os
import socket
import subprocess

from nnunet_transfer.study.executors.base import (
    CANCEL_GRACE_S, CommandJob, Executor, JobStatus, prepare_attempt, process_alive,
    process_start_time, read_exit_status)
from nnunet_transfer.study.executors.job_processes import JobToStop, release_after_stop, stop_job
from nnunet_transfer.study.executors.sharing import (
    MachineShare, available_cpus, detect_gpus, visible_gpu_ids)


class LocalExecutor(Executor):
    """Jobs as processes of this machine (see the module doc)."""

    name = "local"
    handle_kind = "local"

    def __init__(self, jobs: int | None = None, *, cpus: int | None = None,
                 gpus: int | None = None, cancel_grace_s: float = CANCEL_GRACE_S):
        gpu_ids = visible_gpu_ids(detect_gpus() if gpus is None else gpus)
        self.capacity = jobs if jobs is not None else max(1, len(gpu_ids))
        self.share = MachineShare(self.capacity, cpus or available_cpus(), gpu_ids)
        self.cancel_grace_s = cancel_grace_s
        self._children: dict[int, subprocess.Popen] = {}

    @classmethod
    def follower(cls, handle: dict) -> "LocalExecutor":
        return cls(1, cpus=1, gpus=0)

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    def submit(self, job: CommandJob) -> dict:
        self._reap()
        prepare_attempt(job)
        env, slot = self.share.reserve(job)
        try:
            with open(job.log_path, "ab") as log:
                proc = subprocess.Popen(job.wrapper_argv(), cwd=job.cwd, env={**os.environ, **env},
                                        stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        except BaseException:
            self.share.release(slot)
            raise
        self._children[proc.pid] = proc
        start_time = process_start_time(proc.pid)
        self.share.occupy(slot, proc.pid, start_time, job.exit_path)
        return {"kind": self.handle_kind, "key": job.key, "pid": proc.pid, "pgid": proc.pid,
                "start_time": start_time, "exit_path": os.path.abspath(job.exit_path),
                "log_path": os.path.abspath(job.log_path), "host": socket.gethostname(),
                "slot": slot, "shared_env": {k: env[k] for k in sorted(env) if k not in job.env}}

    def _status(self, handle: dict) -> JobStatus:
        self._reap()
        finished = read_exit_status(handle["exit_path"])
        if finished is not None:
            return finished
        if process_alive(handle["pid"], handle.get("start_time")):
            self.share.note_running(handle, handle["pid"])
            return JobStatus("running")
        # the wrapper may have written the file and ended since we looked
        return read_exit_status(handle["exit_path"]) or JobStatus("lost")

    def _cancel(self, handle: dict) -> None:
        pid = handle["pid"]
        survivors = stop_job(JobToStop(handle["exit_path"], handle.get("start_time"), pid,
                                       handle.get("start_time")), self.cancel_grace_s)
        proc = self._children.pop(pid, None)
        if proc is not None:
            proc.wait()
        release_after_stop(self.share, handle, pid, survivors)

    def describe(self) -> str:
        return f"local: {self.share.describe()}"
