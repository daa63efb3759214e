"""The "submitit-local" executor: submitit's LocalExecutor, the code path of "slurm" on this
machine (what the tests use).

Its jobs are children of submitit's controller processes (the job id is the controller's pid),
which stay in the runner's process group: Ctrl-C in the runner's terminal stops them too (use
"local" for real work on one machine). `slurm=` options other than `time_min` are ignored here.
The machine is shared between the jobs as `sharing` describes. Cancel is submitit's (SIGINT to
the controller, which passes it on), then whatever of the job still runs is stopped by the
canceller itself (`job_processes`).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Mapping

from nnunet_transfer.study.executors.base import (
    CANCEL_GRACE_S, CommandJob, process_alive, process_start_time)
from nnunet_transfer.study.executors.job_processes import JobToStop, release_after_stop, stop_job
from nnunet_transfer.study.executors.sharing import (
    MachineShare, available_cpus, detect_gpus, visible_gpu_ids)
from nnunet_transfer.study.executors.submitit_executor import SubmititExecutor

DEFAULT_SUBMITIT_LOCAL_TIME_MIN = 7 * 24 * 60


class SubmititLocalExecutor(SubmititExecutor):
    """Jobs through submitit's LocalExecutor (see the module doc)."""

    name = "submitit-local"
    cluster = "local"
    on_cluster = False

    def __init__(self, folder: str, jobs: int | None = None,
                 options: Mapping[str, Any] | None = None, *, cpus: int | None = None,
                 gpus: int | None = None, cancel_grace_s: float = CANCEL_GRACE_S):
        import submitit

        super().__init__(folder, options, require_time=False, cancel_grace_s=cancel_grace_s)
        gpu_ids = visible_gpu_ids(detect_gpus() if gpus is None else gpus)
        self.capacity = jobs if jobs is not None else max(1, len(gpu_ids))
        self.share = MachineShare(self.capacity, cpus or available_cpus(), gpu_ids)
        self.array_size = self.capacity
        self._executor = submitit.LocalExecutor(folder=self.folder)
        self._executor.update_parameters(
            timeout_min=self.options.get("time_min", DEFAULT_SUBMITIT_LOCAL_TIME_MIN))

    @classmethod
    def following(cls, folder: str) -> "SubmititLocalExecutor":
        return cls(folder, 1, cpus=1, gpus=0)

    def _sharing(self, job: CommandJob) -> tuple[dict[str, str], int | None]:
        return self.share.reserve(job)

    def _after_submit(self, handle: dict, slot: int | None) -> None:
        controller = int(handle["job_id"])
        handle["start_time"] = process_start_time(controller)
        self.share.occupy(slot, controller, handle["start_time"], handle["exit_path"])

    def _release(self, slot: int | None, pid: int | None = None) -> None:
        self.share.release(slot, pid)

    def _executor_for(self, kind: str):
        return self._executor

    def _reap(self) -> None:
        """Collect the controllers of finished jobs (no zombies)."""
        for job_id, sub in list(self._jobs.items()):
            process = getattr(sub, "_process", None)
            if process is not None and process.poll() is not None:
                del self._jobs[job_id]

    def _active(self, handle: dict) -> bool:
        self._reap()
        return process_alive(int(handle["job_id"]), handle.get("start_time"))

    def _note_running(self, handle: dict) -> None:
        self.share.note_running(handle, int(handle["job_id"]))

    def _cancel(self, handle: dict) -> None:
        pid, start_time = int(handle["job_id"]), handle.get("start_time")
        process = getattr(self._jobs.get(handle["job_id"]), "_process", None)
        alive = ((lambda: process.poll() is None) if process is not None
                 else (lambda: process_alive(pid, start_time)))
        if alive():
            # submitit's own cancel: SIGINT to the controller, which passes it on and kills its
            # task after a second; SIGKILL to the controller only if it does not end.
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + self.cancel_grace_s
            while alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive():
                os.kill(pid, signal.SIGKILL)
                while alive():
                    time.sleep(0.02)
        # The controller is gone; its job's processes need not be (those the command started
        # itself do not die with their parents).
        survivors = stop_job(JobToStop(handle["exit_path"], start_time), self.cancel_grace_s)
        self._reap()
        release_after_stop(self.share, handle, pid, survivors)

    def describe(self) -> str:
        return f"submitit-local: {self.share.describe()}, submitit folder {self.folder}"
