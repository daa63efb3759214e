"""A study on a real SLURM cluster: `scripts/slurm_cluster.sh` starts a single-node cluster
(munge, MariaDB, slurmdbd, slurmctld, slurmd) for this module and stops it afterwards.

The smoke study of test_study_end_to_end runs with `executor: slurm` and no `jobs`: the four
trainings of its wave are in flight at once on a node of 2 CPUs, as job arrays of at most 3.
The runner is killed with SIGKILL mid-study and one training is cancelled with scancel; the
next `study run` waits for the jobs still in SLURM, submits none twice, continues the cancelled
training from its checkpoint; another training cancelled as often as `attempts` allows stays
failed with its log while the rest goes on. A job that hits its time limit is lost with
SLURM's reason TIMEOUT (the runner treats it like a cancelled one). The per-case evaluation of
an uninterrupted run equals that of the same study on the local executor.
"""

from __future__ import annotations

import csv
import glob
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from support.smoke_study import cli, environment, read_state, wait_for, write_study

from nnunet_transfer.study.executors.base import CommandJob, JobStatus
from nnunet_transfer.study.executors.kinds import make_executor
from nnunet_transfer.study.executors.slurm import options_of_kind, slurm_parameters
from nnunet_transfer.study.study_file import load_study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "slurm_cluster.sh")
SLURM_EXECUTOR = ("{kind: slurm, attempts: 2, slurm: {time_min: 30, cpus_per_task: 1, "
                  "mem_gb: 2, array_size: 3, by_kind: {predict: {mem_gb: 1}}}}")
EPOCHS = 4
KEPT = "Scratch__n2__seed0"   # never interrupted: compared with the local executor


def _daemons_missing() -> bool:
    return any(shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin") is None
               for t in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch"))


def _processes_under(folder: str) -> list[str]:
    """Command lines of the processes that mention `folder` (the cluster's daemons and jobs)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                line = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if folder in line and int(pid) != os.getpid():
            found.append(f"{pid}: {line}")
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("slurm"))
    if _daemons_missing():
        if os.geteuid() != 0:
            pytest.skip("a real SLURM needs its Debian packages (slurmctld slurmd slurmdbd munge "
                        "mariadb-server), or root to install them")
        install = subprocess.run([SCRIPT, "install", folder], capture_output=True, text=True,
                                 timeout=900)
        if install.returncode != 0:
            pytest.skip(f"SLURM's packages could not be installed: {install.stderr[-500:]}")
    started = time.monotonic()
    result = subprocess.run([SCRIPT, "start", folder], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    env = {"SLURM_CONF": os.path.join(folder, "slurm.conf")}
    print(f"SLURM cluster up in {time.monotonic() - started:.1f} s")
    previous = os.environ.get("SLURM_CONF")
    os.environ.update(env)
    try:
        yield {"folder": folder, "env": env}
    finally:
        stop = subprocess.run([SCRIPT, "stop", folder], capture_output=True, text=True,
                              timeout=300)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        assert stop.returncode == 0, stop.stdout + stop.stderr
        time.sleep(1)
        assert _processes_under(folder) == [], "left running after the cluster was stopped"


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True,
                          timeout=60).stdout


def shell_job(folder, key: str, script: str) -> CommandJob:
    base = os.path.join(str(folder), "jobs", key)
    return CommandJob(key=key, argv=("/bin/sh", "-c", script), env={},
                      log_path=base + ".log", exit_path=base + ".exit")


def wait_status(executor, handle, timeout: float) -> JobStatus:
    return wait_for(lambda: (lambda s: s if s.state != "running" else None)(
        executor.status(handle)), timeout, f"job {handle['job_id']} to end")


@pytest.fixture(scope="module")
def time_limit_job(cluster, tmp_path_factory):
    """A job that outlives its 1-minute limit, started first: it waits while the study runs."""
    folder = tmp_path_factory.mktemp("timeout")
    executor = make_executor("slurm", folder=str(folder / "ex"), slurm={"time_min": 1})
    job = shell_job(folder, "train__sleeper", "echo started; sleep 600")
    return executor, executor.submit(job)


def test_job_arrays_with_their_own_resources(cluster, time_limit_job, tmp_path):
    options = {"time_min": 5, "cpus_per_task": 1, "mem_gb": 1, "array_size": 2,
               "by_kind": {"predict": {"mem_gb": 0.5}}}
    executor = make_executor("slurm", folder=str(tmp_path / "ex"), slurm=options)
    assert executor.capacity == 64
    jobs = [shell_job(tmp_path, f"train__{i}", f"echo train {i}") for i in range(3)] + \
        [shell_job(tmp_path, "predict__0", "exit 3")]
    handles = executor.submit_many(jobs)
    ids = [h["job_id"] for h in handles]
    arrays = {i.split("_")[0] for i in ids}
    assert len(arrays) == 3 and all("_" in i for i in ids[:2]), ids  # [2 + 1] trainings, 1 predict
    statuses = [wait_status(executor, h, 120) for h in handles]
    assert statuses == [JobStatus("succeeded", 0)] * 3 + [JobStatus("failed", 3)]
    memory = {line.split("|")[0]: line.split("|")[1] for line in slurm(
        "sacct", "-X", "-n", "-P", "-o", "JobID,ReqMem", "-j", ",".join(ids)).split()}
    assert memory[ids[0]] == "1G" and memory[ids[3]] == "512M", memory


def test_scancel_is_a_lost_job_with_its_reason(cluster, tmp_path):
    executor = make_executor("slurm", folder=str(tmp_path / "ex"), slurm={"time_min": 5})
    job = shell_job(tmp_path, "train__cancelled", "echo started; sleep 300")
    handle = executor.submit(job)
    wait_for(lambda: os.path.isfile(job.log_path) and "started" in open(job.log_path).read(),
             60, "the job to start")
    slurm("scancel", handle["job_id"])
    status = wait_status(executor, handle, 60)
    assert status.state == "lost" and status.reason == "CANCELLED", status


def test_array_task_cancelled_while_pending_is_lost(cluster, tmp_path):
    """sacct keeps the array's pending rest ("7_[1-2%1]") after one pending task of it is
    cancelled and forgets the task: squeue decides, and the task is lost at once."""
    executor = make_executor("slurm", folder=str(tmp_path / "ex"),
                             slurm={"time_min": 5, "array_parallelism": 1})
    handles = executor.submit_many([shell_job(tmp_path, f"train__{i}", "sleep 120")
                                    for i in range(3)])
    slurm("scancel", handles[1]["job_id"])
    try:
        lost = wait_status(executor, handles[1], 30)
        assert lost.state == "lost", lost
        assert [executor.status(h).state for h in (handles[0], handles[2])] == ["running"] * 2
        assert "PENDING" in executor.describe_job(handles[2])
    finally:
        slurm("scancel", *(h["job_id"] for h in handles))


def study_file(folder: str, executor: str, **values) -> str:
    path = write_study(folder, generalization="null", analyses="[convergence]", **values)
    with open(path) as f:
        text = f.read().replace("executor: {kind: local, jobs: 2}", f"executor: {executor}")
    with open(path, "w") as f:
        f.write(text)
    return path


def submitted_jobs() -> set[str]:
    """Every job and array task SLURM has seen, by id ("7", "8_0"); sacct lists tasks that never
    started within their array's range ("10_[1-2%2]")."""
    ids = set()
    for listed in slurm("sacct", "-X", "-n", "-P", "-o", "JobID", "-S", "now-1days").split():
        array, _, ranges = listed.partition("_[")
        if not ranges:
            ids.add(listed)
            continue
        for part in ranges.rstrip("]").split("%")[0].split(","):
            low, _, high = part.partition("-")
            ids.update(f"{array}_{i}" for i in range(int(low), int(high or low) + 1))
    return ids


def checkpointed(folder: str, key: str) -> bool:
    """Whether the training `key` (train__<strategy>__n2__seed<S>__unet__src) has saved a
    checkpoint (nnU-Net's best one comes after the first epoch); its fold is the seed here."""
    _, strategy, _, seed, _, _ = key.split("__")
    runs = glob.glob(os.path.join(folder, "nnUNet_results", "Dataset812_SmokeTarget",
                                  f"nnUNetTrainer_{strategy}__*", f"fold_{seed[len('seed'):]}"))
    return any(os.path.isfile(os.path.join(run, name)) for run in runs
               for name in ("checkpoint_latest.pth", "checkpoint_best.pth"))


@pytest.fixture(scope="module")
def slurm_study(cluster, time_limit_job, tmp_path_factory):
    """Run the study; SIGKILL the runner once a training has a checkpoint; scancel that
    training (the victim) and another one (doomed: cancelled again at its second attempt);
    run the study again to its end. Scratch seed 0 is left alone, for the comparison."""
    folder = str(tmp_path_factory.mktemp("study"))
    path = study_file(folder, SLURM_EXECUTOR, epochs=EPOCHS)
    env = {**environment(), **cluster["env"]}
    known_before = set(submitted_jobs())
    log = open(os.path.join(folder, "first_run.log"), "w")
    first = subprocess.Popen(cli("study", "run", path), env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    most_in_flight = 0

    def victim_and_doomed():
        nonlocal most_in_flight
        jobs = read_state(folder)
        most_in_flight = max(most_in_flight, sum(r["state"] == "running" for r in jobs.values()))
        running = sorted(k for k, r in jobs.items() if k.startswith("train__")
                         and r["state"] == "running" and KEPT not in k)
        victims = [k for k in running if checkpointed(folder, k)]
        others = [k for k in running if k not in victims[:1]]
        return (victims[0], others[-1]) if victims and others else None

    victim, doomed = wait_for(victim_and_doomed, 900, "a training with a checkpoint while "
                              "another runs or waits", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    log.close()
    before = read_state(folder)
    slurm("scancel", before[victim]["handle"]["job_id"], before[doomed]["handle"]["job_id"])
    status = subprocess.run(cli("study", "status", path), env=env, capture_output=True,
                            text=True, timeout=120)

    second = subprocess.Popen(cli("study", "run", path), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    cancelled = {before[doomed]["handle"]["job_id"]}

    def cancel_doomed():
        record = read_state(folder).get(doomed, {})
        if record.get("state") == "running" and record["handle"]["job_id"] not in cancelled:
            cancelled.add(record["handle"]["job_id"])
            slurm("scancel", record["handle"]["job_id"])
        return record.get("state") == "failed"

    try:
        wait_for(cancel_doomed, 900, f"{doomed} to fail after its attempts", second)
        output, _ = second.communicate(timeout=1800)
    finally:   # a failed wait leaves no runner behind (the cluster's stop ends its jobs)
        if second.poll() is None:
            second.kill()
            second.communicate()
    return {"folder": folder, "path": path, "env": env, "victim": victim, "doomed": doomed,
            "before": before, "after": read_state(folder), "output": output,
            "returncode": second.returncode, "status": status.stdout,
            "most_in_flight": most_in_flight,
            "submitted": set(submitted_jobs()) - known_before}


def test_many_jobs_in_flight_as_arrays(slurm_study):
    assert slurm_study["most_in_flight"] >= 3  # more than the node's 2 CPUs: some pending
    ids = [r["handle"]["job_id"] for k, r in slurm_study["before"].items()
           if k.startswith("train__") and r.get("handle")]
    assert len(ids) >= 2 and all("_" in i for i in ids), ids   # array tasks: <array>_<index>


def test_status_shows_slurm_states(slurm_study):
    victim_id = slurm_study["before"][slurm_study["victim"]]["handle"]["job_id"]
    lines = slurm_study["status"].splitlines()
    # sacct says CANCELLED once slurmdbd has it, RUNNING or COMPLETING a moment before
    assert any(re.search(rf"{slurm_study['victim']}: SLURM job {victim_id}: [A-Z]+", line)
               for line in lines), slurm_study["status"]


def test_killed_runner_finds_its_jobs_and_submits_none_twice(slurm_study):
    before, after = slurm_study["before"], slurm_study["after"]
    assert slurm_study["returncode"] == 0, slurm_study["output"][-3000:]
    victim, doomed = slurm_study["victim"], slurm_study["doomed"]
    for key, record in before.items():
        if record["state"] in ("running", "succeeded") and key not in (victim, doomed):
            assert after[key]["attempts"] == record["attempts"], key
            assert after[key]["handle"]["job_id"] == record["handle"]["job_id"], key
        if record["state"] == "succeeded":
            assert after[key]["finished"] == record["finished"], key
    # at most one SLURM job per attempt: nothing was submitted twice (sacct forgets an array
    # task cancelled before it started, so there may be fewer)
    assert len(slurm_study["submitted"]) <= sum(r["attempts"] for r in after.values())


def test_cancelled_training_continues_from_its_checkpoint(slurm_study):
    folder, victim = slurm_study["folder"], slurm_study["victim"]
    record = slurm_study["after"][victim]
    assert record["state"] == "succeeded" and record["attempts"] == 2
    with open(os.path.join(folder, "study", "jobs", victim, "attempt2.log")) as f:
        assert "--c" in f.readline()
    assert f"{victim}: CANCELLED; submitting it again" in slurm_study["output"]


def test_failed_attempts_are_capped_and_the_rest_goes_on(slurm_study):
    after, doomed = slurm_study["after"], slurm_study["doomed"]
    assert after[doomed]["state"] == "failed" and after[doomed]["attempts"] == 2
    assert "ended without finishing 2 times" in after[doomed]["note"]
    assert os.path.isfile(after[doomed]["log"])
    assert after[doomed.replace("train__", "predict__")]["state"] == "blocked"
    others = {k: r["state"] for k, r in after.items()
              if doomed.split("__", 1)[1] not in k}
    assert set(others.values()) == {"succeeded"}, others


def test_time_limit_is_a_lost_job(time_limit_job, slurm_study):
    executor, handle = time_limit_job
    status = wait_status(executor, handle, 240)
    assert status.state == "lost" and status.reason == "TIMEOUT", status


def per_case(folder: str) -> list[dict]:
    path = os.path.join(folder, "study", "evaluations", "test", f"{KEPT}__unet__src",
                        "evaluation_per_case.csv")
    with open(path) as f:
        return [{k: v for k, v in row.items() if "time" not in k} for row in csv.DictReader(f)]


def test_same_evaluation_as_the_local_executor(slurm_study, tmp_path):
    """Scratch n2 seed 0 of the same study, alone on the local executor with one thread per
    job, as a SLURM job with cpus_per_task: 1 runs (two jobs on two CPUs). The study's setup
    (datasets, plans, preprocessing, splits) runs in the runner itself whatever the executor,
    so the local study starts from a copy of the SLURM study's and runs only the jobs."""
    assert slurm_study["after"][f"train__{KEPT}__unet__src"]["attempts"] == 1
    prepared = slurm_study["folder"]
    for part in ("nnUNet_raw", "nnUNet_preprocessed", os.path.join("study", "setup"),
                 os.path.join("study", "test")):
        shutil.copytree(os.path.join(prepared, part), tmp_path / part, symlinks=True)
    path = study_file(str(tmp_path), "{kind: local, jobs: 2}", seeds="[0]",
                      strategies="[Scratch]", epochs=EPOCHS)
    two_cpus = set(sorted(os.sched_getaffinity(0))[:2])
    result = subprocess.run(cli("study", "run", path), env=environment(), capture_output=True,
                            text=True, timeout=1800,
                            preexec_fn=lambda: os.sched_setaffinity(0, two_cpus))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "setup:" not in result.stdout   # nothing prepared again
    local = per_case(str(tmp_path))
    assert len(local) == 3 and local == per_case(prepared)


def test_the_documented_example_is_a_valid_study(tmp_path):
    """The documented SLURM study file: `study check` accepts it (its data folder made here),
    and each kind of job gets its own resources."""
    with open(os.path.join(REPO, "docs", "how_to", "run_on_slurm.md")) as f:
        block = re.search(r"```yaml\n# slurm-study.yaml\n(.*?)```", f.read(), re.S).group(1)
    data = tmp_path / "Task04_Hippocampus"
    data.mkdir()
    text = block.replace("/shared/data/Task04_Hippocampus", str(data)).replace(
        "/shared/studies/hippocampus", str(tmp_path / "study"))
    path = tmp_path / "slurm-study.yaml"
    path.write_text(text)
    result = subprocess.run(cli("study", "check", str(path)), env=environment(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "executor slurm x default" in result.stdout
    options = load_study(str(path)).executor.slurm
    train = slurm_parameters(options_of_kind(options, "train"))
    predict = slurm_parameters(options_of_kind(options, "predict"))
    assert train["gpus_per_node"] == 1 and train["time"] == 240 and train["mem"] == "32GB"
    assert predict["time"] == 60 and predict["cpus_per_task"] == 4 and "array_size" not in train
    wrong = text.replace("array_size: 100", "array_sise: 100")
    path.write_text(wrong)
    result = subprocess.run(cli("study", "check", str(path)), env=environment(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "slurm.array_sise: unknown option" in result.stderr
