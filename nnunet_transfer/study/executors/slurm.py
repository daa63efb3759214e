"""SLURM's side of the "slurm" executor: the options a study may give its SLURM jobs
(`SLURM_OPTIONS`, checked by `check_slurm_options`), their translation into the parameters of
submitit's SlurmExecutor, and which job states of sacct mean the job may still run.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from nnunet_transfer.errors import UserError


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


def slurm_parameters(options: Mapping[str, Any]) -> dict:
    """Checked options as the parameters of submitit's SlurmExecutor."""
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
