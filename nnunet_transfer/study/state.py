"""What the study runner knows about each job, kept in study/state.json.

One record per job key: its state, the executor's handle while it runs (so that a runner
started after a crash finds the process or the cluster job again), how many attempts it took,
when it started and ended, and the log of its last attempt. Written atomically after every
change, so a killed runner leaves the last consistent state behind. `interrupted` counts the
attempts of this `study run` that ended without finishing (lost, or ended by SLURM), which the
runner caps at the study's `executor.attempts`.

States: pending (to do), running, succeeded, failed (the command failed or its outputs are
incomplete; the log says why), blocked (a job it needs failed), skipped (nothing to do, e.g. an
analysis with too few finished runs; `note` says why).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from nnunet_transfer.atomic_files import atomic_write_json
from nnunet_transfer.errors import UserError

PENDING, RUNNING, SUCCEEDED, FAILED, BLOCKED, SKIPPED = (
    "pending", "running", "succeeded", "failed", "blocked", "skipped")
TERMINAL = (SUCCEEDED, FAILED, BLOCKED, SKIPPED)


class StudyState:
    def __init__(self, path: str):
        self.path = path
        self.jobs: dict[str, dict] = {}
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    self.jobs = json.load(f).get("jobs", {})
            except (OSError, json.JSONDecodeError) as error:
                raise UserError(f"the study state {path} cannot be read ({error}); it is written "
                                "atomically, so this is not a crash of the runner: restore it "
                                "or delete it to start the bookkeeping afresh (finished runs "
                                "are found again from their files)") from None

    def get(self, key: str) -> dict:
        return self.jobs.setdefault(key, {"state": PENDING, "attempts": 0})

    def state(self, key: str) -> str:
        return self.jobs.get(key, {}).get("state", PENDING)

    def update(self, key: str, **fields) -> None:
        self.get(key).update(fields)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, {"updated": time.time(), "jobs": self.jobs})


@contextmanager
def exclusive_run(lock_path: str) -> Iterator[None]:
    """Only one runner per study at a time: two would submit the same runs twice."""
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise UserError(f"the study is already being run by {owner} (lock {lock_path}); wait "
                            "for it or stop it, then run again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
