"""A study at smoke budget through the real CLI: run, kill, resume, status, report.

The runner drives real nnUNetv2_plan_and_preprocess / nnUNetv2_train / nnUNetv2_predict and
`nnunet-transfer analyze` subprocesses on tiny synthetic data. The runner is killed with SIGKILL
while trainings run, and one training's process group is killed with it; the second
`study run` must redo nothing that had finished, wait for what still ran, and continue the
killed training from its checkpoint.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import pytest

from nnunet_transfer.training.run_folder import RunFolder
from support.smoke_study import cli, environment, read_state, wait_for, write_study

def run_folder(folder: str, training: str) -> str:
    """The fold folder of a training job of the smoke study (one size: the fold is the seed)."""
    _, strategy, _, seed, _, _ = training.split("__")
    return os.path.join(folder, "nnUNet_results", "Dataset812_SmokeTarget",
                        f"nnUNetTrainer_{strategy}__nnUNetPlansStudy_from811__3d_fullres",
                        f"fold_{int(seed[len('seed'):])}")


@pytest.fixture(scope="module")
def resumed_study(tmp_path_factory):
    """Run the study, SIGKILL the runner (and one training) mid-way, run it again."""
    folder = str(tmp_path_factory.mktemp("study"))
    path = write_study(folder)
    log = open(os.path.join(folder, "first_run.log"), "w")
    first = subprocess.Popen(cli("study", "run", path), env=environment(), stdout=log,
                             stderr=subprocess.STDOUT)

    def trainings_running():
        jobs = read_state(folder)
        done = [k for k, r in jobs.items() if k.startswith("train__") and r["state"] == "succeeded"]
        # still training: one killed in nnU-Net's final validation has its final checkpoint
        # already, and is rightly not run again
        running = [k for k, r in jobs.items() if k.startswith("train__") and r["state"] == "running"
                   and not os.path.isfile(os.path.join(run_folder(folder, k),
                                                       "checkpoint_final.pth"))]
        return (done, running) if done and running else None

    done_before, running_before = wait_for(trainings_running, 900, "a training to finish while "
                                           "another runs", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = read_state(folder)
    victim = running_before[0]
    handle = before[victim]["handle"]
    try:   # the local executor's own process group: the training and its wrapper
        os.killpg(handle["pgid"], signal.SIGKILL)
    except ProcessLookupError:
        pytest.skip(f"{victim} finished between two polls; nothing was left to kill")
    # whether the killed attempt had written a checkpoint decides how the next one starts
    left_a_checkpoint = RunFolder(run_folder(folder, victim)).interrupted
    finished_before = {k: dict(r) for k, r in before.items() if r["state"] == "succeeded"}
    second = subprocess.run(cli("study", "run", path), env=environment(), capture_output=True,
                            text=True, timeout=1800)
    return {"folder": folder, "path": path, "second": second, "victim": victim,
            "left_a_checkpoint": left_a_checkpoint, "finished_before": finished_before,
            "after": read_state(folder)}


def test_resumed_study_finishes_everything(resumed_study):
    second, after = resumed_study["second"], resumed_study["after"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    states = {k: r["state"] for k, r in after.items()}
    assert set(states.values()) == {"succeeded"}, states
    kinds = sorted({k.split("__")[0] for k in states})
    assert kinds == ["analyze_convergence", "analyze_evolution", "analyze_reuse",
                     "analyze_similarity", "analyze_weights", "predict", "pretrain", "train"]
    assert sum(k.startswith("train__") for k in states) == 4


def test_nothing_finished_is_redone(resumed_study):
    after = resumed_study["after"]
    for key, record in resumed_study["finished_before"].items():
        assert after[key]["attempts"] == record["attempts"], key
        assert after[key]["finished"] == record["finished"], key


def test_killed_training_is_run_again_and_its_log_is_whole(resumed_study):
    folder, victim = resumed_study["folder"], resumed_study["victim"]
    assert resumed_study["after"][victim]["attempts"] == 2
    strategy = victim.split("__")[1]
    run = run_folder(folder, victim)
    with open(os.path.join(run, "transfer", "epochs.csv")) as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2]            # every epoch once, none lost, none twice
    assert os.path.isfile(os.path.join(run, "transfer", "snapshots", "epoch_0000.pth"))
    with open(os.path.join(folder, "study", "jobs", victim, "attempt2.log")) as f:
        command = f.readline()
    # continued when the killed attempt had left a checkpoint (never loading the source again
    # over it), started afresh otherwise (from the source, unless it is Scratch)
    if resumed_study["left_a_checkpoint"]:
        assert "--c" in command and "-pretrained_weights" not in command, command
    else:
        assert "--c" not in command, command
        assert ("-pretrained_weights" in command) == (strategy != "Scratch"), command


def test_outputs_of_every_stage(resumed_study):
    folder = resumed_study["folder"]
    study = os.path.join(folder, "study")
    table = os.path.join(study, "tables", "test", "src__unet", "comparison.md")
    with open(table) as f:
        text = f.read()
    assert "FineTune" in text and "Scratch" in text and "DSC, n = 2" in text
    for kind in ("convergence", "evolution", "similarity", "reuse", "weights"):
        out = os.path.join(study, "analysis", "src__unet__n2", kind)
        assert os.path.isfile(os.path.join(out, f"{kind}.md")), kind
        assert any(name.endswith(".png") for name in os.listdir(out)), kind
    with open(os.path.join(study, "tables", "training_cost.csv")) as f:
        costs = list(csv.DictReader(f))
    assert len(costs) == 4 and all(float(r["train_time_s"]) > 0 for r in costs)
    assert os.path.isfile(os.path.join(study, "tables", "generalization", "src__unet",
                                       "comparison.csv"))


def test_predictions_ran_with_the_study_files_settings(resumed_study):
    jobs = os.path.join(resumed_study["folder"], "study", "jobs")
    predictions = [name for name in os.listdir(jobs) if name.startswith("predict__")]
    assert len(predictions) == 4
    for name in predictions:
        with open(os.path.join(jobs, name, "attempt1.log")) as f:
            command = f.readline()
        assert "-step_size 0.5 -chk checkpoint_final.pth --disable_tta" in command, command


def test_report_is_self_contained(resumed_study):
    study = os.path.join(resumed_study["folder"], "study")
    with open(os.path.join(study, "report.html")) as f:
        html = f.read()
    assert "Accuracy on the held-out test cases" in html and "data:image/png;base64," in html
    assert "Feature reuse" in html and "Generalisation" in html
    assert "http://" not in html and "https://" not in html


@pytest.mark.usefixtures("chromium")
def test_report_renders_in_chromium(resumed_study):
    study = os.path.join(resumed_study["folder"], "study")
    shot = os.path.join(study, "report.png")
    result = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..",
                                                          "scripts", "screenshot_report.py"),
                             os.path.join(study, "report.html"), shot],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.path.getsize(shot) > 10_000


@pytest.mark.usefixtures("chromium")
def test_report_reads_like_a_paper_in_the_browser(resumed_study):
    """The smoke study's report at 1400 px in headless Chromium (DevTools over a pipe): findings
    and the headline figure on the first screen, a screenshot of the top and of each section,
    every image with alt text, nothing wider than the page, no script, no figure shown beyond
    3:1, the per-run galleries folded, the page at most 10,000 px tall."""
    study = os.path.join(resumed_study["folder"], "study")
    with open(os.path.join(study, "report.md")) as f:
        markdown = f.read()
    # findings first, computed from the comparison; commands and data folded, paths relative
    assert markdown.index("Findings") < markdown.index("Accuracy on the held-out")
    assert "from `tables/test/src__unet/comparison.csv`" in markdown
    assert resumed_study["folder"] not in markdown
    assert "<details><summary>the commands</summary>" in markdown
    scripts = os.path.join(os.path.dirname(__file__), "..", "scripts")
    sys.path.insert(0, scripts)
    try:
        import inspect_report
        from screenshot_report import check_not_blank
    finally:
        sys.path.remove(scripts)
    out = os.path.join(study, "screens")
    found = inspect_report.inspect(os.path.join(study, "report.html"), out, width=1400,
                                   height=900)
    ids = [s["id"] for s in found["sections"]]
    assert ids[:3] == ["findings", "accuracy", "convergence"] and "setup" in ids
    assert {"evolution", "similarity", "reuse", "weights", "generalization"} <= set(ids)
    assert found["text_length"] > 2000 and found["scripts"] == 0
    assert found["images"] >= 8 and found["images_without_alt"] == 0
    assert found["broken_images"] == 0
    assert found["too_wide"] == [] and found["scroll_width"] <= found["page_width"]
    assert found["first_figure"]["bottom"] <= 900     # the headline figure, on the first screen
    # one comparative figure per analysis shown, the per-run galleries folded; every figure
    # shown within 3:1 as drawn, the page short enough to read at a glance
    assert found["folded_figures"] > 0
    assert inspect_report.layout_problems(found) == []
    assert len(found["screenshots"]) == len(ids) + 1
    for shot in found["screenshots"]:
        check_not_blank(shot)


def test_status_after_the_study(resumed_study):
    result = subprocess.run(cli("study", "status", resumed_study["path"]), env=environment(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "100 %" in result.stdout and "train" in result.stdout


def test_a_second_run_of_a_finished_study_does_nothing(resumed_study):
    before = read_state(resumed_study["folder"])
    result = subprocess.run(cli("study", "run", resumed_study["path"]), env=environment(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "started" not in result.stdout
    after = read_state(resumed_study["folder"])
    assert {k: r["attempts"] for k, r in after.items()} == \
        {k: r["attempts"] for k, r in before.items()}


def test_failed_run_is_recorded_and_the_rest_goes_on(tmp_path):
    """A training that cannot work (a custom strategy selecting an encoder stage the network
    lacks: known only once the network is built, so the study file's check passes it) fails
    with its log; Scratch still finishes and the report lists the failure. Runs through
    submitit's local executor, the code path of SLURM."""
    with open(tmp_path / "bad_stages.yaml", "w") as f:
        f.write("name: BadStages\npretrained: refused\nlr: 1.0\nphases:\n  - name: train\n"
                "    train:\n      - parts: [encoder]\n        stages: [7]\n")
    path = write_study(str(tmp_path), executor="submitit-local", generalization="null",
                       seeds="[0]", strategies="[Scratch, bad_stages.yaml]", epochs=1,
                       analyses="[convergence]")
    result = subprocess.run(cli("study", "run", path), env=environment(), capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = read_state(str(tmp_path))
    failed = jobs["train__BadStages__n2__seed0__unet__src"]
    assert failed["state"] == "failed" and os.path.isfile(failed["log"])
    assert jobs["predict__BadStages__n2__seed0__unet__src"]["state"] == "blocked"
    assert jobs["train__Scratch__n2__seed0__unet__src"]["state"] == "succeeded"
    assert jobs["predict__Scratch__n2__seed0__unet__src"]["state"] == "succeeded"
    assert "FAILED train__BadStages" in result.stdout
    with open(os.path.join(str(tmp_path), "study", "report.md")) as f:
        report = f.read()
    assert "Failed jobs" in report and "BadStages" in report
