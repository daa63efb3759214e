"""`nnunet-transfer analyze ...` end to end on real runs: the strategies trained by
`nnUNetv2_train` at smoke budget (conftest's `strategy_runs`), every kind through the real CLI in
a subprocess, the outputs read back and checked against what the strategies imply (a frozen
part's layers keep similarity 1 with their start, untrained networks are far less similar), and
the refusals a user meets.

The analyses use few blocks and voxels to stay fast; the session fixture's images equal the
patch size, so each case gives one block position and some layers have few distinct datapoints.
"""

from __future__ import annotations

import csv
import math
import os
import shutil

import numpy as np
import pytest
from scipy import stats

from support.nnunet_workspace import ONE_THREAD
from support.refusals import assert_refused

LAYERS = ["encoder-1", "encoder-2", "encoder-3", "decoder-1", "decoder-2", "decoder-3"]
ENCODER = LAYERS[:3]
# Trained on the target with the extra label (FrozenDecoderAndHead is on another dataset).
TARGET_STRATEGIES = ("Scratch", "FineTune", "FrozenRandomEncoder", "FrozenEncoder",
                     "FrozenDecoder", "HeadOnly")
FAST = ("--voxels-per-block", "300", "--measures", "pwcca,cka")
ANALYSIS_ENV = {**ONE_THREAD}


def read_rows(path: str) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def analyze(workspace, *args: str, ok: bool = True):
    return workspace.run("nnunet-transfer", "analyze", *args, ok=ok, extra_env=ANALYSIS_ENV)


def assert_png(path: str) -> None:
    from matplotlib.image import imread

    assert os.path.getsize(path) > 10_000, path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert float(image[..., :3].std()) > 0.01, f"{path} is blank"


def assert_analysis_refused(result, *fragments: str) -> None:
    """Refused as every command refuses, in the CLI's own error format."""
    assert_refused(result, *fragments)
    assert result.stderr.startswith("nnunet-transfer: error:"), result.stderr


@pytest.fixture(scope="module")
def runs(strategy_runs) -> dict[str, str]:
    return {name: strategy_runs[name]["folder"] for name in TARGET_STRATEGIES}


@pytest.fixture(scope="module")
def cases(workspace, target) -> str:
    """All preprocessed training cases of the target (4 images, 4 distinct block positions)."""
    folder = os.path.join(workspace.preprocessed, target["name"], "gt_segmentations")
    return ",".join(sorted(f[:-len(".nii.gz")] for f in os.listdir(folder)))


# -- convergence -------------------------------------------------------------------------------


def test_convergence(workspace, runs, tmp_path):
    out = str(tmp_path / "convergence")
    analyze(workspace, "convergence", "-o", out, *runs.values())
    rows = {r["run"]: r for r in read_rows(os.path.join(out, "convergence.csv"))}
    assert set(rows) == {f"{name}_fold0" for name in runs}
    for name, folder in runs.items():
        log = read_rows(os.path.join(folder, "transfer", "epochs.csv"))
        dice = [float(r["pseudo_dice"]) for r in log]
        expected = next(i for i, d in enumerate(dice) if d >= max(dice) - 0.005 * abs(max(dice)))
        row = rows[f"{name}_fold0"]
        assert int(row["convergence_epoch"]) == expected
        assert int(row["iterations_to_convergence"]) == int(log[expected]["iterations"])
        assert float(row["time_to_convergence_s"]) == pytest.approx(
            float(log[expected]["cumulative_train_time_s"]))
        assert row["strategy"] == name and int(row["epochs"]) == len(log)
    curves = read_rows(os.path.join(out, "convergence_curves.csv"))
    assert len(curves) == sum(len(read_rows(os.path.join(f, "transfer", "epochs.csv")))
                              for f in runs.values())
    assert_png(os.path.join(out, "convergence.png"))
    summary = open(os.path.join(out, "convergence.md")).read()
    assert "| HeadOnly_fold0 | HeadOnly |" in summary and "nnunet-transfer analyze convergence" \
        in summary


# -- evolution ---------------------------------------------------------------------------------


def test_evolution(workspace, runs, tmp_path):
    out = str(tmp_path / "evolution")
    chosen = ("Scratch", "FrozenEncoder", "HeadOnly")
    analyze(workspace, "evolution", "-o", out, "--blocks", "4", *FAST,
            *(runs[name] for name in chosen))
    rows = read_rows(os.path.join(out, "evolution.csv"))
    snapshots = {name: sorted(int(f[6:10]) for f in os.listdir(
        os.path.join(runs[name], "transfer", "snapshots"))) for name in chosen}
    measured = [r for r in rows if r["run"] != "null baseline"]
    assert len(measured) == len(LAYERS) * sum(len(s) for s in snapshots.values())
    for row in rows:
        for measure in ("pwcca", "cka"):
            assert -1e-9 <= float(row[measure]) <= 1 + 1e-9
        assert "svcca" not in row
    for row in measured:
        if row["run"] == "HeadOnly_fold0" or (row["run"] == "FrozenEncoder_fold0"
                                               and row["layer"] in ENCODER):
            assert float(row["pwcca"]) == pytest.approx(1, abs=1e-6), row
        reference = int(row["reference_epoch"])
        assert reference in snapshots[row["run"].removesuffix("_fold0")]
        assert reference >= int(row["convergence_epochs_done"])
        assert (row["is_reference"] == "True") == (int(row["epoch"]) == reference)
    null = [r for r in rows if r["run"] == "null baseline"]
    assert len(null) == len(LAYERS) * 3
    assert_png(os.path.join(out, "evolution.png"))
    summary = open(os.path.join(out, "evolution.md")).read()
    # the default cases: the session's split has one validation case and no test_cases.json
    assert "validation case(s) of fold(s) 0" in summary
    assert "null baseline" in summary and "reference snapshot" in summary


# -- similarity --------------------------------------------------------------------------------


def test_similarity_within_and_across_groups(workspace, runs, cases, tmp_path):
    out = str(tmp_path / "similarity")
    transfer = ("FineTune", "FrozenEncoder", "HeadOnly")
    scratch = ("Scratch", "FrozenRandomEncoder")
    analyze(workspace, "similarity", "-o", out, "--blocks", "8", "--cases", cases, *FAST,
            "--group", "TL", *(runs[n] for n in transfer),
            "--group", "RI", *(runs[n] for n in scratch))
    rows = read_rows(os.path.join(out, "similarity.csv"))
    pairs = [r for r in rows if r["comparison"] != "null baseline"]
    assert len(pairs) == len(LAYERS) * 10  # C(5, 2) pairs per layer
    assert len(rows) - len(pairs) == len(LAYERS) * 3
    assert {r["comparison"] for r in pairs} == {"within TL", "within RI", "across TL / RI"}
    for row in rows:
        assert 0 <= float(row["pwcca"]) <= 1 + 1e-9
    by_pair = {(r["layer"], r["a"], r["b"]): float(r["pwcca"]) for r in pairs}
    # HeadOnly and FrozenEncoder both keep the source's encoder untouched.
    for layer in ENCODER:
        assert by_pair[(layer, "FrozenEncoder_fold0", "HeadOnly_fold0")] == pytest.approx(
            1, abs=1e-6)

    tests = read_rows(os.path.join(out, "similarity_tests.csv"))
    assert len(tests) == len(LAYERS) * 2 * 2  # 2 measures x (TL, RI) within vs across
    for test in tests:
        values = {c: [float(r[test["measure"]]) for r in pairs
                      if r["layer"] == test["layer"] and r["comparison"] == c]
                  for c in (test["within"], test["across"])}
        within, across = values[test["within"]], values[test["across"]]
        if len(within) < 2:  # RI has 2 runs, so 1 pair: no spread, no test
            assert test["p_welch"] == "" and test["significant"] == "False"
            continue
        if np.ptp(within) < 1e-12 and np.ptp(across) < 1e-12:
            continue  # constant samples: scipy gives no p-value, ours is the limit
        expected = stats.ttest_ind(within, across, equal_var=False).pvalue
        assert float(test["p_welch"]) == pytest.approx(expected, rel=1e-9)
        assert (test["significant"] == "True") == (expected < 0.05)
    summary_rows = read_rows(os.path.join(out, "similarity_summary.csv"))
    for row in summary_rows:
        values = [float(r[row["measure"]]) for r in rows if r["layer"] == row["layer"]
                  and r["comparison"] == row["comparison"]]
        assert int(row["n"]) == len(values)
        assert float(row["mean"]) == pytest.approx(np.mean(values))
    assert_png(os.path.join(out, "similarity.png"))
    summary = open(os.path.join(out, "similarity.md")).read()
    assert ("| layer | within TL | within RI | across TL / RI | null baseline "
            "| p: within TL vs across TL / RI | p: within RI vs across TL / RI |") in summary
    assert "4 case(s) given with --cases" in summary


# -- feature reuse -----------------------------------------------------------------------------


def test_reuse(workspace, runs, cases, tmp_path):
    out = str(tmp_path / "reuse")
    transfer = ("FineTune", "FrozenEncoder", "FrozenDecoder", "HeadOnly")
    scratch = ("Scratch", "FrozenRandomEncoder")
    analyze(workspace, "reuse", "-o", out, "--blocks", "8", "--cases", cases, *FAST,
            "--transfer", *(runs[n] for n in transfer),
            "--scratch", *(runs[n] for n in scratch))
    rows = read_rows(os.path.join(out, "reuse.csv"))
    per_run = [r for r in rows if r["role"] != "null baseline"]
    assert len(per_run) == len(LAYERS) * 6
    value = {(r["run"].removesuffix("_fold0"), r["layer"]): float(r["pwcca"]) for r in per_run}
    for layer in LAYERS:
        assert value[("HeadOnly", layer)] == pytest.approx(1, abs=1e-6)
        # trained layers moved away from their start (epoch 0 and final really differ)
        assert value[("Scratch", layer)] < 1 - 1e-4 and value[("FineTune", layer)] < 1 - 1e-4
    for layer in ENCODER:
        assert value[("FrozenEncoder", layer)] == pytest.approx(1, abs=1e-6)
        assert value[("FrozenRandomEncoder", layer)] == pytest.approx(1, abs=1e-6)
    null = {}
    for r in rows:
        if r["role"] == "null baseline":
            null.setdefault(r["layer"], []).append(float(r["pwcca"]))
    summary = {(r["layer"], r["measure"]): r
               for r in read_rows(os.path.join(out, "reuse_summary.csv"))}
    for layer in LAYERS:
        t = [value[(n, layer)] for n in transfer]
        s = [value[(n, layer)] for n in scratch]
        entry = summary[(layer, "pwcca")]
        assert float(entry["reuse"]) == pytest.approx(np.mean(t) - np.mean(s), abs=1e-12)
        assert float(entry["transfer_std"]) == pytest.approx(np.std(t, ddof=1), abs=1e-12)
        if np.ptp(t) > 1e-12 or np.ptp(s) > 1e-12:
            assert float(entry["p_welch"]) == pytest.approx(
                stats.ttest_ind(t, s, equal_var=False).pvalue, rel=1e-9)
        # Untrained networks are far less alike than a frozen layer with itself.
        assert float(entry["null_mean"]) == pytest.approx(np.mean(null[layer]))
        assert max(null[layer]) < 0.99 < value[("HeadOnly", layer)]
    assert_png(os.path.join(out, "reuse.png"))
    text = open(os.path.join(out, "reuse.md")).read()
    assert "| layer | transfer | scratch | feature reuse | p | null baseline |" in text


# -- weights -----------------------------------------------------------------------------------


def test_weights(workspace, runs, tmp_path):
    out = str(tmp_path / "weights")
    chosen = ("Scratch", "FrozenEncoder", "HeadOnly")
    analyze(workspace, "weights", "-o", out, "--filters", "4", *(runs[n] for n in chosen))
    rows = read_rows(os.path.join(out, "weights.csv"))
    by_run = {}
    for row in rows:
        by_run.setdefault(row["run"].removesuffix("_fold0"), []).append(row)
    assert set(by_run) == set(chosen)
    assert len({len(v) for v in by_run.values()}) == 1  # same convolutions in every run
    for name, part_moves in (("FrozenEncoder", {"encoder": False, "decoder": True}),
                             ("HeadOnly", {"encoder": False, "decoder": False, "head": True}),
                             ("Scratch", {"encoder": True, "decoder": True})):
        for part, moves in part_moves.items():
            changes = [float(r["weight_change"]) for r in by_run[name] if r["part"] == part]
            assert changes, (name, part)
            if moves:
                assert max(changes) > 0, (name, part)
            else:
                assert max(changes) == 0.0, (name, part)
    for name in chosen:
        for kind in ("filters", "features"):
            assert_png(os.path.join(out, f"weights_{kind}_{name}_fold0.png"))
    assert_png(os.path.join(out, "weights.png"))
    text = open(os.path.join(out, "weights.md")).read()
    assert "| FrozenEncoder_fold0 | 0 -> 2 | 0.0% |" in text  # frozen: exactly 0


# -- refusals and warnings ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_architecture_run(workspace, target) -> str:
    """A Scratch run of Weatheritt et al.'s U-Net on the same target data (1 epoch)."""
    workspace.run("nnunet-transfer", "add-architectures", "-d", str(target["id"]),
                  "-p", target["plans"], "--only", "weatheritt")
    budget = {"NNUNET_TRANSFER_EPOCHS": "1", "NNUNET_TRANSFER_ITERS": "1",
              "NNUNET_TRANSFER_VAL_ITERS": "1", "NNUNET_TRANSFER_SEED": "0",
              "nnUNet_n_proc_DA": "0"}
    workspace.run("nnUNetv2_train", str(target["id"]), "3d_fullres_weatheritt", "0",
                  "-p", target["plans"], "-tr", "nnUNetTrainer_Scratch", "-device", "cpu",
                  extra_env={**budget, **ONE_THREAD})
    return workspace.run_folder(target["name"], "nnUNetTrainer_Scratch", target["plans"],
                                configuration="3d_fullres_weatheritt")


def test_other_architecture_and_other_data_are_refused(workspace, runs, strategy_runs, source,
                                                       other_architecture_run, tmp_path):
    result = analyze(workspace, "similarity", "-o", str(tmp_path / "s"),
                     "--group", "A", runs["FineTune"], runs["Scratch"],
                     "--group", "B", other_architecture_run, ok=False)
    assert_analysis_refused(result, "different architectures", "PlainConvUNet", "WeatherittUNet")
    # The source's labels, on another dataset: same architecture, other data.
    result = analyze(workspace, "reuse", "-o", str(tmp_path / "r"),
                     "--transfer", strategy_runs["FrozenDecoderAndHead"]["folder"],
                     "--scratch", source["folder"], ok=False)
    assert_analysis_refused(result, "different data", "Dataset803", "Dataset801")


def test_missing_snapshot_is_refused(workspace, runs, tmp_path):
    copy = str(tmp_path / "nnUNetTrainer_FineTune__copy__3d_fullres" / "fold_0")
    shutil.copytree(runs["FineTune"], copy)
    os.remove(os.path.join(copy, "transfer", "snapshots", "epoch_0000.pth"))
    result = analyze(workspace, "reuse", "-o", str(tmp_path / "r"), "--transfer", copy,
                     "--scratch", runs["Scratch"], ok=False)
    assert_analysis_refused(result, "no snapshot after 0 epochs", "it has snapshots after 1, 2 epochs")
    result = analyze(workspace, "weights", "-o", str(tmp_path / "w"), "--start", "1", "--end",
                     "7", copy, ok=False)
    assert_analysis_refused(result, "no snapshot after 7 epochs")


def test_unknown_layer_is_refused_with_close_names(workspace, runs, tmp_path):
    result = analyze(workspace, "evolution", "-o", str(tmp_path / "e"), runs["Scratch"],
                     "--layers", "encoder.stages.0", "encoder.stage.1", ok=False)
    assert_analysis_refused(result, "no layer 'encoder.stage.1'", "Closest names: encoder.stages.1")
    result = analyze(workspace, "weights", "-o", str(tmp_path / "w"), "--filter-layer",
                     "encoder.stages.0", runs["Scratch"], ok=False)
    assert_analysis_refused(result, "not a convolution")


def test_too_few_voxels_warns_on_stderr_and_in_the_summary(workspace, runs, tmp_path):
    out = str(tmp_path / "few")
    result = analyze(workspace, "reuse", "-o", out, "--blocks", "1", "--voxels-per-block",
                     "20", "--measures", "pwcca", "--transfer", runs["FrozenEncoder"],
                     "--scratch", runs["Scratch"])
    assert "nnunet-transfer: warning:" in result.stderr
    assert "datapoints per channel" in result.stderr   # the library's warning, with the ratio
    text = open(os.path.join(out, "reuse.md")).read()
    assert "datapoints per channel" in text
    for row in read_rows(os.path.join(out, "reuse.csv")):
        assert 0 <= float(row["pwcca"]) <= 1 + 1e-9 and not math.isnan(float(row["pwcca"]))


def test_not_a_run_and_bad_output_folder_are_refused(workspace, runs, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    result = analyze(workspace, "convergence", "-o", str(tmp_path / "c"), str(plain), ok=False)
    assert_analysis_refused(result, "is not a run of nnunet-transfer's trainers")
    model_folder = os.path.dirname(runs["Scratch"])
    result = analyze(workspace, "weights", "-o", str(tmp_path / "w"), model_folder, ok=False)
    assert_analysis_refused(result, "give one of those fold folders", "fold_0")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    result = analyze(workspace, "convergence", "-o", str(a_file), runs["Scratch"], ok=False)
    assert_analysis_refused(result, "is a file")
