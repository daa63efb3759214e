"""The executors through submitit: "slurm" and "submitit-local".

- "slurm": one SLURM job per command through submitit (`sbatch` + `srun`), `jobs` = how many
  the runner keeps in flight (64 by default); `submit_many` submits the jobs of one kind as job
  arrays of at most `array_size` jobs. The options (`slurm=`) are listed in
  `slurm.SLURM_OPTIONS`, with `by_kind` overrides; `time_min` is required, because submitit
  would otherwise ask for 5 minutes. The folder must be on a file system the compute nodes
  share, and the runner's Python (`sys.executable`, with this package) must exist there.
  submitit's automatic requeue on preemption is switched off: a job ends with an exit file or
  is lost, and only the runner re-submits. A job that SLURM ended (scancel, time limit,
  preemption, node failure: `slurm.SLURM_INTERRUPTED_STATES`) is "lost" even when its wrapper
  wrote the exit code of the killed command, with SLURM's state as the reason.
- "submitit-local": submitit's LocalExecutor, the same code path as "slurm" on this machine
  (what the tests use). Its jobs are children of submitit's controller processes, which stay in
  the runner's process group: Ctrl-C in the runner's terminal stops them too (use "local" for
  real work on one machine). `slurm=` options other than `time_min` are ignored here. The
  machine is shared between the jobs as `sharing` describes.

In both, submitit runs `run_submitted_job` in the job's process, which starts the job wrapper.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Literal, Mapping, Sequence

from nnunet_transfer.study.executors import run_job
from nnunet_transfer.study.executors.base import (
    CANCEL_GRACE_S, CommandJob, Executor, JobStatus, prepare_attempt, process_alive,
    process_start_time, read_exit_status, signal_group)
from nnunet_transfer.study.executors.sharing import (
    MachineShare, available_cpus, detect_gpus, node_sharing_env, visible_gpu_ids)
from nnunet_transfer.study.executors.slurm import (
    DEFAULT_ARRAY_SIZE, SLURM_INTERRUPTED_STATES, check_slurm_options, job_kind,
    options_of_kind, sacct_state, slurm_parameters, slurm_state_is_active, slurm_state_word,
    squeue_states)

DEFAULT_SLURM_IN_FLIGHT = 64
DEFAULT_SUBMITIT_LOCAL_TIME_MIN = 7 * 24 * 60
# One squeue answer serves the status of every job for this long: the runner asks about each
# job in flight once per poll, and one call per poll is what a cluster's controller welcomes.
QUEUE_ANSWER_S = 1.0


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
    """Jobs through submitit: on SLURM ("slurm") or submitit's LocalExecutor ("submitit-local")."""

    handle_kind = "submitit"

    def __init__(self, cluster: Literal["slurm", "local"], folder: str, jobs: int | None = None,
                 options: Mapping[str, Any] | None = None, *, cpus: int | None = None,
                 gpus: int | None = None, cancel_grace_s: float = CANCEL_GRACE_S):
        import submitit

        self.cluster = cluster
        self.folder = os.path.abspath(folder)
        self.options = check_slurm_options(options, require_time=cluster == "slurm")
        self.cancel_grace_s = cancel_grace_s
        self._jobs: dict[str, Any] = {}   # job id -> submitit Job made by this process
        self._queue_answer: tuple[float, dict[str, str] | None] | None = None
        os.makedirs(self.folder, exist_ok=True)
        if cluster == "slurm":
            self.name = "slurm"
            self.capacity = jobs if jobs is not None else DEFAULT_SLURM_IN_FLIGHT
            self.share = None
            self.array_size = self.options.get("array_size", DEFAULT_ARRAY_SIZE)
            self._by_kind: dict[str, Any] = {}   # kind -> submitit.SlurmExecutor
            self._executor = None
        else:
            self.name = "submitit-local"
            gpu_ids = visible_gpu_ids(detect_gpus() if gpus is None else gpus)
            self.capacity = jobs if jobs is not None else max(1, len(gpu_ids))
            self.share = MachineShare(self.capacity, cpus or available_cpus(), gpu_ids)
            self.array_size = self.capacity
            self._executor = submitit.LocalExecutor(folder=self.folder)
            self._executor.update_parameters(
                timeout_min=self.options.get("time_min", DEFAULT_SUBMITIT_LOCAL_TIME_MIN))

    @classmethod
    def follower(cls, handle: dict) -> "SubmititExecutor":
        """One that only follows (status, cancel) jobs submitted earlier to the handle's folder:
        it needs no SLURM options and submits nothing; one per cluster and folder."""
        key = (handle.get("cluster", "slurm"), handle["folder"])
        if key not in _FOLLOWERS:
            self = cls.__new__(cls)
            self.cluster, self.folder, self.options, self.share = *key, {}, None
            self.name = "slurm" if self.cluster == "slurm" else "submitit-local"
            self.capacity, self.cancel_grace_s, self._jobs, self._executor = (
                0, CANCEL_GRACE_S, {}, None)
            self._queue_answer = None
            _FOLLOWERS[key] = self
        return _FOLLOWERS[key]

    # -- submission

    def _arguments(self, job: CommandJob) -> tuple[tuple, int | None]:
        prepare_attempt(job)
        if self.share is not None:
            env, slot = self.share.reserve(job)
        else:
            env, slot = dict(job.env), None
        return (job.wrapper_argv(), env, job.cwd, job.uses_accelerator, self.cluster == "slurm"), slot

    def _handle(self, job: CommandJob, submitted: Any, slot: int | None) -> dict:
        job_id = str(submitted.job_id)
        self._queue_answer = None   # taken before this job existed
        self._jobs[job_id] = submitted
        handle = {"kind": self.handle_kind, "cluster": self.cluster, "key": job.key,
                  "job_id": job_id, "folder": self.folder, "exit_path": os.path.abspath(job.exit_path),
                  "log_path": os.path.abspath(job.log_path), "slot": slot}
        if self.cluster == "local":  # the job id is the pid of submitit's controller
            handle["start_time"] = process_start_time(int(job_id))
            if self.share is not None:
                self.share.occupy(slot, int(job_id), handle["start_time"], job.exit_path)
        return handle

    def _executor_for(self, kind: str):
        """submitit's executor for the jobs of `kind`: one each, so that the options of one kind
        (submitit keeps parameters once set) never leak into another's jobs."""
        if self.cluster != "slurm":
            return self._executor
        if kind not in self._by_kind:
            import submitit
            executor = submitit.SlurmExecutor(folder=self.folder)
            executor.update_parameters(**slurm_parameters(options_of_kind(self.options, kind)))
            self._by_kind[kind] = executor
        return self._by_kind[kind]

    def submit(self, job: CommandJob) -> dict:
        self._reap()
        executor = self._executor_for(job_kind(job.key))
        arguments, slot = self._arguments(job)
        if self.cluster == "slurm":
            executor.update_parameters(job_name=job.key)
        try:
            submitted = executor.submit(run_submitted_job, *arguments)
        except BaseException:
            if self.share is not None:
                self.share.release(slot)
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
        if self.cluster == "slurm":
            executor.update_parameters(job_name=f"nnunet-transfer-{kind}")
        prepared, submitted = [], []
        with executor.batch():
            for job in jobs:
                arguments, slot = self._arguments(job)
                prepared.append((job, slot))
                submitted.append(executor.submit(run_submitted_job, *arguments))
        return [self._handle(job, sub, slot) for (job, slot), sub in zip(prepared, submitted)]

    # -- state

    def _reap(self) -> None:
        """Collect the controllers of finished submitit-local jobs (no zombies)."""
        for job_id, sub in list(self._jobs.items()):
            process = getattr(sub, "_process", None)
            if process is not None and process.poll() is not None:
                del self._jobs[job_id]

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
        if handle.get("cluster") == "slurm":
            queue = self._queue()
            if queue is not None:   # slurmctld lists every job that may still run
                return handle["job_id"] in queue
            # slurmctld does not answer: submitit's batched sacct, confirmed if "ended"
            batched = slurm_state_word(self._slurm_job(handle).state)
            if slurm_state_is_active(batched) and batched != "UNKNOWN":
                return True
            return slurm_state_is_active(slurm_state_word(self.slurm_state(handle, "force")))
        self._reap()
        return process_alive(int(handle["job_id"]), handle.get("start_time"))

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

    def _status(self, handle: dict) -> JobStatus:
        finished = read_exit_status(handle["exit_path"])
        if finished is not None:
            self._reap()
            return self._interrupted(handle, finished)
        if self._active(handle):
            if self.share is not None and handle.get("cluster") == "local":
                self.share.note_running(handle, int(handle["job_id"]))
            return JobStatus("running")
        finished = read_exit_status(handle["exit_path"])
        if finished is not None:
            return self._interrupted(handle, finished)
        reason = slurm_state_word(self.slurm_state(handle, "force")) \
            if handle.get("cluster") == "slurm" else None
        return JobStatus("lost", None, reason if reason in SLURM_INTERRUPTED_STATES else None)

    def _interrupted(self, handle: dict, finished: JobStatus) -> JobStatus:
        """A command killed by a signal in a job that SLURM ended is lost, not failed: it is
        run again."""
        if handle.get("cluster") != "slurm" or finished.state != "failed" or \
                (finished.exit_code or 0) < 128:
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
        if handle.get("cluster") != "slurm":
            return super().describe_job(handle)
        queued = (self._queue() or {}).get(handle["job_id"])
        return f"SLURM job {handle['job_id']}: {queued or self.slurm_state(handle, 'force')}"

    def _cancel(self, handle: dict) -> None:
        if handle.get("cluster") == "slurm":
            self._slurm_job(handle).cancel(check=False)  # scancel: SLURM signals every process
            return
        pid, start_time = int(handle["job_id"]), handle.get("start_time")
        sub = self._jobs.get(handle["job_id"])
        process = getattr(sub, "_process", None)
        alive = ((lambda: process.poll() is None) if process is not None
                 else (lambda: process_alive(pid, start_time)))
        if not alive():
            return
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
        self._reap()
        if self.share is not None:
            self.share.release(handle.get("slot"), pid)

    def describe(self) -> str:
        if self.cluster == "slurm":
            options = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items())
                                if k not in ("setup", "additional_parameters", "array_size"))
            return (f"slurm: up to {self.capacity} jobs in flight, arrays of up to "
                    f"{self.array_size} ({options}), "
                    f"submitit folder {self.folder}")
        return f"submitit-local: {self.share.describe()}, submitit folder {self.folder}"


_FOLLOWERS: dict[tuple[str, str], SubmititExecutor] = {}
