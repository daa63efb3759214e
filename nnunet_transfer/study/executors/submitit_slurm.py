"""The "slurm" executor: one SLURM job per command through submitit (`sbatch` + `srun`).

`jobs` = how many the runner keeps in flight (64 by default); `submit_many` submits the jobs of
one kind as job arrays of at most `array_size` jobs. The options (`slurm=`) are listed in
`slurm.SLURM_OPTIONS`, with `by_kind` overrides; `time_min` is required, because submitit would
otherwise ask for 5 minutes. The folder must be on a file system the compute nodes share, and
the runner's Python (`sys.executable`, with this package) must exist there. submitit's
automatic requeue on preemption is switched off: a job ends with an exit file or is lost, and
only the runner re-submits. A job that SLURM ended (scancel, time limit, preemption, node
failure: `slurm.SLURM_INTERRUPTED_STATES`) is "lost" even when its wrapper wrote the exit code
of the killed command, with SLURM's state as the reason. Cancel is `scancel`: SLURM signals
every process of the job.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from nnunet_transfer.study.executors.base import CANCEL_GRACE_S, CommandJob, JobStatus
from nnunet_transfer.study.executors.slurm import (
    DEFAULT_ARRAY_SIZE, SLURM_INTERRUPTED_STATES, options_of_kind, sacct_state,
    slurm_parameters, slurm_state_is_active, slurm_state_word, squeue_states)
from nnunet_transfer.study.executors.submitit_executor import SubmititExecutor

DEFAULT_SLURM_IN_FLIGHT = 64
# One squeue answer serves the status of every job for this long: the runner asks about each
# job in flight once per poll, and one call per poll is what a cluster's controller welcomes.
QUEUE_ANSWER_S = 1.0


class SubmititSlurmExecutor(SubmititExecutor):
    """Jobs on SLURM through submitit (see the module doc)."""

    name = "slurm"
    cluster = "slurm"
    on_cluster = True

    def __init__(self, folder: str, jobs: int | None = None,
                 options: Mapping[str, Any] | None = None, *, require_time: bool = True,
                 cancel_grace_s: float = CANCEL_GRACE_S):
        super().__init__(folder, options, require_time=require_time,
                         cancel_grace_s=cancel_grace_s)
        self.capacity = jobs if jobs is not None else DEFAULT_SLURM_IN_FLIGHT
        self.array_size = self.options.get("array_size", DEFAULT_ARRAY_SIZE)
        self._by_kind: dict[str, Any] = {}   # kind -> submitit.SlurmExecutor
        self._queue_answer: tuple[float, dict[str, str] | None] | None = None

    @classmethod
    def following(cls, folder: str) -> "SubmititSlurmExecutor":
        """Needs no SLURM options: it submits nothing."""
        return cls(folder, 0, require_time=False)

    def _sharing(self, job: CommandJob) -> tuple[dict[str, str], int | None]:
        return dict(job.env), None    # shared on the node (`sharing.node_sharing_env`)

    def _after_submit(self, handle: dict, slot: int | None) -> None:
        self._queue_answer = None     # taken before this job existed

    def _executor_for(self, kind: str):
        """One submitit executor per kind, so that the options of one kind (submitit keeps
        parameters once set) never leak into another's jobs."""
        if kind not in self._by_kind:
            import submitit
            executor = submitit.SlurmExecutor(folder=self.folder)
            executor.update_parameters(**slurm_parameters(options_of_kind(self.options, kind)))
            self._by_kind[kind] = executor
        return self._by_kind[kind]

    def _name_jobs(self, executor, name: str) -> None:
        executor.update_parameters(job_name=name)

    # -- state

    def _slurm_job(self, handle: dict):
        import submitit

        job = self._jobs.get(handle["job_id"])
        if job is None:  # re-attach; kept so that submitit's watcher batches the sacct calls
            job = submitit.SlurmJob(folder=handle["folder"], job_id=handle["job_id"])
            self._jobs[handle["job_id"]] = job
        return job

    def _queue(self) -> dict[str, str] | None:
        """squeue's answer (job id -> state), at most QUEUE_ANSWER_S old; None without one."""
        now = time.monotonic()
        if self._queue_answer is None or now - self._queue_answer[0] > QUEUE_ANSWER_S:
            self._queue_answer = (now, squeue_states())
        return self._queue_answer[1]

    def _active(self, handle: dict) -> bool:
        queue = self._queue()
        if queue is not None:   # slurmctld lists every job that may still run
            return handle["job_id"] in queue
        # slurmctld does not answer: submitit's batched sacct, confirmed if "ended"
        batched = slurm_state_word(self._slurm_job(handle).state)
        if slurm_state_is_active(batched) and batched != "UNKNOWN":
            return True
        return slurm_state_is_active(slurm_state_word(self.slurm_state(handle, "force")))

    def slurm_state(self, handle: dict, mode: str = "standard") -> str:
        """sacct's state of the job ("RUNNING", "CANCELLED by 0", ...); "standard" asks SLURM
        at most every minute for long-running jobs (submitit batches the calls), "force" asks
        sacct now about this job alone (submitit gives a task of an array whose pending rest
        was cancelled the rest's state)."""
        if mode == "force":
            state = sacct_state(handle["job_id"])
            if state is not None:
                return state
        job = self._slurm_job(handle)
        return job.watcher.get_state(job.job_id, mode=mode)

    def _lost_reason(self, handle: dict) -> str | None:
        reason = slurm_state_word(self.slurm_state(handle, "force"))
        return reason if reason in SLURM_INTERRUPTED_STATES else None

    def _interrupted(self, handle: dict, finished: JobStatus) -> JobStatus:
        """A command killed by a signal in a job that SLURM ended is lost, not failed: it is
        run again."""
        if finished.state != "failed" or (finished.exit_code or 0) < 128:
            return finished
        state = slurm_state_word(self.slurm_state(handle, "force"))
        for _ in range(20):   # sacct may still say RUNNING / COMPLETING for a moment
            if not slurm_state_is_active(state):
                break
            time.sleep(0.5)
            state = slurm_state_word(self.slurm_state(handle, "force"))
        if state in SLURM_INTERRUPTED_STATES:
            return JobStatus("lost", finished.exit_code, state)
        return finished

    def describe_job(self, handle: dict) -> str:
        if not self.owns(handle):
            return super().describe_job(handle)
        queued = (self._queue() or {}).get(handle["job_id"])
        return f"SLURM job {handle['job_id']}: {queued or self.slurm_state(handle, 'force')}"

    def _cancel(self, handle: dict) -> None:
        self._slurm_job(handle).cancel(check=False)  # scancel: SLURM signals every process

    def describe(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items())
                            if k not in ("setup", "additional_parameters", "array_size"))
        return (f"slurm: up to {self.capacity} jobs in flight, arrays of up to "
                f"{self.array_size} ({options}), submitit folder {self.folder}")
