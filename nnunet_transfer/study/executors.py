"""Executors: where the commands of a study run (this machine, or a cluster through SLURM).

The study runner turns every step (pretraining, training, prediction, evaluation, analysis) into
a `CommandJob` and hands it to an `Executor`:

    executor = make_executor("local", jobs=2, folder=study_folder + "/executor")
    handle = executor.submit(job)         # a JSON-serialisable record; the runner stores it
    executor.status(handle)               # JobStatus("running" | "succeeded" | "failed" | "lost")

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

Kinds (`make_executor`):

- "local": up to `jobs` commands at once as processes of this machine. Each wrapper starts in a
  session of its own (`start_new_session`), so Ctrl-C in the runner's terminal does not reach
  the trainings: they finish (or are cancelled) as the runner decides, and a restarted runner
  finds them through their handles. `cancel` sends SIGTERM to the job's process group and
  SIGKILL after a grace period.
- "slurm": one SLURM job per command through submitit (`sbatch` + `srun`), `jobs` = how many
  the runner keeps in flight (64 by default); `submit_many` submits a job array. The options
  (`slurm=`) are listed in `SLURM_OPTIONS`; `time_min` is required, because submitit would
  otherwise ask for 5 minutes. The folder must be on a file system the compute nodes share, and
  the runner's Python (`sys.executable`, with this package) must exist there. submitit's
  automatic requeue on preemption is switched off: a job ends with an exit file or is lost, and
  only the runner re-submits.
- "submitit-local": submitit's LocalExecutor, the same code path as "slurm" on this machine
  (what the tests use). Its jobs are children of submitit's controller processes, which stay in
  the runner's process group: Ctrl-C in the runner's terminal stops them too (use "local" for
  real work on one machine). `slurm=` options other than `time_min` are ignored here.

Sharing this machine ("local" and "submitit-local"). With C cores (the CPUs this process may
run on) and N = `jobs`:

- every job gets NNUNET_TRANSFER_CPU_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS and
  OPENBLAS_NUM_THREADS = max(1, C // N): runs that each use a thread per core oversubscribe the
  cores, and OpenMP's spinning threads then made two side-by-side runs ~15x slower here;
- with K GPUs visible (torch.cuda.device_count(), `jobs` defaults to K then), a job that uses
  the accelerator gets CUDA_VISIBLE_DEVICES = one GPU: the lowest free job slot s in 0..N-1
  (slots of finished jobs are free again) and GPU s mod K, so N = 2K puts two jobs on each GPU.
  When the runner's own CUDA_VISIBLE_DEVICES lists the GPUs (e.g. "2,3"), its entries are used,
  so slot 0 gets "2". A job with `uses_accelerator=False` gets CUDA_VISIBLE_DEVICES="" so it
  never takes GPU memory. Slots of jobs started by an earlier runner count once `status` has
  seen them running;
- nnUNet_n_proc_DA (see `data_augmentation_processes`): 0 for a job without a GPU, else its
  share of the cores minus one, at most 12.

On SLURM the same rules are applied on the compute node, with C = the CPUs the job was given
(its CPU affinity, i.e. `cpus_per_task`) and N = 1; CUDA_VISIBLE_DEVICES is SLURM's.

Variables the runner's environment already has are replaced by these values; variables set in
`CommandJob.env` win over both.
"""

from __future__ import annotations

import abc
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from nnunet_transfer.errors import UserError
from nnunet_transfer.study import run_job

WRAPPER = os.path.abspath(run_job.__file__)
KINDS = ("local", "slurm", "submitit-local")
THREAD_VARIABLES = ("NNUNET_TRANSFER_CPU_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS")
MAX_DATA_AUGMENTATION_PROCESSES = 12  # nnU-Net's own default (get_allowed_n_proc_DA)
DEFAULT_SLURM_IN_FLIGHT = 64
DEFAULT_SUBMITIT_LOCAL_TIME_MIN = 7 * 24 * 60
CANCEL_GRACE_S = 10.0


# ---------------------------------------------------------------------------------------------
# The interface


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


class Executor(abc.ABC):
    name: str
    capacity: int                 # jobs at once

    @abc.abstractmethod
    def submit(self, job: CommandJob) -> dict:
        """Start `job`; return a JSON-serialisable handle record."""

    def submit_many(self, jobs: Sequence[CommandJob]) -> list[dict]:
        """Start several jobs (a job array on SLURM); handles in the same order."""
        return [self.submit(job) for job in jobs]

    @abc.abstractmethod
    def status(self, handle: dict) -> JobStatus:
        """Works for handles made by an earlier process."""

    @abc.abstractmethod
    def cancel(self, handle: dict) -> None:
        ...

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for `study status` and logs."""


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


def _remove_stale(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()  # the command name may contain spaces and ')'
    return fields[0], int(fields[19])             # fields 3 and 22 of proc(5)


def process_start_time(pid: int) -> int | None:
    """The start time of `pid` (zombies included), None when there is no such process or no
    /proc: with the pid it identifies the process even after the pid is recycled."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def process_alive(pid: int, start_time: int | None) -> bool:
    """`pid` runs and is the process that had `start_time` (a zombie has ended)."""
    if os.path.isdir("/proc/self"):
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X", "x"):
            return False
        return start_time is None or stat[1] == start_time
    try:  # no /proc: only whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _child_ended(proc: subprocess.Popen) -> bool:
    """Whether our child `proc` ended, without reaping it: while it is a zombie its pid, and so
    its process-group id, cannot be given to another process."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True
    except AttributeError:  # no waitid (not Linux)
        return proc.poll() is not None


# ---------------------------------------------------------------------------------------------
# Sharing the machine


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def detect_gpus() -> int:
    """torch.cuda.device_count(), 0 when torch or CUDA is not there."""
    try:
        import torch
        return int(torch.cuda.device_count())
    except Exception:
        return 0


def visible_gpu_ids(count: int, environ: Mapping[str, str] | None = None) -> list[str]:
    """What to put in CUDA_VISIBLE_DEVICES for GPU 0..count-1 of this process: the entries of
    our own CUDA_VISIBLE_DEVICES when it lists them (indices inside it would be renumbered)."""
    environ = os.environ if environ is None else environ
    listed = [x.strip() for x in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    if len(listed) >= count:
        return listed[:count]
    return [str(i) for i in range(count)]


def data_augmentation_processes(cores_per_job: int, has_gpu: bool) -> int:
    """nnUNet_n_proc_DA for one job.

    nnU-Net starts that many augmentation worker processes for training plus max(1, n // 2) for
    validation (0 = augment in the training process itself, no workers). Without a GPU the
    network's step on the CPU dominates and already uses the job's share of the cores through
    its threads; workers would only compete with it (and each may start threads of its own), so
    0 keeps a job inside its share (the tests and the demo run that way). With a GPU the
    augmentation is what the GPU waits for: one core of the share drives the GPU, the others
    augment; the validation workers mostly sleep on a full queue, so they are not counted. At
    most 12, nnU-Net's own default.
    """
    if not has_gpu:
        return 0
    return max(0, min(MAX_DATA_AUGMENTATION_PROCESSES, cores_per_job - 1))


def sharing_env(cores_per_job: int, gpu: str | None, *, uses_accelerator: bool,
                machine_has_gpus: bool) -> dict[str, str]:
    """The variables that keep one job inside its share of the machine (see the module doc)."""
    threads = str(max(1, cores_per_job))
    env = {name: threads for name in THREAD_VARIABLES}
    if uses_accelerator and gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    elif machine_has_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["nnUNet_n_proc_DA"] = str(data_augmentation_processes(
        max(1, cores_per_job), uses_accelerator and bool(gpu)))
    return env


def node_sharing_env(uses_accelerator: bool) -> dict[str, str]:
    """`sharing_env` computed inside a SLURM job: one job on all the CPUs it was given, with the
    GPUs SLURM gave it (CUDA_VISIBLE_DEVICES is left as SLURM set it)."""
    cores = available_cpus()
    has_gpu = uses_accelerator and bool(os.environ.get("CUDA_VISIBLE_DEVICES", "").strip())
    env = {name: str(cores) for name in THREAD_VARIABLES}
    env["nnUNet_n_proc_DA"] = str(data_augmentation_processes(cores, has_gpu))
    return env


@dataclass
class _Slot:
    pid: int
    start_time: int | None
    exit_path: str


@dataclass
class MachineShare:
    """Thread counts and GPU slots for `jobs` jobs at once on this machine."""

    jobs: int
    cores: int
    gpu_ids: list[str]
    taken: dict[int, _Slot | None] = field(default_factory=dict)

    @property
    def threads(self) -> int:
        return max(1, self.cores // self.jobs)

    def _prune(self) -> None:
        for slot, owner in list(self.taken.items()):
            if owner is not None and (os.path.exists(owner.exit_path)
                                      or not process_alive(owner.pid, owner.start_time)):
                del self.taken[slot]

    def reserve(self, job: CommandJob) -> tuple[dict[str, str], int | None]:
        """The job's sharing variables (its own env on top) and the GPU slot it takes."""
        slot = gpu = None
        if job.uses_accelerator and self.gpu_ids:
            self._prune()
            free = [s for s in range(self.jobs) if s not in self.taken]
            if free:
                slot = free[0]
                gpu = self.gpu_ids[slot % len(self.gpu_ids)]
            else:  # more jobs than slots (the runner went over capacity): least busy GPU
                load = [0] * len(self.gpu_ids)
                for s in self.taken:
                    load[s % len(self.gpu_ids)] += 1
                gpu = self.gpu_ids[load.index(min(load))]
            if slot is not None:
                self.taken[slot] = None  # filled by occupy() once the pid is known
        env = sharing_env(self.threads, gpu, uses_accelerator=job.uses_accelerator,
                          machine_has_gpus=bool(self.gpu_ids))
        env.update(job.env)
        return env, slot

    def occupy(self, slot: int | None, pid: int, start_time: int | None, exit_path: str) -> None:
        if slot is not None:
            self.taken[slot] = _Slot(pid, start_time, exit_path)

    def release(self, slot: int | None, pid: int | None = None) -> None:
        """Free `slot` (only if `pid` holds it, when given)."""
        owner = self.taken.get(slot) if slot is not None else None
        if slot in self.taken and (pid is None or (owner is not None and owner.pid == pid)):
            del self.taken[slot]

    def note_running(self, handle: dict, pid: int) -> None:
        """A running job started by an earlier runner keeps its slot."""
        slot = handle.get("slot")
        if isinstance(slot, int) and 0 <= slot < self.jobs and slot not in self.taken:
            self.taken[slot] = _Slot(pid, handle.get("start_time"), handle["exit_path"])

    def describe(self) -> str:
        gpus = (f"GPUs {','.join(self.gpu_ids)} (CUDA_VISIBLE_DEVICES by job slot)"
                if self.gpu_ids else "no GPU")
        return (f"{self.jobs} job(s) at once, {self.threads} CPU thread(s) each of {self.cores} "
                f"core(s), {gpus}")


# ---------------------------------------------------------------------------------------------
# local


class LocalExecutor(Executor):
    """Jobs as processes of this machine (see the module doc)."""

    name = "local"

    def __init__(self, jobs: int | None = None, *, cpus: int | None = None,
                 gpus: int | None = None, cancel_grace_s: float = CANCEL_GRACE_S):
        gpu_ids = visible_gpu_ids(detect_gpus() if gpus is None else gpus)
        self.capacity = jobs if jobs is not None else max(1, len(gpu_ids))
        self.share = MachineShare(self.capacity, cpus or available_cpus(), gpu_ids)
        self.cancel_grace_s = cancel_grace_s
        self._children: dict[int, subprocess.Popen] = {}

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    def submit(self, job: CommandJob) -> dict:
        self._reap()
        _remove_stale(job.exit_path)
        env, slot = self.share.reserve(job)
        os.makedirs(os.path.dirname(os.path.abspath(job.log_path)), exist_ok=True)
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
        return {"kind": "local", "key": job.key, "pid": proc.pid, "pgid": proc.pid,
                "start_time": start_time, "exit_path": os.path.abspath(job.exit_path),
                "log_path": os.path.abspath(job.log_path), "host": socket.gethostname(),
                "slot": slot, "shared_env": {k: env[k] for k in sorted(env) if k not in job.env}}

    def status(self, handle: dict) -> JobStatus:
        if handle.get("kind") != "local":
            return _executor_for_handle(handle).status(handle)
        self._reap()
        finished = read_exit_status(handle["exit_path"])
        if finished is not None:
            return finished
        if process_alive(handle["pid"], handle.get("start_time")):
            self.share.note_running(handle, handle["pid"])
            return JobStatus("running")
        # the wrapper may have written the file and ended since we looked
        return read_exit_status(handle["exit_path"]) or JobStatus("lost")

    def cancel(self, handle: dict) -> None:
        if handle.get("kind") != "local":
            return _executor_for_handle(handle).cancel(handle)
        pid, pgid, start_time = handle["pid"], handle["pgid"], handle.get("start_time")
        proc = self._children.get(pid)
        if proc is not None:
            ended = lambda: _child_ended(proc)  # noqa: E731
        else:
            ended = lambda: not process_alive(pid, start_time)  # noqa: E731
        if ended():
            self._reap()
            return
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.cancel_grace_s
        while not ended() and time.monotonic() < deadline:
            time.sleep(0.05)
        # Whatever still runs in the group gets SIGKILL. Only while the group id is still ours:
        # the wrapper is alive, or is our unreaped child (its zombie keeps the id reserved).
        if proc is not None or not ended():
            _signal_group(pgid, signal.SIGKILL)
        if proc is not None:
            proc.wait()
            self._children.pop(pid, None)
        else:
            deadline = time.monotonic() + 5
            while not ended() and time.monotonic() < deadline:
                time.sleep(0.02)
        self.share.release(handle.get("slot"), pid)

    def describe(self) -> str:
        return f"local: {self.share.describe()}"


# ---------------------------------------------------------------------------------------------
# submitit (slurm, submitit-local)

def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)


def _whole(minimum: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


# option -> (check, what it must be, submitit's SlurmExecutor parameter)
SLURM_OPTIONS: dict[str, tuple[Any, str, str]] = {
    "partition": (_text, "a partition name", "partition"),
    "time_min": (_positive_number, "the wall-time limit of one job in minutes, e.g. 1440",
                 "time"),
    "gpus_per_node": (_whole(0), "a whole number >= 0", "gpus_per_node"),
    "cpus_per_task": (_whole(1), "a whole number >= 1", "cpus_per_task"),
    "mem_gb": (_positive_number, "a positive number of GB", "mem"),
    "array_parallelism": (_whole(1), "a whole number >= 1 (array jobs running at once)",
                          "array_parallelism"),
    "account": (_text, "an account name", "account"),
    "qos": (_text, "a quality-of-service name", "qos"),
    "constraint": (_text, "a node feature constraint", "constraint"),
    "exclude": (_text, "a node list", "exclude"),
    "setup": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
              "a list of shell lines run before the job (e.g. module load ...)", "setup"),
    "additional_parameters": (lambda v: isinstance(v, Mapping),
                              "a mapping of further sbatch options, e.g. {mail-type: END}",
                              "additional_parameters"),
}

# SLURM job states (sacct) in which the job may still run; UNKNOWN is submitit's answer before
# sacct lists a new job.
SLURM_ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
    "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD",
    "UNKNOWN", "READY"})


def slurm_state_is_active(state: str) -> bool:
    """Whether a job in this sacct state may still run ("CANCELLED by 12" is not)."""
    words = (state or "UNKNOWN").split()
    return (words[0].upper() if words else "UNKNOWN") in SLURM_ACTIVE_STATES


def check_slurm_options(options: Mapping[str, Any] | None, *, require_time: bool) -> dict:
    """The options validated; every mistake reported at once as a UserError."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise UserError(f"slurm: expected a mapping of options ({', '.join(SLURM_OPTIONS)}), "
                        f"got {options!r}")
    problems = []
    for key, value in options.items():
        if key not in SLURM_OPTIONS:
            problems.append(f"slurm.{key}: unknown option; the options are "
                            f"{', '.join(sorted(SLURM_OPTIONS))}")
            continue
        check, what, _ = SLURM_OPTIONS[key]
        if not check(value):
            problems.append(f"slurm.{key}: must be {what}, got {value!r}")
    if require_time and "time_min" not in options:
        problems.append("slurm.time_min: required for executor slurm: the wall-time limit of one "
                        "job in minutes (e.g. time_min: 1440 for a day); submitit would ask "
                        "SLURM for 5 minutes")
    if problems:
        raise UserError("\n".join(problems))
    return dict(options)


def _slurm_parameters(options: Mapping[str, Any]) -> dict:
    params = {}
    for key, value in options.items():
        name = SLURM_OPTIONS[key][2]
        if key == "mem_gb":
            value = f"{int(value)}GB" if value == int(value) else f"{int(value * 1024)}MB"
        elif key == "time_min":
            value = int(math.ceil(value))
        elif key == "setup":
            value = list(value)
        elif key == "additional_parameters":
            value = dict(value)
        params[name] = value
    return params


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
    full_env.update(env)
    exit_path, log_path = wrapper_argv[2], wrapper_argv[3]
    started: list[subprocess.Popen] = []
    pending: list[int] = []

    def pass_on(signum, _frame) -> None:
        if started:
            _signal_group(started[0].pid, signum)
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
        _signal_group(proc.pid, signum)
    return run_job.exit_code_of(proc.wait())


class SubmititExecutor(Executor):
    """Jobs through submitit: on SLURM ("slurm") or submitit's LocalExecutor ("submitit-local")."""

    def __init__(self, cluster: Literal["slurm", "local"], folder: str, jobs: int | None = None,
                 options: Mapping[str, Any] | None = None, *, cpus: int | None = None,
                 gpus: int | None = None, cancel_grace_s: float = CANCEL_GRACE_S):
        import submitit

        self.cluster = cluster
        self.folder = os.path.abspath(folder)
        self.options = check_slurm_options(options, require_time=cluster == "slurm")
        self.cancel_grace_s = cancel_grace_s
        self._jobs: dict[str, Any] = {}   # job id -> submitit Job made by this process
        os.makedirs(self.folder, exist_ok=True)
        if cluster == "slurm":
            self.name = "slurm"
            self.capacity = jobs if jobs is not None else DEFAULT_SLURM_IN_FLIGHT
            self.share = None
            self._executor = submitit.SlurmExecutor(folder=self.folder)
            self._executor.update_parameters(**_slurm_parameters(self.options))
        else:
            self.name = "submitit-local"
            gpu_ids = visible_gpu_ids(detect_gpus() if gpus is None else gpus)
            self.capacity = jobs if jobs is not None else max(1, len(gpu_ids))
            self.share = MachineShare(self.capacity, cpus or available_cpus(), gpu_ids)
            self._executor = submitit.LocalExecutor(folder=self.folder)
            self._executor.update_parameters(
                timeout_min=self.options.get("time_min", DEFAULT_SUBMITIT_LOCAL_TIME_MIN))

    @classmethod
    def follower(cls, cluster: str, folder: str) -> "SubmititExecutor":
        """One that only follows (status, cancel) jobs submitted earlier to `folder`: it needs
        no SLURM options and submits nothing."""
        self = cls.__new__(cls)
        self.cluster, self.folder, self.options, self.share = cluster, folder, {}, None
        self.name = "slurm" if cluster == "slurm" else "submitit-local"
        self.capacity, self.cancel_grace_s, self._jobs, self._executor = 0, CANCEL_GRACE_S, {}, None
        return self

    # -- submission

    def _arguments(self, job: CommandJob) -> tuple[tuple, int | None]:
        _remove_stale(job.exit_path)
        os.makedirs(os.path.dirname(os.path.abspath(job.log_path)), exist_ok=True)
        if self.share is not None:
            env, slot = self.share.reserve(job)
        else:
            env, slot = dict(job.env), None
        return (job.wrapper_argv(), env, job.cwd, job.uses_accelerator, self.cluster == "slurm"), slot

    def _handle(self, job: CommandJob, submitted: Any, slot: int | None) -> dict:
        job_id = str(submitted.job_id)
        self._jobs[job_id] = submitted
        handle = {"kind": "submitit", "cluster": self.cluster, "key": job.key, "job_id": job_id,
                  "folder": self.folder, "exit_path": os.path.abspath(job.exit_path),
                  "log_path": os.path.abspath(job.log_path), "slot": slot}
        if self.cluster == "local":  # the job id is the pid of submitit's controller
            handle["start_time"] = process_start_time(int(job_id))
            if self.share is not None:
                self.share.occupy(slot, int(job_id), handle["start_time"], job.exit_path)
        return handle

    def submit(self, job: CommandJob) -> dict:
        self._reap()
        arguments, slot = self._arguments(job)
        if self.cluster == "slurm":
            self._executor.update_parameters(job_name=job.key)
        try:
            submitted = self._executor.submit(run_submitted_job, *arguments)
        except BaseException:
            if self.share is not None:
                self.share.release(slot)
            raise
        return self._handle(job, submitted, slot)

    def submit_many(self, jobs: Sequence[CommandJob]) -> list[dict]:
        if len(jobs) <= 1:
            return [self.submit(job) for job in jobs]
        self._reap()
        if self.cluster == "slurm":
            self._executor.update_parameters(job_name="nnunet-transfer")
        prepared, submitted = [], []
        with self._executor.batch():
            for job in jobs:
                arguments, slot = self._arguments(job)
                prepared.append((job, slot))
                submitted.append(self._executor.submit(run_submitted_job, *arguments))
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

    def _active(self, handle: dict) -> bool:
        if handle.get("cluster") == "slurm":
            return slurm_state_is_active(self._slurm_job(handle).state)
        self._reap()
        return process_alive(int(handle["job_id"]), handle.get("start_time"))

    def status(self, handle: dict) -> JobStatus:
        if handle.get("kind") != "submitit":
            return _executor_for_handle(handle).status(handle)
        finished = read_exit_status(handle["exit_path"])
        if finished is not None:
            self._reap()
            return finished
        if self._active(handle):
            if self.share is not None and handle.get("cluster") == "local":
                self.share.note_running(handle, int(handle["job_id"]))
            return JobStatus("running")
        return read_exit_status(handle["exit_path"]) or JobStatus("lost")

    def cancel(self, handle: dict) -> None:
        if handle.get("kind") != "submitit":
            return _executor_for_handle(handle).cancel(handle)
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
                                if k not in ("setup", "additional_parameters"))
            return (f"slurm: up to {self.capacity} jobs in flight ({options}), "
                    f"submitit folder {self.folder}")
        return f"submitit-local: {self.share.describe()}, submitit folder {self.folder}"


def _executor_for_handle(handle: dict) -> Executor:
    """An executor that can follow a handle of another kind (the study switched executors
    while jobs of the old one were still running)."""
    kind = handle.get("kind")
    if kind == "local":
        return LocalExecutor(1, cpus=1, gpus=0)
    if kind == "submitit":
        key = (handle.get("cluster", "slurm"), handle["folder"])
        if key not in _FOLLOWERS:
            _FOLLOWERS[key] = SubmititExecutor.follower(*key)
        return _FOLLOWERS[key]
    raise ValueError(f"not an executor handle: {handle!r}")


_FOLLOWERS: dict[tuple[str, str], "SubmititExecutor"] = {}


# ---------------------------------------------------------------------------------------------
# Construction


def make_executor(kind: str, *, jobs: int | None = None, folder: str,
                  slurm: Mapping[str, Any] | None = None, cpus: int | None = None,
                  gpus: int | None = None) -> Executor:
    """The executor `kind` ("local", "slurm", "submitit-local"), see the module doc.

    jobs: jobs at once; default: the number of visible GPUs or 1 on this machine, 64 in flight
    on SLURM. folder: where executor bookkeeping goes (submitit's folders). slurm: options of
    the SLURM jobs (`SLURM_OPTIONS`), validated for every kind. cpus / gpus: the cores and GPUs
    of this machine to share (default: this process's CPU affinity, torch.cuda.device_count()).
    """
    if kind not in KINDS:
        raise UserError(f"executor: unknown kind {kind!r}; use one of {', '.join(KINDS)} "
                        f"(local runs the jobs on this machine, slurm submits them to SLURM)")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UserError(f"jobs: must be a whole number >= 1 (how many jobs run at once), got "
                        f"{jobs!r}; e.g. jobs: 2")
    for name, value in (("cpus", cpus), ("gpus", gpus)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < (1 if name == "cpus" else 0)):
            raise UserError(f"{name}: must be a whole number >= {1 if name == 'cpus' else 0}, "
                            f"got {value!r}")
    options = check_slurm_options(slurm, require_time=kind == "slurm")
    if kind == "local":
        return LocalExecutor(jobs, cpus=cpus, gpus=gpus)
    if kind == "slurm":
        missing = [tool for tool in ("sbatch", "srun", "sacct") if shutil.which(tool) is None]
        if missing:
            raise UserError(
                f"executor: slurm needs SLURM's {', '.join(missing)} on the PATH, and "
                f"{' / '.join(missing)} {'was' if len(missing) == 1 else 'were'} not found on "
                f"this machine; run the study on the cluster's login node, or use "
                f"`executor: local` (or `submitit-local`) to run it here")
        return SubmititExecutor("slurm", folder, jobs, options)
    return SubmititExecutor("local", folder, jobs, options, cpus=cpus, gpus=gpus)
