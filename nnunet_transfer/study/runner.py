"""`study run`: set up, then keep the executor busy with every job whose inputs are ready, until
nothing is left; then write the report.

Resuming: the state file holds the executor's handle of every running job. A runner started
after a crash asks the executor about each one: still running (a local process that outlived
the runner, a cluster job) is waited for, finished is taken as it ended, lost (killed with the
runner) is submitted again, and a training that had started continues from its latest
checkpoint (nnUNetv2_train --c). A job whose outputs are complete is never run again. Failed
and blocked jobs of an earlier run are tried again once per `study run`.

Waves: every ready job (up to the executor's capacity) is submitted at once, `submit_many`,
which on SLURM makes job arrays. A job that ended without finishing (lost: cancelled, killed,
its time limit, a node failure) is submitted again, up to `executor.attempts` such attempts per
`study run` (preemptions do not count); then it stays failed with its log. A command that fails
by itself is not retried within a run: it would fail the same way.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from nnunet_transfer.devices import resolve_device
from nnunet_transfer.errors import UserError
from nnunet_transfer.study.executors.base import follower_for
from nnunet_transfer.study.executors.job_processes import JobSurvivedCancel
from nnunet_transfer.study.executors.kinds import jobs_in_flight, make_executor
from nnunet_transfer.study.executors.slurm import NOT_AN_ATTEMPT, job_kind
from nnunet_transfer.study.grid import StudyLayout
from nnunet_transfer.study.jobs import StudyJob, StudyJobs
from nnunet_transfer.study.model_sources import hold_model_files
from nnunet_transfer.study.progress import StudyProgress, estimate_time_left
from nnunet_transfer.study.setup import StudySetup
from nnunet_transfer.study.spec import StudySpec
from nnunet_transfer.study.state import (
    BLOCKED, FAILED, PENDING, RUNNING, SKIPPED, SUCCEEDED, TERMINAL, StudyState, exclusive_run)


def study_device(spec: StudySpec) -> str:
    return resolve_device(spec.device, f"{spec.path}: device: cuda, but torch sees no GPU here; "
                                       "use device: auto or cpu, or run on a machine with a GPU")


def study_executor(spec: StudySpec):
    layout = StudyLayout(spec)
    return make_executor(spec.executor.kind, jobs=spec.executor.jobs,
                         folder=layout.path("executor"), slurm=spec.executor.slurm)


class StudyRunner:
    def __init__(self, spec: StudySpec, say: Callable[[str], None] = print,
                 poll_seconds: float = 2.0):
        self.spec, self.say, self.poll_seconds = spec, say, poll_seconds
        self.layout = StudyLayout(spec)
        self._stop = False

    def run(self) -> str:
        device = study_device(self.spec)   # before minutes of setup
        with exclusive_run(self.layout.path("run.lock")):
            # before anything runs: a model file changed since the study started is refused
            hold_model_files(self.spec.models, self.layout.models_record)
            setup = StudySetup(self.spec)
            setup.run(self.say)
            state = StudyState(self.layout.state_file)
            jobs = StudyJobs(self.spec, setup, state, device).all()
            executor = study_executor(self.spec)
            self.say(f"{len(jobs)} jobs; executor: {executor.describe()}")
            self._schedule(jobs, state, executor)
            from nnunet_transfer.study.results import write_study_report
            report = write_study_report(self.spec, state, setup.pool_size())
        return report

    # -- the loop ---------------------------------------------------------------------------
    def _schedule(self, jobs: list[StudyJob], state: StudyState, executor) -> None:
        by_key = {job.key: job for job in jobs}
        for job in jobs:   # this invocation tries failed and blocked jobs again, once
            if state.state(job.key) in (FAILED, BLOCKED, SKIPPED):
                state.update(job.key, state=PENDING, note=None, interrupted=0)
        previous_handlers = self._catch_interrupts()
        progress = StudyProgress([job.key for job in jobs], state, executor.capacity)
        try:
            while not self._stop:
                self._poll_running(jobs, state, executor)
                self._settle_pending(jobs, by_key, state)
                if not self._stop:
                    self._submit_wave(jobs, by_key, state, executor)
                progress.update()
                if all(state.state(j.key) in TERMINAL for j in jobs):
                    break
                time.sleep(self.poll_seconds)
        finally:
            progress.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        if self._stop:
            self._cancel_local(jobs, state, executor)
            raise UserError("interrupted; run the same command again to continue where it "
                            "stopped (finished runs are kept)")
        counts = {s: sum(state.state(j.key) == s for j in jobs) for s in TERMINAL}
        self.say("jobs: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))

    def _catch_interrupts(self) -> dict:
        def stop(signum, frame):
            self._stop = True
        return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _cancel_local(self, jobs: list[StudyJob], state: StudyState, executor) -> None:
        """Ctrl-C stops this machine's jobs (they continue from their checkpoints next time);
        cluster jobs go on and are found again by the next run."""
        for job in jobs:
            record = state.get(job.key)
            if record["state"] == RUNNING and record.get("handle", {}).get("kind") == "local":
                try:
                    executor.cancel(record["handle"])
                except JobSurvivedCancel as error:   # the others are still cancelled
                    self.say(str(error))
                state.update(job.key, state=PENDING, handle=None, note="interrupted")

    def _ready(self, job: StudyJob, by_key: dict, state: StudyState) -> bool:
        return all(state.state(k) == SUCCEEDED for k in job.needs) and \
            all(state.state(k) in TERMINAL for k in job.waits_for if k in by_key)

    def _settle_pending(self, jobs: list[StudyJob], by_key: dict, state: StudyState) -> None:
        for job in jobs:
            if state.state(job.key) != PENDING:
                continue
            broken = [k for k in job.needs if state.state(k) in (FAILED, BLOCKED, SKIPPED)]
            if broken:
                state.update(job.key, state=BLOCKED, note=f"{broken[0]} did not succeed")
            elif self._ready(job, by_key, state) and job.missing() is None:
                # outputs complete from an earlier run whose bookkeeping was lost: keep them
                state.update(job.key, state=SUCCEEDED, note="outputs found complete")

    def _submit_wave(self, jobs: list[StudyJob], by_key: dict, state: StudyState,
                     executor) -> None:
        """Every ready job, up to the capacity left, submitted at once (job arrays on SLURM)."""
        free = executor.capacity - sum(state.state(j.key) == RUNNING for j in jobs)
        wave = []
        for job in jobs:
            if len(wave) >= free:
                break
            if state.state(job.key) != PENDING or not self._ready(job, by_key, state):
                continue
            attempt = state.get(job.key).get("attempts", 0) + 1
            command = job.command(attempt)
            if isinstance(command, str):
                state.update(job.key, state=SKIPPED, note=command)
                self.say(f"skipped {job.key}: {command}")
            else:
                wave.append((job, attempt, command))
        if not wave:
            return
        handles = executor.submit_many([command for _, _, command in wave])
        for (job, attempt, command), handle in zip(wave, handles):
            state.get(job.key).update(state=RUNNING, handle=handle, attempts=attempt,
                                      started=time.time(), finished=None, log=command.log_path,
                                      note=None)
            self.say(f"started {job.key} (attempt {attempt}); log {command.log_path}")
        state.save()

    def _poll_running(self, jobs: list[StudyJob], state: StudyState, executor) -> None:
        for job in jobs:
            record = state.get(job.key)
            if record["state"] != RUNNING:
                continue
            status = executor.status(record["handle"])
            if status.state == "running":
                continue
            if status.state == "lost":
                self._lost(job, state, status)
                continue
            self._finish(job, state, status)

    def _lost(self, job: StudyJob, state: StudyState, status) -> None:
        """Submitted again (continuing from its checkpoint) unless it ended this way
        `attempts` times in this `study run`."""
        record = state.get(job.key)
        why = status.reason or "its process is gone without an exit code (killed)"
        if record.get("log"):   # an attempt cancelled while queued has written no log at all
            os.makedirs(os.path.dirname(record["log"]), exist_ok=True)
            with open(record["log"], "a") as log:
                log.write(f"[runner {time.strftime('%Y-%m-%dT%H:%M:%S')}] this attempt ended "
                          f"without finishing: {why}\n")
        counted = record.get("interrupted", 0) + (status.reason not in NOT_AN_ATTEMPT)
        if counted >= self.spec.executor.attempts:
            state.update(job.key, state=FAILED, finished=time.time(), interrupted=counted,
                         note=f"ended without finishing {counted} times (last: {why}); "
                              "see its log")
            self.say(f"FAILED {job.key}: ended without finishing {counted} times (last: {why}); "
                     f"log {record.get('log')}")
            return
        self.say(f"{job.key}: {why}; submitting it again")
        state.update(job.key, state=PENDING, handle=None, interrupted=counted,
                     note=f"lost ({why}), resubmitted")

    def _finish(self, job: StudyJob, state: StudyState, status) -> None:
        if status.state == "failed":
            state.update(job.key, state=FAILED, finished=time.time(),
                         note=f"exit code {status.exit_code}; see its log")
            self.say(f"FAILED {job.key} (exit {status.exit_code}); log {state.get(job.key)['log']}")
            return
        try:
            if job.after is not None:
                job.after()
        except UserError as error:
            state.update(job.key, state=FAILED, finished=time.time(), note=str(error))
            self.say(f"FAILED {job.key}: {error}")
            return
        now = time.time()   # after `after`: a prediction's time includes its evaluation
        missing = job.missing()
        if missing:
            state.update(job.key, state=FAILED, finished=now,
                         note=f"the command succeeded but {missing}")
            self.say(f"FAILED {job.key}: {missing}")
            return
        state.update(job.key, state=SUCCEEDED, finished=now)
        self.say(f"done {job.key} ({now - state.get(job.key)['started']:.0f} s)")


def run_study(spec: StudySpec, say: Callable[[str], None] = print) -> str:
    return StudyRunner(spec, say).run()


def study_status(spec: StudySpec) -> str:
    """What is done, running, failed and left, per kind of job, with the estimate of the time
    left of `progress.estimate_seconds_left` (as the progress line of `study run`)."""
    layout = StudyLayout(spec)
    if not os.path.isfile(layout.state_file):
        return f"{spec.name}: not started (no {layout.state_file}); run `nnunet-transfer study run`"
    state = StudyState(layout.state_file)
    kinds: dict[str, dict[str, list]] = {}
    for key, record in state.jobs.items():
        kinds.setdefault(job_kind(key), {}).setdefault(record["state"], []).append((key, record))
    lines = [f"{'kind':<24}{'done':>6}{'running':>9}{'failed':>8}{'blocked':>9}{'left':>6}"]
    capacity = jobs_in_flight(spec.executor.kind, spec.executor.jobs)
    failures = []
    for kind, by_state in sorted(kinds.items()):
        count = {s: len(by_state.get(s, [])) for s in (SUCCEEDED, RUNNING, FAILED, BLOCKED,
                                                        PENDING, SKIPPED)}
        lines.append(f"{kind:<24}{count[SUCCEEDED] + count[SKIPPED]:>6}{count[RUNNING]:>9}"
                     f"{count[FAILED]:>8}{count[BLOCKED]:>9}{count[PENDING]:>6}")
        failures += [(key, r) for key, r in by_state.get(FAILED, [])]
    total = sum(len(v) for by_state in kinds.values() for v in by_state.values())
    finished = sum(len(by_state.get(s, [])) for by_state in kinds.values() for s in TERMINAL)
    left = estimate_time_left(state.jobs, capacity)
    estimate = ("time left unknown until a job finishes" if left.seconds is None else
                f"about {left.seconds / 60:.0f} min left at {capacity} job(s) at a time "
                "(median time of the finished jobs of each kind)")
    if left.guessed:
        estimate += (f"; {', '.join(left.guessed)} (none finished yet) at the median time of "
                     "all finished jobs")
    lines.append(f"\n{finished} of {total} jobs ended ({100 * finished / max(total, 1):.0f} %); "
                 + estimate)
    for key, record in failures:
        lines.append(f"failed: {key}: {record.get('note')}; log {record.get('log')}")
    for key, record in state.jobs.items():   # in the executor's words: SLURM's job state
        if record["state"] == RUNNING and record.get("handle"):
            handle = record["handle"]
            lines.append(f"running: {key}: {follower_for(handle).describe_job(handle)}")
    return "\n".join(lines)
