"""Executors of the study runner with real processes: exit codes and logs, parallel jobs, the
environment that shares the machine, re-attaching from another process, lost jobs, cancel, the
submitit path (its LocalExecutor) and the messages for wrong settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nnunet_transfer.errors import UserError
from nnunet_transfer.study.executors.base import CommandJob, JobStatus, process_alive
from nnunet_transfer.study.executors.kinds import make_executor
from nnunet_transfer.study.executors.local import LocalExecutor
from nnunet_transfer.study.executors.slurm import slurm_state_is_active
from nnunet_transfer.study.executors.submitit_executor import SubmititExecutor

SH = "/bin/sh"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shell_job(folder, key: str, script: str, env: dict | None = None,
              uses_accelerator: bool = True) -> CommandJob:
    return CommandJob(key=key, argv=(SH, "-c", script), env=env or {},
                      log_path=str(folder / "logs" / f"{key}.log"),
                      exit_path=str(folder / "exit" / f"{key}.exit"),
                      cwd=str(folder), uses_accelerator=uses_accelerator)


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def wait_done(executor, handle, timeout: float = 15.0) -> JobStatus:
    return wait_for(lambda: (lambda s: s if s.state != "running" else None)(executor.status(handle)),
                    timeout, f"job {handle['key']} to end")


def log_of(job: CommandJob) -> str:
    with open(job.log_path) as f:
        return f.read()


def env_of(job: CommandJob) -> dict:
    """The environment a job printed with `env` (lines of NAME=value)."""
    return dict(line.split("=", 1) for line in log_of(job).splitlines()
                if "=" in line and not line.startswith("[run_job"))


def dead(pid: int) -> bool:
    return not process_alive(pid, None)


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False


def read_pids(path) -> list[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


@pytest.fixture(autouse=True)
def no_inherited_gpu_list(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


# ---------------------------------------------------------------------------------------------
# local


def test_local_exit_codes_and_log(tmp_path):
    executor = make_executor("local", jobs=4, folder=str(tmp_path / "ex"), gpus=0)
    jobs = [shell_job(tmp_path, "ok", "echo to-stdout; echo to-stderr >&2"),
            shell_job(tmp_path, "three", "echo failing; exit 3"),
            shell_job(tmp_path, "killed", "kill -9 $$"),
            CommandJob("missing", ("/no/such/tool",), {}, str(tmp_path / "m.log"),
                       str(tmp_path / "m.exit"))]
    handles = [executor.submit(job) for job in jobs]
    json.dumps(handles)  # the runner stores them
    statuses = [wait_done(executor, h) for h in handles]
    assert statuses == [JobStatus("succeeded", 0), JobStatus("failed", 3),
                        JobStatus("failed", 128 + 9), JobStatus("failed", 127)]
    assert "to-stdout" in log_of(jobs[0]) and "to-stderr" in log_of(jobs[0])
    assert "failing" in log_of(jobs[1]) and "exit code 3" in log_of(jobs[1])
    assert "killed by SIGKILL" in log_of(jobs[2])
    assert "No such file" in log_of(jobs[3])
    # reaped by the executor that started them: no zombies left behind
    wait_for(lambda: all(dead(h["pid"]) for h in handles), what="the wrappers to end")
    assert executor.status(handles[0]) == JobStatus("succeeded", 0)
    assert not any(zombie(h["pid"]) for h in handles)

    # a re-submission starts from a clean slate: the old exit file does not answer for it
    gate = tmp_path / "go"
    again = shell_job(tmp_path, "three", f"while [ ! -e {gate} ]; do sleep 0.02; done; exit 0")
    handle = executor.submit(again)
    assert executor.status(handle) == JobStatus("running")
    gate.touch()
    assert wait_done(executor, handle) == JobStatus("succeeded", 0)
    log = log_of(again)  # both attempts, appended
    assert log.index("end: exit code 3") < log.index("end: exit code 0")


def test_local_jobs_run_side_by_side(tmp_path):
    executor = make_executor("local", jobs=2, folder=str(tmp_path / "ex"), gpus=0)
    assert executor.capacity == 2
    now = f'{sys.executable} -c "import time; print(time.time())"'
    script = f"{now} > {{0}}.start; sleep 1; {now} > {{0}}.end"
    jobs = [shell_job(tmp_path, f"j{i}", script.format(tmp_path / f"t{i}")) for i in range(2)]
    handles = [executor.submit(job) for job in jobs]
    assert [wait_done(executor, h) for h in handles] == [JobStatus("succeeded", 0)] * 2
    starts = [float((tmp_path / f"t{i}.start").read_text()) for i in range(2)]
    ends = [float((tmp_path / f"t{i}.end").read_text()) for i in range(2)]
    assert max(starts) < min(ends), (starts, ends)  # the two sleeps overlapped


def test_thread_variables_share_the_cores(tmp_path):
    executor = make_executor("local", jobs=2, folder=str(tmp_path / "ex"), cpus=8, gpus=0)
    plain = shell_job(tmp_path, "plain", "env")
    own = shell_job(tmp_path, "own", "env", env={"OMP_NUM_THREADS": "7", "nnUNet_n_proc_DA": "3",
                                                  "OTHER": "x"})
    for job in (plain, own):
        assert wait_done(executor, executor.submit(job)) == JobStatus("succeeded", 0)
    env = env_of(plain)
    for name in ("NNUNET_TRANSFER_CPU_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS"):
        assert env[name] == "4", name
    assert env["nnUNet_n_proc_DA"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in env  # no GPU on this "machine": nothing to hide
    env = env_of(own)
    assert env["OMP_NUM_THREADS"] == "7" and env["nnUNet_n_proc_DA"] == "3" and env["OTHER"] == "x"
    assert env["MKL_NUM_THREADS"] == "4"

    # default: the CPUs this process may use
    executor = make_executor("local", jobs=2, folder=str(tmp_path / "ex"), gpus=0)
    job = shell_job(tmp_path, "default", "env")
    assert wait_done(executor, executor.submit(job)) == JobStatus("succeeded", 0)
    assert env_of(job)["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))


def test_gpu_slots_round_robin(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # the runner's own view of the GPUs
    assert make_executor("local", folder=str(tmp_path / "ex"), gpus=2).capacity == 2
    executor = make_executor("local", jobs=4, folder=str(tmp_path / "ex"), cpus=8, gpus=2)

    def gated(key, **kw):
        return shell_job(tmp_path, key, f"env; while [ ! -e {tmp_path / key}.go ]; do sleep 0.02; "
                                         f"done", **kw)

    jobs = [gated(f"g{i}") for i in range(3)]
    cpu_job = shell_job(tmp_path, "cpu", "env", uses_accelerator=False)
    handles = [executor.submit(job) for job in jobs]
    cpu_handle = executor.submit(cpu_job)
    assert wait_done(executor, cpu_handle) == JobStatus("succeeded", 0)
    wait_for(lambda: all("CUDA_VISIBLE_DEVICES" in log_of(j) for j in jobs), what="env printed")
    assert [env_of(j)["CUDA_VISIBLE_DEVICES"] for j in jobs] == ["5", "7", "5"]
    assert [h["slot"] for h in handles] == [0, 1, 2]
    assert env_of(jobs[0])["OMP_NUM_THREADS"] == "2"
    assert env_of(jobs[0])["nnUNet_n_proc_DA"] == "1"  # 2 cores per job: one drives the GPU
    assert env_of(cpu_job)["CUDA_VISIBLE_DEVICES"] == ""  # never takes GPU memory
    assert env_of(cpu_job)["nnUNet_n_proc_DA"] == "0"

    # the job on slot 1 (GPU 7) ends: the next GPU job takes that slot, not a fourth one
    (tmp_path / "g1.go").touch()
    assert wait_done(executor, handles[1]) == JobStatus("succeeded", 0)
    late = gated("g3")
    late_handle = executor.submit(late)
    assert late_handle["slot"] == 1
    wait_for(lambda: "CUDA_VISIBLE_DEVICES" in log_of(late), what="env printed")
    assert env_of(late)["CUDA_VISIBLE_DEVICES"] == "7"
    for key in ("g0", "g2", "g3"):
        (tmp_path / f"{key}.go").touch()
    for handle in (handles[0], handles[2], late_handle):
        assert wait_done(executor, handle) == JobStatus("succeeded", 0)


SUBMITTER = textwrap.dedent("""
    import json, os, signal, sys, time
    # Ctrl-C as in a terminal, even where this test run was started with SIGINT ignored (a
    # background job of a script), which a child would otherwise inherit.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from nnunet_transfer.study.executors.base import CommandJob
    from nnunet_transfer.study.executors.kinds import make_executor
    kind, folder, how, specs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    executor = make_executor(kind, jobs=2, folder=folder, gpus=0)
    handles = [executor.submit(CommandJob(**spec)) for spec in specs]
    print(json.dumps(handles), flush=True)
    if how == "wait":
        time.sleep(60)
""")


def submit_from_another_process(tmp_path, kind: str, jobs: list[CommandJob], how: str):
    """Handles of `jobs` submitted by a Python process that then exits ("exit"), is killed with
    SIGKILL ("sigkill") or gets Ctrl-C in its terminal ("ctrl-c": SIGINT to its process
    group)."""
    specs = [dict(key=j.key, argv=list(j.argv), env=dict(j.env), log_path=j.log_path,
                  exit_path=j.exit_path, cwd=j.cwd) for j in jobs]
    proc = subprocess.Popen([sys.executable, "-c", SUBMITTER, kind, str(tmp_path / "ex"),
                             "exit" if how == "exit" else "wait", json.dumps(specs)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": ROOT + os.pathsep +
                                 os.environ.get("PYTHONPATH", "")})
    handles = json.loads(proc.stdout.readline())
    if how == "sigkill":
        proc.kill()
    elif how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) != 0 or how == "exit"
    proc.stdout.close()
    return handles


@pytest.mark.parametrize("how", ["exit", "sigkill", "ctrl-c"])
def test_local_reattach_after_the_submitter_is_gone(tmp_path, how):
    gate = tmp_path / "go"
    waits = shell_job(tmp_path, "waits", f"while [ ! -e {gate} ]; do sleep 0.02; done; echo done")
    sleeper = shell_job(tmp_path, "sleeper", f"echo $$ > {tmp_path}/pid; exec sleep 60")
    handles = submit_from_another_process(tmp_path, "local", [waits, sleeper], how)
    executor = make_executor("local", jobs=2, folder=str(tmp_path / "ex"), gpus=0)
    assert [executor.status(h) for h in handles] == [JobStatus("running")] * 2
    gate.touch()
    assert wait_done(executor, handles[0]) == JobStatus("succeeded", 0)
    assert "done" in log_of(waits)

    # the wrapper killed with SIGKILL: no exit code, nothing running -> lost
    command_pid = wait_for(lambda: read_pids(tmp_path / "pid"), what="pid file")[0]
    os.kill(handles[1]["pid"], signal.SIGKILL)
    assert wait_done(executor, handles[1]) == JobStatus("lost")
    wait_for(lambda: dead(command_pid), what="the command to die with its wrapper")
    assert not os.path.exists(sleeper.exit_path)


def test_cancel_stops_the_process_group(tmp_path):
    executor = LocalExecutor(2, cpus=2, gpus=0, cancel_grace_s=5)
    pids = tmp_path / "pids"
    job = shell_job(tmp_path, "tree", f"sleep 60 & echo $! > {pids}; sleep 60 & echo $! >> {pids}; "
                                      f"wait")
    handle = executor.submit(job)
    children = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(read_pids(pids)),
                        what="background pids")
    executor.cancel(handle)
    assert all(dead(pid) for pid in children + [handle["pid"]])
    assert executor.status(handle) == JobStatus("failed", 128 + signal.SIGTERM)
    assert "killed by SIGTERM" in log_of(job)

    # a command that ignores SIGTERM gets SIGKILL after the grace period, here from an
    # executor that did not start it (the runner was restarted)
    stubborn = shell_job(tmp_path, "stubborn", f"trap '' TERM; echo $$ > {tmp_path}/spid; "
                                               f"sleep 60")
    handle = executor.submit(stubborn)
    command_pid = wait_for(lambda: read_pids(tmp_path / "spid"), what="pid file")[0]
    other = LocalExecutor(2, cpus=2, gpus=0, cancel_grace_s=0.5)
    started = time.monotonic()
    other.cancel(handle)
    assert time.monotonic() - started >= 0.5
    assert dead(handle["pid"]) and dead(command_pid)
    assert other.status(handle) == JobStatus("lost")
    assert executor.status(handle) == JobStatus("lost")  # and reaped by its parent


def test_cancel_returns_once_nothing_of_the_job_runs(tmp_path):
    """From an executor that did not start the job: the shell dies of SIGTERM (so the wrapper
    ends by itself, well within the grace period) but leaves a child that ignores SIGTERM in
    its group and another in a session of its own; and a command that holds memory, which
    takes a while to exit after SIGKILL. `cancel` returns only when all of them are gone."""
    executor = LocalExecutor(2, cpus=2, gpus=0)
    other = LocalExecutor(2, cpus=2, gpus=0, cancel_grace_s=0.5)
    pids = tmp_path / "pids"
    stubborn = f"trap '' TERM; echo \\$\\$ >> {pids}; exec sleep 60"
    leftovers = shell_job(tmp_path, "leftovers",
                          f'sh -c "{stubborn}" & setsid sh -c "{stubborn}" & wait')
    handle = executor.submit(leftovers)
    children = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(read_pids(pids)),
                        what="the two pids")
    other.cancel(handle)
    assert [pid for pid in children + [handle["pid"]] if not dead(pid)] == []
    assert other.status(handle) == JobStatus("failed", 128 + signal.SIGTERM)

    holds = tmp_path / "holds"
    script = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              f"b = b'x' * (512 << 20); open({str(holds)!r}, 'w').write(str(os.getpid())); "
              "time.sleep(60)")
    big = CommandJob("big", (sys.executable, "-c", script), {}, str(tmp_path / "big.log"),
                     str(tmp_path / "big.exit"))
    handle = executor.submit(big)
    command_pid = wait_for(lambda: read_pids(holds), 30, what="pid file")[0]
    other.cancel(handle)
    assert dead(command_pid) and dead(handle["pid"])
    assert executor.status(handle) == JobStatus("lost")


# ---------------------------------------------------------------------------------------------
# submitit (its LocalExecutor: the code path of SLURM)


def test_submitit_local_success_failure_and_env(tmp_path):
    executor = make_executor("submitit-local", jobs=2, folder=str(tmp_path / "ex"), cpus=4,
                             gpus=0)
    assert isinstance(executor, SubmititExecutor) and executor.capacity == 2
    ok = shell_job(tmp_path, "ok", "echo hello; env")
    bad = shell_job(tmp_path, "bad", "echo failing >&2; exit 3", env={"OMP_NUM_THREADS": "3"})
    handles = executor.submit_many([ok, bad])
    json.dumps(handles)
    assert {h["kind"] for h in handles} == {"submitit"}
    assert [wait_done(executor, h, 30) for h in handles] == [JobStatus("succeeded", 0),
                                                            JobStatus("failed", 3)]
    assert "hello" in log_of(ok) and "failing" in log_of(bad)
    assert env_of(ok)["OMP_NUM_THREADS"] == "2" and env_of(ok)["nnUNet_n_proc_DA"] == "0"
    assert "submitit-local" in executor.describe()


def test_submitit_local_reattach_and_lost(tmp_path):
    gate = tmp_path / "go"
    waits = shell_job(tmp_path, "waits", f"while [ ! -e {gate} ]; do sleep 0.02; done; echo done")
    sleeper = shell_job(tmp_path, "sleeper", f"echo $$ > {tmp_path}/pid; exec sleep 60")
    handles = submit_from_another_process(tmp_path, "submitit-local", [waits, sleeper], "exit")
    executor = make_executor("submitit-local", jobs=2, folder=str(tmp_path / "ex"), gpus=0)
    assert [executor.status(h) for h in handles] == [JobStatus("running")] * 2
    gate.touch()
    assert wait_done(executor, handles[0], 30) == JobStatus("succeeded", 0)
    assert "done" in log_of(waits)

    # submitit's controller killed with SIGKILL: its job goes with it -> lost
    command_pid = wait_for(lambda: read_pids(tmp_path / "pid"), 30, what="pid file")[0]
    os.kill(int(handles[1]["job_id"]), signal.SIGKILL)
    assert wait_done(executor, handles[1]) == JobStatus("lost")
    wait_for(lambda: dead(command_pid), what="the command to die with the controller")


def test_submitit_local_cancel(tmp_path):
    executor = make_executor("submitit-local", jobs=1, folder=str(tmp_path / "ex"), gpus=0)
    job = shell_job(tmp_path, "long", f"echo $$ > {tmp_path}/pid; exec sleep 60")
    handle = executor.submit(job)
    command_pid = wait_for(lambda: read_pids(tmp_path / "pid"), 30, what="pid file")[0]
    executor.cancel(handle)
    status = executor.status(handle)
    print("after cancel:", status)
    assert status in (JobStatus("failed", 128 + signal.SIGINT), JobStatus("lost"))
    wait_for(lambda: dead(command_pid), what="the command to stop")


# ---------------------------------------------------------------------------------------------
# settings


def test_wrong_settings_name_the_option_and_the_fix(tmp_path, monkeypatch):
    folder = str(tmp_path / "ex")
    with pytest.raises(UserError, match="executor: 'sge' is not known.*local, slurm, submitit-local"):
        make_executor("sge", folder=folder)
    for jobs in (0, -1, "2", 1.5, True):
        with pytest.raises(UserError, match="jobs: .* is not a whole number >= 1"):
            make_executor("local", jobs=jobs, folder=folder, gpus=0)
    with pytest.raises(UserError) as error:
        make_executor("submitit-local", folder=folder, gpus=0,
                      slurm={"partiton": "gpu", "time_min": "a day", "cpus_per_task": 0})
    message = str(error.value)
    assert "slurm.partiton: unknown option" in message and "partition" in message
    assert "slurm.time_min: 'a day' is not a number > 0 (the wall-time limit" in message
    assert "slurm.cpus_per_task: 0 is not a whole number >= 1" in message

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="sbatch.*not found.*executor: local.*submitit-local"):
        make_executor("slurm", folder=folder, slurm={"time_min": 60})

    # with SLURM's tools on the PATH (stand-ins: nothing is submitted), time_min is required
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sbatch", "srun", "sacct"):
        (tools / tool).write_text("#!/bin/sh\nexit 1\n")
        (tools / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(UserError, match="slurm.time_min: required"):
        make_executor("slurm", folder=folder, slurm={"partition": "gpu"})
    executor = make_executor("slurm", folder=folder,
                             slurm={"partition": "gpu", "time_min": 1440, "gpus_per_node": 1,
                                    "cpus_per_task": 8, "mem_gb": 32})
    assert executor.capacity == 64
    assert "slurm: up to 64 jobs in flight" in executor.describe()
    assert "partition=gpu" in executor.describe()


def fake_slurm(folder, monkeypatch) -> dict:
    """Stand-ins for SLURM's commands: sbatch keeps the script and answers a job id, sacct
    reports the state written in a file, scancel notes its arguments. Nothing runs."""
    tools = folder / "slurm-bin"
    tools.mkdir()
    files = {"script": folder / "sbatch-script", "state": folder / "sacct-state",
             "scancel": folder / "scancel-args"}
    scripts = {
        "sbatch": f'cp "$1" {files["script"]}; echo "Submitted batch job 4242"',
        "srun": "exit 1",
        "sacct": f'echo "JobID|State|NodeList"; echo "4242|$(cat {files["state"]})|node1"',
        "scancel": f'echo "$@" >> {files["scancel"]}',
    }
    for name, body in scripts.items():
        (tools / name).write_text(f"#!/bin/sh\n{body}\n")
        (tools / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    return files


def test_slurm_path_with_stand_in_commands(tmp_path, monkeypatch):
    files = fake_slurm(tmp_path, monkeypatch)
    options = {"partition": "gpu", "time_min": 90, "gpus_per_node": 1, "cpus_per_task": 6,
               "mem_gb": 24, "setup": ["module load cuda"]}
    executor = make_executor("slurm", folder=str(tmp_path / "ex"), slurm=options)
    job = shell_job(tmp_path, "train__FineTune__n5", "echo never runs here")
    handle = executor.submit(job)
    assert handle["kind"] == "submitit" and handle["job_id"] == "4242"
    json.dumps(handle)
    script = files["script"].read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=6", "#SBATCH --mem=24GB",
                 "#SBATCH --job-name=train__FineTune__n5", "module load cuda"):
        assert line in script, line

    # followed by a fresh executor (the runner was restarted), through sacct
    files["state"].write_text("PENDING")
    again = make_executor("slurm", folder=str(tmp_path / "ex"), slurm=options)
    assert again.status(handle) == JobStatus("running")
    files["state"].write_text("COMPLETED")  # ended, and no exit file: lost
    assert wait_done(again, handle, 20) == JobStatus("lost")
    os.makedirs(os.path.dirname(job.exit_path), exist_ok=True)
    with open(job.exit_path, "w") as f:
        f.write("0\n")
    assert again.status(handle) == JobStatus("succeeded", 0)
    again.cancel(handle)
    assert "4242" in files["scancel"].read_text()


def test_slurm_job_function_on_the_node(tmp_path):
    """What submitit runs inside a SLURM job: the wrapper with the node's share (all the CPUs
    the job was given, SLURM's GPU), the job's own variables on top."""
    gpu_job = shell_job(tmp_path, "gpu", "env")
    cpu_job = shell_job(tmp_path, "cpu", "env; exit 4", env={"MKL_NUM_THREADS": "1"},
                        uses_accelerator=False)
    cores = len(os.sched_getaffinity(0))
    for job, code in ((gpu_job, 0), (cpu_job, 4)):
        call = ("import sys; from nnunet_transfer.study.executors.submitit_executor import "
                "run_submitted_job; "
                f"sys.exit(run_submitted_job({job.wrapper_argv()!r}, {dict(job.env)!r}, None, "
                f"{job.uses_accelerator}, True))")
        result = subprocess.run([sys.executable, "-c", call], timeout=30,
                                env={**os.environ, "CUDA_VISIBLE_DEVICES": "3"})
        assert result.returncode == code
        assert open(job.exit_path).read() == f"{code}\n"
    assert env_of(gpu_job)["OMP_NUM_THREADS"] == str(cores)
    assert env_of(gpu_job)["nnUNet_n_proc_DA"] == str(min(12, cores - 1))
    assert env_of(gpu_job)["CUDA_VISIBLE_DEVICES"] == "3"
    assert env_of(cpu_job)["nnUNet_n_proc_DA"] == "0"
    assert env_of(cpu_job)["MKL_NUM_THREADS"] == "1"


def test_slurm_states():
    for state in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "UNKNOWN", "SUSPENDED"):
        assert slurm_state_is_active(state), state
    for state in ("COMPLETED", "FAILED", "CANCELLED by 1234", "TIMEOUT", "NODE_FAIL",
                  "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"):
        assert not slurm_state_is_active(state), state
