"""SLURM's side of the "slurm" executor: the options a study may give its SLURM jobs
(`SLURM_OPTIONS`, checked by `check_slurm_options`), their translation into the parameters of
submitit's SlurmExecutor, and what the job states of sacct mean.

Options apply to every job; `by_kind` overrides them for one kind of job (the first word of a
job's key: pretrain, rank, train, predict, analyze_...), e.g. GPUs and a longer time limit for the
trainings only. `array_size` is not SLURM's: it caps how many jobs go into one job array
(the runner submits every ready job of a wave at once).
"""

from __future__ import annotations

import math
import subprocess
from typing import Any, Mapping

from nnunet_transfer.errors import UserError
from nnunet_transfer.value_rules import NON_EMPTY_TEXT, NON_NEGATIVE_WHOLE_NUMBER, NotAllowed, \
    POSITIVE_NUMBER, POSITIVE_WHOLE_NUMBER, ValueRule


_SHELL_LINES = ValueRule(
    "a list of shell lines run before the job (e.g. module load ...)",
    lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v))
_SBATCH_OPTIONS = ValueRule("a mapping of further sbatch options, e.g. {mail-type: END}",
                            lambda v: isinstance(v, Mapping))

# option -> (its rule, submitit's SlurmExecutor parameter)
SLURM_OPTIONS: dict[str, tuple[ValueRule, str]] = {
    "partition": (NON_EMPTY_TEXT.explained("a partition name"), "partition"),
    "time_min": (POSITIVE_NUMBER.explained("the wall-time limit of one job in minutes, e.g. "
                                           "1440"), "time"),
    "gpus_per_node": (NON_NEGATIVE_WHOLE_NUMBER, "gpus_per_node"),
    "cpus_per_task": (POSITIVE_WHOLE_NUMBER, "cpus_per_task"),
    "mem_gb": (POSITIVE_NUMBER.explained("GB"), "mem"),
    "array_parallelism": (POSITIVE_WHOLE_NUMBER.explained("array jobs running at once"),
                          "array_parallelism"),
    "account": (NON_EMPTY_TEXT.explained("an account name"), "account"),
    "qos": (NON_EMPTY_TEXT.explained("a quality-of-service name"), "qos"),
    "constraint": (NON_EMPTY_TEXT.explained("a node feature constraint"), "constraint"),
    "exclude": (NON_EMPTY_TEXT.explained("a node list"), "exclude"),
    "setup": (_SHELL_LINES, "setup"),
    "additional_parameters": (_SBATCH_OPTIONS, "additional_parameters"),
}
DEFAULT_ARRAY_SIZE = 256
# Options of the executor itself, not of one SLURM job: checked here, never given to submitit.
EXECUTOR_OPTIONS: dict[str, tuple[ValueRule]] = {
    "array_size": (POSITIVE_WHOLE_NUMBER.explained(
        f"jobs per job array; default {DEFAULT_ARRAY_SIZE}"),),
    "by_kind": (ValueRule("a mapping kind -> options of that kind's jobs, e.g. "
                          "{train: {gpus_per_node: 1}}",
                          lambda v: isinstance(v, Mapping)
                          and all(isinstance(o, Mapping) for o in v.values())),),
}

# SLURM job states (sacct) in which the job may still run; UNKNOWN is submitit's answer before
# sacct lists a new job.
SLURM_ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
    "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD",
    "UNKNOWN", "READY"})
# Ended by SLURM or by someone else, not by the command: the job is run again (continuing from
# its checkpoint). PREEMPTED is the cluster's decision and does not count as a failed attempt.
SLURM_INTERRUPTED_STATES = frozenset({
    "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"})
NOT_AN_ATTEMPT = frozenset({"PREEMPTED"})


def slurm_state_word(state: str | None) -> str:
    """The state's first word, upper case ("CANCELLED by 0" -> "CANCELLED")."""
    words = (state or "UNKNOWN").split()
    return words[0].upper() if words else "UNKNOWN"


def slurm_state_is_active(state: str) -> bool:
    """Whether a job in this sacct state may still run ("CANCELLED by 12" is not)."""
    return slurm_state_word(state) in SLURM_ACTIVE_STATES


def sacct_state(job_id: str) -> str | None:
    """sacct's state of one job or array task ("12" or "12_3"), None where sacct does not
    answer. A pending task is listed within its array's pending rest ("12_[3-5%2]")."""
    try:
        result = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job_id],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [line.split("|", 1) for line in result.stdout.splitlines() if "|" in line]
    for listed, state in rows:
        if listed == job_id:
            return state
    for listed, state in rows:
        if _in_array_range(listed, job_id):
            return state
    return None


def squeue_states() -> dict[str, str] | None:
    """slurmctld's state of each job of this user that it lists, one entry per array task
    ({"12": "RUNNING", "13_0": "PENDING", ...}); None where squeue does not answer.

    squeue lists every job that may still run (pending, running, completing, requeued), and no
    other: it is the authority on whether a job is active. sacct is not: it keeps an array's
    pending rest ("13_[0-2]") for a while after a pending task of it was cancelled, and forgets
    that task altogether, so a job judged by sacct alone can look pending for ever."""
    try:
        result = subprocess.run(["squeue", "-h", "-r", "--me", "-o", "%i|%T"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return dict(line.split("|", 1) for line in result.stdout.splitlines() if "|" in line)


def _in_array_range(listed: str, job_id: str) -> bool:
    """Whether "12_[1,3-5%2]" (sacct's pending tasks of array 12) holds the task `job_id`."""
    array, _, ranges = listed.partition("_[")
    index = job_id[len(array) + 1:] if job_id.startswith(array + "_") else ""
    if not ranges or not index.isdigit():
        return False
    for part in ranges.rstrip("]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and int(low) <= int(index) <= int(high if high.isdigit() else low):
            return True
    return False


def check_slurm_options(options: Mapping[str, Any] | None, *, require_time: bool) -> dict:
    """The options validated; every mistake reported at once as a UserError."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise UserError(f"slurm: expected a mapping of options ({', '.join(SLURM_OPTIONS)}), "
                        f"got {options!r}")
    problems = _option_problems(options, "slurm", {**SLURM_OPTIONS, **EXECUTOR_OPTIONS})
    if not problems:
        for kind, overrides in options.get("by_kind", {}).items():
            problems += _option_problems(overrides, f"slurm.by_kind.{kind}", SLURM_OPTIONS)
    if require_time and "time_min" not in options:
        problems.append("slurm.time_min: required for executor slurm: the wall-time limit of one "
                        "job in minutes (e.g. time_min: 1440 for a day); submitit would ask "
                        "SLURM for 5 minutes")
    if problems:
        raise UserError("\n".join(problems))
    return dict(options)


def _option_problems(options: Mapping[str, Any], where: str, known: Mapping) -> list[str]:
    problems = []
    for key, value in options.items():
        if key not in known:
            problems.append(f"{where}.{key}: unknown option; the options are "
                            f"{', '.join(sorted(known))}")
            continue
        try:
            known[key][0].check(value)
        except NotAllowed as refusal:
            problems.append(f"{where}.{key}: {refusal}")
    return problems


def job_kind(key: str) -> str:
    """The kind of a job, from its key ("train__FineTune__n5..." -> "train")."""
    return key.split("__", 1)[0]


def options_of_kind(options: Mapping[str, Any], kind: str) -> dict:
    """The SLURM options of the jobs of `kind`: the common ones, overridden by `by_kind`."""
    common = {k: v for k, v in options.items() if k in SLURM_OPTIONS}
    return {**common, **options.get("by_kind", {}).get(kind, {})}


def slurm_parameters(options: Mapping[str, Any]) -> dict:
    """Checked options (of one kind of job) as the parameters of submitit's SlurmExecutor."""
    params = {}
    for key, value in options.items():
        if key not in SLURM_OPTIONS:
            continue
        name = SLURM_OPTIONS[key][1]
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
