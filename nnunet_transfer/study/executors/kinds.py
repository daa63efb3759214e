"""The executor kinds a study names, and `make_executor`, which makes one: "local" runs the
jobs as processes of this machine (`local`), "slurm" submits them to SLURM (`submitit_slurm`)
and "submitit-local" runs them through submitit on this machine (`submitit_local`). Importing
it makes every kind known, so that an executor of one kind can follow the handles of the
others.
"""

from __future__ import annotations

import shutil
from typing import Any, Mapping

from nnunet_transfer.errors import UserError
from nnunet_transfer.study.executors.base import Executor
from nnunet_transfer.study.executors.local import LocalExecutor
from nnunet_transfer.study.executors.sharing import detect_gpus, visible_gpu_ids
from nnunet_transfer.study.executors.slurm import check_slurm_options
from nnunet_transfer.study.executors.submitit_local import SubmititLocalExecutor
from nnunet_transfer.study.executors.submitit_slurm import (
    DEFAULT_SLURM_IN_FLIGHT, SubmititSlurmExecutor)
from nnunet_transfer.study.spec import EXECUTOR_KINDS
from nnunet_transfer.value_rules import NON_NEGATIVE_WHOLE_NUMBER, NotAllowed, \
    POSITIVE_WHOLE_NUMBER, choice

_KIND = choice(EXECUTOR_KINDS, hint="local runs the jobs on this machine, slurm submits them "
                                    "to SLURM")
_JOBS = POSITIVE_WHOLE_NUMBER.explained("how many jobs run at once, e.g. jobs: 2")
_CPUS = POSITIVE_WHOLE_NUMBER


def jobs_in_flight(kind: str, jobs: int | None) -> int:
    """How many jobs an executor of `kind` keeps in flight: `jobs` when given, else its default
    (64 on SLURM, the visible GPUs or 1 on this machine)."""
    if jobs is not None:
        return jobs
    if kind == "slurm":
        return DEFAULT_SLURM_IN_FLIGHT
    return max(1, len(visible_gpu_ids(detect_gpus())))


def make_executor(kind: str, *, jobs: int | None = None, folder: str,
                  slurm: Mapping[str, Any] | None = None, cpus: int | None = None,
                  gpus: int | None = None) -> Executor:
    """The executor `kind` ("local", "slurm", "submitit-local"), see the package doc.

    jobs: jobs at once; default: the number of visible GPUs or 1 on this machine, 64 in flight
    on SLURM. folder: where executor bookkeeping goes (submitit's folders). slurm: options of
    the SLURM jobs (`SLURM_OPTIONS`), validated for every kind. cpus / gpus: the cores and GPUs
    of this machine to share (default: this process's CPU affinity, torch.cuda.device_count()).
    """
    checks = ((kind, _KIND, "executor"), (jobs, _JOBS, "jobs"), (cpus, _CPUS, "cpus"),
              (gpus, NON_NEGATIVE_WHOLE_NUMBER, "gpus"))
    for value, rule, name in checks:
        if value is not None:
            try:
                rule.check(value)
            except NotAllowed as refusal:
                raise UserError(f"{name}: {refusal}") from None
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
        return SubmititSlurmExecutor(folder, jobs, options)
    return SubmititLocalExecutor(folder, jobs, options, cpus=cpus, gpus=gpus)
