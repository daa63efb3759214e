"""Run one command of a study and record how it ended, whatever happens to the runner.

    python nnunet_transfer/study/executors/run_job.py EXIT_PATH LOG_PATH -- COMMAND [ARG...]

The command's stdout and stderr are appended to LOG_PATH (its folder is created), between a
start and an end line written by this wrapper. When the command ends, its exit code is written
to EXIT_PATH atomically (a temporary file and a rename), so a reader sees either nothing or the
whole number: 0..255 for a normal exit, 128 + N when the command was killed by signal N (as a
shell reports it), 127 when the command does not exist, 126 when it cannot be executed. The
wrapper exits with the same code.

Signals: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to the wrapper are noted in
the log and otherwise ignored: the wrapper keeps waiting for the command and records its end.
They are not forwarded, because every sender we know of signals the whole process group (the
local executor's cancel, Ctrl-C in a terminal) or the whole job (SLURM), so the command gets
them directly, once. The signals named in $NNUNET_TRANSFER_IGNORED_SIGNALS (comma-separated)
are ignored by the command itself: SIGUSR2, which submitit asks SLURM to send 90 s before the
time limit and which would end any command early as an ordinary exit. Only SIGKILL (or a crash) ends the wrapper early: then no exit file is
written, and the command, which runs with "parent death signal" SIGKILL, dies with it, so "no
exit file and no wrapper" means "not running" (the executors report it as lost). Processes the
command started itself do not die with the wrapper: they carry the job's mark in their
environment ($NNUNET_TRANSFER_JOB = the exit path), by which a cancel finds and stops them
(`job_processes`).

Standard library only and run by its file path, so that it starts quickly and works whatever
the job's working folder and Python path are.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

USAGE = "usage: run_job.py EXIT_PATH LOG_PATH -- COMMAND [ARG...]"
SURVIVED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
PR_SET_PDEATHSIG = 1


def write_exit_code(path: str, code: int) -> None:
    """`path` holds `code` and a newline, written through a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{code}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def parent_death_signal(expected_parent: int | None = None):
    """A function that makes the process calling it receive SIGKILL when its parent dies (Linux;
    None elsewhere). For `preexec_fn` (then the parent is this process), or called directly
    with the parent's pid."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid() if expected_parent is None else expected_parent

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(128 + signal.SIGKILL)

    return die_with_parent


IGNORED_SIGNALS = "NNUNET_TRANSFER_IGNORED_SIGNALS"
# Set to the exit path in the command's environment: every process of the job inherits it, so
# that a cancel finds them all, wherever they are (`job_processes`).
JOB_MARK = "NNUNET_TRANSFER_JOB"


def _child_setup():
    """The command's preexec: die with the wrapper, ignore the signals named in IGNORED_SIGNALS
    (an ignored signal stays ignored across exec)."""
    die = parent_death_signal()
    ignored = [getattr(signal, name) for name in os.environ.get(IGNORED_SIGNALS, "").split(",")
               if name.strip() in SURVIVED_SIGNALS]

    def setup() -> None:
        for signum in ignored:
            signal.signal(signum, signal.SIG_IGN)
        if die is not None:
            die()

    return setup


def exit_code_of(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def run(exit_path: str, log_path: str, command: list[str]) -> int:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        log = open(log_path, "ab", buffering=0)
    except OSError as error:
        print(f"run_job: cannot open the log {log_path}: {error}", file=sys.stderr, flush=True)
        write_exit_code(exit_path, 126)
        return 126

    def note(text: str) -> None:
        log.write(f"[run_job {_now()}] {text}\n".encode())

    received: list[str] = []

    def survive(signum, _frame) -> None:
        received.append(signal.Signals(signum).name)

    for name in SURVIVED_SIGNALS:
        signal.signal(getattr(signal, name), survive)

    note(f"start (wrapper pid {os.getpid()}): {shlex.join(command)}")
    start = time.monotonic()
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, preexec_fn=_child_setup(),
                                 env={**os.environ, JOB_MARK: os.path.abspath(exit_path)})
    except FileNotFoundError as error:
        note(f"cannot start the command: {error}")
        code = 127
    except (PermissionError, OSError) as error:
        note(f"cannot start the command: {error}")
        code = 126
    else:
        returncode = child.wait()  # retried after each survived signal (PEP 475)
        code = exit_code_of(returncode)
        if returncode < 0:
            note(f"the command was killed by {signal.Signals(-returncode).name}")
    if received:
        note(f"the wrapper received {', '.join(received)} and kept waiting for the command")
    note(f"end: exit code {code} after {time.monotonic() - start:.1f} s")
    write_exit_code(exit_path, code)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 4 or argv[2] != "--":
        print(USAGE, file=sys.stderr)
        return 2
    return run(argv[0], argv[1], argv[3:])


if __name__ == "__main__":
    sys.exit(main())
