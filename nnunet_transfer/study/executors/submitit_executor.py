"""The executors through submitit, a shared base and two small kinds: "slurm"
(`submitit_slurm.SubmititSlurmExecutor`) and "submitit-local"
(`submitit_local.SubmititLocalExecutor`).

What they share is here: submitit runs `run_submitted_job` in the job's process, which starts
the job wrapper; jobs are submitted one by one or, per kind of job, as job arrays of at most
`array_size` jobs; a job's end is read from its exit file first. What differs is what the
subclasses override: how a job shares the machine (`_sharing`, `_after_submit`, `_release`),
which submitit executor takes a kind's jobs (`_executor_for`, `_name_jobs`), whether a job may
still run (`_active`), how a job that ended is judged (`_interrupted`, `_lost_reason`), cancel
and the descriptions.

Handles keep the kind "submitit" with a "cluster" ("slurm" or "local"), as before the split,
so that studies started earlier are followed as they were.
"""

from __future__ import annotations

import abc
import os
import signal
import subprocess
import sys
from typing import Any, ClassVar, Mapping, Sequence

from nnunet_transfer.study.executors import run_job
from nnunet_transfer.study.executors.base import (
    CANCEL_GRACE_S, CommandJob, Executor, JobStatus, prepare_attempt, read_exit_status,
    signal_group)
from nnunet_transfer.study.executors.sharing import node_sharing_env
from nnunet_transfer.study.executors.slurm import check_slurm_options, job_kind


def run_submitted_job(wrapper_argv: list[str], env: dict[str, str], cwd: str | None,
                      uses_accelerator: bool, on_cluster: bool) -> int:
    """The function submitit runs (in its job process): the wrapper, in a session of its own.

    Under submitit's LocalExecutor the controller signals only this process (cancel: SIGINT,
    time limit: SIGUSR2), so the signals are passed on to the wrapper's process group. Under
    SLURM every process of the job gets the signals directly; SIGUSR2 (submitit's time-limit /
    preemption signal) is only noted, so that submitit does not requeue the job behind the
    runner's back. If this process dies, the wrapper gets SIGKILL (and so its command); under
    the LocalExecutor this process itself gets SIGKILL when its controller dies, so a job whose
    controller is gone has left nothing running.
    """
    if not on_cluster:
        controller = os.environ.get("SUBMITIT_LOCAL_JOB_ID", "")
        if controller.isdigit() and os.getppid() == int(controller):
            die = run_job.parent_death_signal(expected_parent=int(controller))
            if die is not None:
                die()
    full_env = dict(os.environ)
    if on_cluster:
        full_env.update(node_sharing_env(uses_accelerator))
        full_env[run_job.IGNORED_SIGNALS] = "SIGUSR2"   # the time limit ends it, as TIMEOUT
    full_env.update(env)
    exit_path, log_path = wrapper_argv[2], wrapper_argv[3]
    started: list[subprocess.Popen] = []
    pending: list[int] = []

    def pass_on(signum, _frame) -> None:
        if started:
            signal_group(started[0].pid, signum)
        else:
            pending.append(signum)

    def note(signum, _frame) -> None:
        print(f"run_submitted_job: received {signal.Signals(signum).name}; the job's processes "
              f"get it from SLURM", file=sys.stderr, flush=True)

    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2"):
        signal.signal(getattr(signal, name), note if on_cluster else pass_on)
    try:
        # Under SLURM the wrapper stays in the job's process group: some process trackers find
        # a job's processes by group. Locally it gets a group of its own to pass signals on to.
        proc = subprocess.Popen(wrapper_argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                start_new_session=not on_cluster,
                                preexec_fn=run_job.parent_death_signal())
    except OSError as error:
        with open(log_path, "ab") as log:
            log.write(f"[run_submitted_job] cannot start the wrapper: {error}\n".encode())
        run_job.write_exit_code(exit_path, 126)
        return 126
    started.append(proc)
    for signum in pending:
        signal_group(proc.pid, signum)
    return run_job.exit_code_of(proc.wait())


class SubmititExecutor(Executor):
    """The shared part of the executors through submitit (see the module doc)."""

    handle_kind = "submitit"
    cluster: ClassVar[str]            # the handle's "cluster": "slurm" or "local"
    on_cluster: ClassVar[bool]        # run_submitted_job's on_cluster
    _by_cluster: ClassVar[dict[str, type["SubmititExecutor"]]] = {}
    _followers: ClassVar[dict[tuple[str, str], "SubmititExecutor"]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        SubmititExecutor._by_cluster[cls.cluster] = cls

    def __init__(self, folder: str, options: Mapping[str, Any] | None, *, require_time: bool,
                 cancel_grace_s: float = CANCEL_GRACE_S):
        self.folder = os.path.abspath(folder)
        self.options = check_slurm_options(options, require_time=require_time)
        self.cancel_grace_s = cancel_grace_s
        self._jobs: dict[str, Any] = {}   # job id -> submitit Job made (or re-attached) here
        os.makedirs(self.folder, exist_ok=True)

    def owns(self, handle: dict) -> bool:
        return super().owns(handle) and handle.get("cluster", "slurm") == self.cluster

    @classmethod
    def follower(cls, handle: dict) -> "SubmititExecutor":
        """One that only follows (status, cancel) jobs submitted earlier to the handle's folder:
        it submits nothing; one per cluster and folder."""
        key = (handle.get("cluster", "slurm"), handle["folder"])
        if key not in cls._followers:
            cls._followers[key] = cls._by_cluster[key[0]].following(key[1])
        return cls._followers[key]

    @classmethod
    @abc.abstractmethod
    def following(cls, folder: str) -> "SubmititExecutor":
        """An executor of this cluster that follows the jobs of `folder`."""

    # -- what the kinds do differently

    @abc.abstractmethod
    def _sharing(self, job: CommandJob) -> tuple[dict[str, str], int | None]:
        """The job's variables and the GPU slot it takes."""

    def _after_submit(self, handle: dict, slot: int | None) -> None:
        """Note what the handle needs beyond the shared fields."""

    def _release(self, slot: int | None, pid: int | None = None) -> None:
        """Give back the slot of a job that did not start, or ended."""

    @abc.abstractmethod
    def _executor_for(self, kind: str):
        """submitit's executor for the jobs of `kind`."""

    def _name_jobs(self, executor, name: str) -> None:
        """Name the jobs submitted next (where a queue shows names)."""

    def _reap(self) -> None:
        """Collect whatever ended processes this executor started."""

    @abc.abstractmethod
    def _active(self, handle: dict) -> bool:
        """Whether the job may still run (it wrote no exit file yet)."""

    def _note_running(self, handle: dict) -> None:
        """A job seen running (maybe started by an earlier runner)."""

    def _interrupted(self, handle: dict, finished: JobStatus) -> JobStatus:
        """How a job with an exit file ended, in the executor's judgement."""
        return finished

    def _lost_reason(self, handle: dict) -> str | None:
        """Why a job that ended without an exit file is lost, where known."""
        return None

    # -- submission

    def _arguments(self, job: CommandJob) -> tuple[tuple, int | None]:
        prepare_attempt(job)
        env, slot = self._sharing(job)
        return (job.wrapper_argv(), env, job.cwd, job.uses_accelerator, self.on_cluster), slot

    def _handle(self, job: CommandJob, submitted: Any, slot: int | None) -> dict:
        job_id = str(submitted.job_id)
        self._jobs[job_id] = submitted
        handle = {"kind": self.handle_kind, "cluster": self.cluster, "key": job.key,
                  "job_id": job_id, "folder": self.folder, "exit_path": os.path.abspath(job.exit_path),
                  "log_path": os.path.abspath(job.log_path), "slot": slot}
        self._after_submit(handle, slot)
        return handle

    def submit(self, job: CommandJob) -> dict:
        self._reap()
        executor = self._executor_for(job_kind(job.key))
        arguments, slot = self._arguments(job)
        self._name_jobs(executor, job.key)
        try:
            submitted = executor.submit(run_submitted_job, *arguments)
        except BaseException:
            self._release(slot)
            raise
        return self._handle(job, submitted, slot)

    def submit_many(self, jobs: Sequence[CommandJob]) -> list[dict]:
        """The jobs of each kind as job arrays of at most `array_size` jobs."""
        by_kind: dict[str, list[int]] = {}
        for index, job in enumerate(jobs):
            by_kind.setdefault(job_kind(job.key), []).append(index)
        handles: list[dict | None] = [None] * len(jobs)
        for kind, indices in by_kind.items():
            for start in range(0, len(indices), self.array_size):
                chunk = indices[start:start + self.array_size]
                for index, handle in zip(chunk, self._submit_array(kind, [jobs[i] for i in chunk])):
                    handles[index] = handle
        return handles

    def _submit_array(self, kind: str, jobs: Sequence[CommandJob]) -> list[dict]:
        if len(jobs) == 1:
            return [self.submit(jobs[0])]
        self._reap()
        executor = self._executor_for(kind)
        self._name_jobs(executor, f"nnunet-transfer-{kind}")
        prepared, submitted = [], []
        with executor.batch():
            for job in jobs:
                arguments, slot = self._arguments(job)
                prepared.append((job, slot))
                submitted.append(executor.submit(run_submitted_job, *arguments))
        return [self._handle(job, sub, slot) for (job, slot), sub in zip(prepared, submitted)]

    # -- state

    def _status(self, handle: dict) -> JobStatus:
        finished = read_exit_status(handle["exit_path"])
        if finished is not None:
            self._reap()
            return self._interrupted(handle, finished)
        if self._active(handle):
            self._note_running(handle)
            return JobStatus("running")
        finished = read_exit_status(handle["exit_path"])
        if finished is not None:
            return self._interrupted(handle, finished)
        return JobStatus("lost", None, self._lost_reason(handle))
