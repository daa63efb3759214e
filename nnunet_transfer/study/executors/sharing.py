"""Sharing one machine between the jobs of an executor: CPU threads, GPU slots and nnU-Net's
augmentation workers per job.

On this machine ("local" and "submitit-local"), with C cores (the CPUs this process may run on)
and N = `jobs`:

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

On SLURM the same rules are applied on the compute node (`node_sharing_env`), with C = the CPUs
the job was given (its CPU affinity, i.e. `cpus_per_task`) and N = 1; CUDA_VISIBLE_DEVICES is
SLURM's.

Variables the runner's environment already has are replaced by these values; variables set in
`CommandJob.env` win over both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from nnunet_transfer.study.executors.base import CommandJob, process_alive
from nnunet_transfer.training.budget import KNOB_OF_FIELD

THREAD_VARIABLES = (KNOB_OF_FIELD["cpu_threads"].variable, "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS")
MAX_DATA_AUGMENTATION_PROCESSES = 12  # nnU-Net's own default (get_allowed_n_proc_DA)


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
    GPUs SLURM gave it (CUDA_VISIBLE_DEVICES is left as SLURM set it). The CPUs are what SLURM
    gave the task (SLURM_CPUS_PER_TASK) where that is fewer than the affinity: a cluster
    without CPU binding (TaskPlugin=task/none) leaves every job the whole node's affinity."""
    cores = available_cpus()
    given = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if given.isdigit() and int(given) > 0:
        cores = min(cores, int(given))
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
