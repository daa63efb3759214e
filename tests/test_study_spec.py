"""The study file: every mistake reported at once with its line; the grid it expands to."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nnunet_transfer.errors import UserError
from nnunet_transfer.study.demo import example_study, study_text
from nnunet_transfer.study.grid import StudyLayout, expand
from nnunet_transfer.study.runner import study_executor
from nnunet_transfer.study.study_file import load_study

from support.study_files import SMALL_STUDY, write_study_text


def test_example_and_demo_files_are_valid(tmp_path):
    spec = load_study(write_study_text(tmp_path, example_study()))
    assert spec.strategies[0].name == "Scratch" and spec.generalization == "unseen"
    assert spec.workdir == str(tmp_path)
    hippocampus = tmp_path / "Task04_Hippocampus"
    (hippocampus / "imagesTr").mkdir(parents=True)
    text = study_text("h", hippocampus=str(hippocampus))
    spec = load_study(write_study_text(tmp_path, text, "h.yaml"))
    assert spec.datasets["all"].options["msd"] == str(hippocampus)
    assert spec.datasets["source"].inputs == ("all", "held")


def test_grid_folds_and_names_are_unique_and_stable(tmp_path):
    spec = load_study(write_study_text(tmp_path, SMALL_STUDY))
    pretrainings, runs = expand(spec, pool_size=6)
    # all = the pool minus one validation case; FineTune and FrozenEncoder need pretraining
    assert sorted({r.n for r in runs}) == [2, 5]
    assert len(runs) == 2 * 2 * 3 * 2 and len(pretrainings) == 2
    layout = StudyLayout(spec)
    folders = {layout.run_folder(r) for r in runs}
    assert len(folders) == len(runs)
    # one fold per (n, seed), in the order splits.few_shot_folds writes them
    assert {(r.n, r.seed): r.fold for r in runs} == {(2, 0): 0, (2, 1): 1, (5, 0): 2, (5, 1): 3}
    assert expand(spec, pool_size=6) == (pretrainings, runs)
    karimi = next(r for r in runs if r.architecture == "karimi")
    assert "3d_fullres_karimi" in layout.run_folder(karimi).path


def test_sizes_that_coincide_give_one_run(tmp_path):
    spec = load_study(write_study_text(tmp_path, SMALL_STUDY.replace("[2, all]", "[5, all]")))
    _, runs = expand(spec, pool_size=6)
    assert sorted({r.n for r in runs}) == [5] and len(runs) == 2 * 3 * 2


def test_every_mistake_is_reported_with_its_line(tmp_path):
    path = write_study_text(tmp_path, """\
        study: small
        executor: {kind: slurmm, jobs: 0}
        datasets:
          src: {id: 801, name: Src, synthetic: {cases: 1}}
          tgt: {id: 801, name: Tgt, degrade: scr}
        source: src
        target: tgtt
        seeds: [0]
        strategies: [Scratch, Finetune]
        budget: {epochs: -1, iters: 5}
        analyses: [similarity]
        colour: blue
    """)
    with pytest.raises(UserError) as caught:
        load_study(path)
    message = str(caught.value)
    expected = [
        (2, "executor.kind: 'slurmm' is not known (did you mean slurm?)"),
        (2, "executor.jobs: 0 is not a whole number from 1 to 1024"),
        (4, "datasets.src.synthetic.cases: 1 is not a whole number >= 2"),
        (5, "id 801 is also used by dataset 'src'"),
        (5, "unknown dataset 'scr' (did you mean src?)"),
        (7, "target: 'tgtt' is not a key of datasets (did you mean tgt?)"),
        (9, "'Finetune' is not known (did you mean FineTune?)"),
        (10, "budget.epochs: -1 is not a whole number >= 1"),
        (10, "budget.iters: unknown key (did you mean iterations?)"),
        (11, "similarity compares networks within a strategy: it needs at least two seeds"),
        (12, "colour: unknown key"),
    ]
    for line, text in expected:
        assert any(row.strip().startswith(f"{path}:{line}: ") and text in row
                   for row in message.splitlines()), (line, text, message)
    assert f"has {len(expected)} mistakes; nothing was run" in message


def test_dataset_cycles_and_missing_folders(tmp_path):
    path = write_study_text(tmp_path, """\
        study: s
        datasets:
          a: {id: 1, name: A, subset: b, count: 2}
          b: {id: 2, name: B, degrade: a}
          c: {id: 3, name: C, msd: no/such/folder}
          d: {id: 4, name: D, subset: c}
        source: c
        target: a
    """)
    with pytest.raises(UserError) as caught:
        load_study(path)
    message = str(caught.value)
    assert "is made from itself through a -> b -> a" in message
    assert f"the MSD folder {tmp_path}/no/such/folder does not exist" in message
    assert "a subset needs count: N" in message


def test_yaml_syntax_error_names_the_line_through_the_cli(tmp_path):
    path = write_study_text(tmp_path, "study: x\n  bad: [\n")
    result = subprocess.run([sys.executable, "-m", "nnunet_transfer.cli", "study", "check", path],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path}:2: not valid YAML" in result.stderr


def test_check_accepts_a_good_file_through_the_cli(tmp_path):
    path = write_study_text(tmp_path, SMALL_STUDY)
    result = subprocess.run([sys.executable, "-m", "nnunet_transfer.cli", "study", "check", path],
                            capture_output=True, text=True, cwd=os.path.dirname(path))
    assert result.returncode == 0, result.stderr
    assert "no mistakes found" in result.stdout and "FrozenEncoder" in result.stdout


@pytest.mark.parametrize("jobs, in_flight", [("", 64), (", jobs: 3", 3)])
def test_slurm_study_without_jobs_keeps_many_in_flight(tmp_path, monkeypatch, jobs, in_flight):
    """The executor a study file makes: SLURM's default of 64 jobs in flight when `jobs` is not
    given (a study file once made it 1), `jobs` caps it. SLURM's tools are stand-ins here."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sbatch", "srun", "sacct"):
        (tools / tool).write_text("#!/bin/sh\nexit 1\n")
        (tools / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    text = SMALL_STUDY + f"    executor: {{kind: slurm{jobs}, slurm: {{time_min: 60}}}}\n"
    executor = study_executor(load_study(write_study_text(tmp_path, text)))
    assert executor.capacity == in_flight
    assert f"slurm: up to {in_flight} jobs in flight" in executor.describe()
