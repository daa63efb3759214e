"""`rank-sources`: LogME against a direct evidence maximisation, the voxel sampling, the patch,
the head's input, the CSV, the refusals, the excluded cases; and the known answer through the
real commands: on one target, a source trained on the same task ranks above a source trained
on an unrelated structure, with the numbers the score is computed from checked."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer.cli import main as cli_main
from nnunet_transfer.data.synthetic import LOW_QUALITY_DOMAIN, write_synthetic_dataset
from nnunet_transfer.errors import UserError
from nnunet_transfer.source_ranking.compatibility import Compatibility
from nnunet_transfer.source_ranking.features import (
    HeadInputs, class_balanced_sample, crop_padded, patch_box, patch_outputs)
from nnunet_transfer.source_ranking.logme import (
    log_evidence, maximum_evidence, mean_logme, one_vs_rest_logme)
from nnunet_transfer.source_ranking.rank import DEFAULT_SAMPLES_PER_CLASS, rank_sources
from nnunet_transfer.source_ranking.ranking import (
    SourceRanking, SourceResult, ranked, read_ranking_csv, write_ranking_csv)
from nnunet_transfer.source_ranking.sources import CandidateSource

from oracles.logme_reference import gaussian_log_evidence, reference_logme
from support.checkpoint_files import (V1_MISSING, nnssl_checkpoint, v1_available, v1_network,
                                      v1_plans, write_v1_model)
from support.networks import plain_unet, residual_unet
from support.nnunet_workspace import ONE_THREAD, SMALL_PLANS
from support.ranking_data import SHAPE, random_model, write_unrelated_dataset

ORGAN = {"background": 0, "organ": 1}


# -- LogME -----------------------------------------------------------------------------------

def _problem(seed: int, n: int, d: int, separable: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    features = rng.standard_normal((n, d))
    if separable:
        features[:, 0] += 3.0 * y
    return features, y


@pytest.mark.parametrize("seed,n,d,separable", [(0, 60, 4, True), (1, 60, 4, False),
                                                (2, 40, 7, True), (3, 25, 3, False)])
def test_logme_closed_form_equals_a_direct_maximisation(seed, n, d, separable):
    features, y = _problem(seed, n, d, separable)
    ours = maximum_evidence(features, y)
    per_sample, alpha, beta = reference_logme(features, y)
    assert ours.per_sample == pytest.approx(per_sample, rel=1e-7, abs=1e-9)
    assert ours.alpha == pytest.approx(alpha, rel=1e-4)
    assert ours.beta == pytest.approx(beta, rel=1e-4)


@pytest.mark.parametrize("n,d", [(30, 5), (6, 10)])   # more features than samples too
def test_evidence_equals_the_gaussian_density(n, d):
    features, y = _problem(4, n, d, True)
    for alpha, beta in ((0.3, 2.0), (5.0, 0.7), (1e-3, 40.0)):
        assert log_evidence(features, y, alpha, beta) == pytest.approx(
            gaussian_log_evidence(features, y, alpha, beta), rel=1e-9)


def test_logme_prefers_features_that_separate_the_classes():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 900)
    random_features = rng.standard_normal((900, 8))
    separating = random_features.copy()
    separating[:, :3] += 2.5 * np.eye(3)[labels]
    good = one_vs_rest_logme(separating, labels, (0, 1, 2))
    bad = one_vs_rest_logme(random_features, labels, (0, 1, 2))
    assert set(good) == set(bad) == {0, 1, 2}
    assert all(good[c].per_sample > bad[c].per_sample + 0.2 for c in good)
    assert mean_logme(good) == pytest.approx(np.mean([e.per_sample for e in good.values()]))
    # a class without voxels has no binary problem
    assert set(one_vs_rest_logme(separating, labels, (0, 1, 2, 7))) == {0, 1, 2}


# -- the patch, the sampling, the head's input ---------------------------------------------

def test_patch_centred_on_the_foreground_inside_the_image_and_padded_when_larger():
    seg = np.zeros((20, 10, 6), dtype=np.int8)
    seg[2:5, 4:6, 1:3] = 1
    start = patch_box(seg, (8, 8, 8))
    assert start == (0, 1, -1)          # clipped at the top, centred, padded on both sides
    patch = crop_padded(seg, start, (8, 8, 8), -1)
    assert patch.shape == (8, 8, 8)
    assert np.count_nonzero(patch == 1) == np.count_nonzero(seg == 1)
    assert (patch[:, :, 0] == -1).all() and (patch[:, :, 7] == -1).all()
    data = np.arange(2 * 20 * 10 * 6, dtype=np.float32).reshape(2, 20, 10, 6)
    np.testing.assert_array_equal(crop_padded(data, start, (8, 8, 8), 0.0)[:, :, :, 1:7],
                                  data[:, 0:8, 1:9, :])


def test_class_balanced_sample_takes_the_quota_of_each_class_and_never_the_padding():
    seg = np.full((10, 10, 10), -1, dtype=np.int8)
    seg[:, :, :8] = 0
    seg[2:4, 2:4, 2:4] = 1           # 8 voxels
    seg[5:9, 5:9, 0:4] = 2           # 64 voxels
    features = np.stack([np.arange(1000, dtype=np.float32).reshape(10, 10, 10),
                         seg.astype(np.float32)])
    rows, labels = class_balanced_sample(features, seg, (0, 1, 2), 20,
                                         np.random.default_rng(0))
    assert [int(np.sum(labels == c)) for c in (0, 1, 2)] == [20, 8, 20]
    np.testing.assert_array_equal(rows[:, 1], labels)         # each row is its voxel's
    again, _ = class_balanced_sample(features, seg, (0, 1, 2), 20, np.random.default_rng(0))
    np.testing.assert_array_equal(rows, again)                # seeded


def test_features_are_the_heads_full_resolution_input():
    torch.manual_seed(0)
    network = plain_unet(classes=3).eval()
    hooks = HeadInputs(network)
    seg = np.zeros((12, 16, 16), dtype=np.int8)
    seg[4:8, 4:8, 4:8] = 1
    data = np.random.default_rng(0).standard_normal((1, 12, 16, 16)).astype(np.float32)
    outputs = patch_outputs(network, hooks, data, seg, (16, 16, 16), torch.device("cpu"))
    hooks.close()
    assert outputs.features.shape == (4, 16, 16, 16)    # the first stage's 4 features
    with torch.no_grad():
        logits = network.decoder.seg_layers[-1](torch.from_numpy(outputs.features)[None])
    np.testing.assert_array_equal(logits[0].argmax(0).numpy(), outputs.prediction)
    assert outputs.seg.shape == (16, 16, 16) and (outputs.seg[:2] == -1).all()


# -- the CSV ---------------------------------------------------------------------------------

def _result(name: str, score: float, dice: dict) -> SourceResult:
    return SourceResult(name, f"/models/{name}", 0, score, {"background": 0.5, "organ": score},
                        {"background": 2000, "organ": 1234},
                        Compatibility({"encoder": 1.0, "decoder": 0.75, "head": 0.5},
                                      tuple(dice), 2, ("t2",), 1, (1.0, 0.5, 0.5),
                                      (0.8, 1.25, 2.0)),
                        dice, 4, 3.25)


def test_csv_round_trip_and_ranks(tmp_path):
    results = ranked([_result("b", 0.1, {}), _result("a", 0.3, {"organ": 0.625}),
                      _result("c", float("nan"), {})])
    assert [(r.source, r.rank) for r in results] == [("a", 1), ("b", 2), ("c", 3)]
    ranking = SourceRanking("Dataset001_X", ("c1",), (), results)
    path = str(tmp_path / "ranking.csv")
    write_ranking_csv(ranking, path)
    back = read_ranking_csv(path, "Dataset001_X")
    for ours, theirs in zip(results[:2], back.results[:2]):
        assert ours == theirs
    assert math.isnan(back.results[2].score)
    header = open(path).readline().strip().split(",")
    assert header[:3] == ["source", "rank", "score"]
    table = ranking.table()
    assert table.splitlines()[2].split()[:3] == ["1", "a", "0.3000"]
    assert "organ 0.625" in table and "100%/75%/50%" in table
    (tmp_path / "bad.csv").write_text("source,rank\nx,1\n")
    with pytest.raises(UserError, match="not a rank-sources CSV"):
        read_ranking_csv(str(tmp_path / "bad.csv"))


# -- the pipeline on untrained models, in-process --------------------------------------------

@pytest.fixture()
def raw_target(tmp_path, monkeypatch) -> str:
    raw = tmp_path / "raw"
    monkeypatch.setenv("nnUNet_raw", str(raw))
    write_synthetic_dataset(str(raw), 901, "RankTarget", num_training=4, num_test=1,
                            domain=LOW_QUALITY_DOMAIN, seed=3)
    return str(raw / "Dataset901_RankTarget")


def _spoil(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"not an image")


def test_excluded_cases_are_never_read_and_the_figures_follow_the_plans(raw_target, tmp_path):
    excluded = "ranktarget_tr000"   # the first case, which nnU-Net would read for its reader
    for folder, suffix in (("imagesTr", "_0000"), ("labelsTr", "")):
        _spoil(os.path.join(raw_target, folder, f"{excluded}{suffix}.nii.gz"))
    exclude = tmp_path / "held_out.txt"
    exclude.write_text(f"# the test cases\n{excluded}\nranktarget_ts000_0000.nii.gz\n")
    same = random_model(str(tmp_path), ORGAN, {"0": "MRI"}, patch=(16, 16, 16), seed=1)
    other = random_model(str(tmp_path), {"background": 0, "liver": 1, "tumour": 2},
                         {"0": "CT"}, seed=2)
    sources = [CandidateSource.parse(f"same={same}"), CandidateSource.parse(other)]
    ranking = rank_sources("901", sources, exclude_file=str(exclude))
    assert ranking.excluded == (excluded,)
    assert ranking.cases == ("ranktarget_tr001", "ranktarget_tr002", "ranktarget_tr003")
    by_name = {r.source: r for r in ranking.results}
    assert set(by_name) == {"same", other}                    # the path as given names it
    a, b = by_name["same"].compatibility, by_name[other].compatibility
    assert a.loaded == {"encoder": 1.0, "decoder": 1.0, "head": 1.0}
    assert a.shared_labels == ("organ",) and a.channels_matched == ("mri",)
    assert a.spacing_ratio == (1.0, 1.0, 1.0) and a.patch_ratio == (0.5, 0.5, 0.5)
    assert b.loaded["encoder"] == b.loaded["decoder"] == 1.0
    assert b.loaded["head"] == pytest.approx(0.5)            # background by name, organ fresh
    assert b.shared_labels == () and b.channels_matched == () and b.patch_ratio == (1, 1, 1)
    assert by_name[other].dice_as_is == {} and set(by_name["same"].dice_as_is) == {"organ"}
    # the voxels sampled: each case's quota of each class, where it has that many
    quota = math.ceil(DEFAULT_SAMPLES_PER_CLASS / 3)
    organ = [int(np.sum(sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(
        raw_target, "labelsTr", f"{c}.nii.gz"))) == 1)) for c in ranking.cases]
    assert by_name[other].voxels_per_class == {
        "background": 3 * quota, "organ": sum(min(n, quota) for n in organ)}
    for r in ranking.results:
        assert r.score == pytest.approx(np.mean(list(r.logme_per_class.values())), abs=1e-12)
    again = rank_sources("901", sources, exclude_file=str(exclude))
    assert [(r.source, r.score) for r in again.results] == [
        (r.source, r.score) for r in ranking.results]   # deterministic


@pytest.mark.skipif(not v1_available(), reason=V1_MISSING)
def test_a_v1_model_is_ranked_with_its_own_plans(raw_target, tmp_path):
    pools, kernels = [[2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3
    torch.manual_seed(0)
    folder = write_v1_model(str(tmp_path), v1_network(1, 2, pools, kernels),
                            v1_plans([16, 16, 16], [2.0, 1.0, 1.0], pools, kernels, {0: "MRI"}),
                            labels={"0": "background", "1": "organ"})
    (result,) = rank_sources("901", [CandidateSource.parse(f"v1={folder}")]).results
    c = result.compatibility
    assert c.loaded == {"encoder": 1.0, "decoder": 1.0, "head": 1.0}
    assert c.shared_labels == ("organ",) and c.channels_matched == ("mri",)
    assert c.spacing_ratio == (2.0, 1.0, 1.0)           # v1's spacing against the target's 1 mm
    assert c.patch_ratio == (1.0, 0.5, 0.5)             # 16 / (32 voxels at 2 mm: 16)
    assert math.isfinite(result.score) and set(result.dice_as_is) == {"organ"}


def _lfs_pointer(path: str) -> str:
    with open(path, "w") as f:
        f.write("version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32
                + "\nsize 123456\n")
    return path


def test_every_bad_input_is_refused_at_once(raw_target, tmp_path, capsys):
    torch.manual_seed(0)
    nnssl = str(tmp_path / "nnssl.pth")
    torch.save(nnssl_checkpoint(residual_unet(), {}, [32, 32, 32]), nnssl)
    garbage = str(tmp_path / "garbage.pth")
    _spoil(garbage)
    lfs = _lfs_pointer(str(tmp_path / "checkpoint_final.pth"))
    bare = str(tmp_path / "bare.pth")
    torch.save(plain_unet().state_dict(), bare)
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("ranktarget_tr000\nno_such_case\nbad id!\n")
    argv = ["rank-sources", "--target", "901", "--exclude-cases", str(exclude),
            f"gone={tmp_path / 'missing'}", lfs, garbage, nnssl, bare]
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    for words in ("gone", "does not exist", "Git LFS pointer", "git lfs pull",
                  "garbage.pth is not a readable PyTorch checkpoint", "nnssl checkpoint",
                  "bare state dict", "no_such_case", "line 3", "bad id!"):
        assert words in err, words
    assert "Traceback" not in err
    with pytest.raises(UserError) as refused:
        rank_sources("Dataset999_Nothing", [CandidateSource.parse(lfs)], max_cases=0,
                     exclude_file=str(tmp_path / "no_file.txt"))
    message = str(refused.value)
    for words in ("--target Dataset999_Nothing", "known: Dataset901_RankTarget", "--max-cases",
                  "no_file.txt cannot be read", "Git LFS pointer"):
        assert words in message, words


# -- the known answer, through the real commands -----------------------------------------------

SAME_ID, UNRELATED_ID, TARGET_ID = 821, 822, 823
# A few dozen steps: the same-task source segments the target well, the unrelated one has
# learned its tubes; fold "all" skips nnU-Net's final validation.
TRAINING = {"NNUNET_TRANSFER_EPOCHS": "4", "NNUNET_TRANSFER_ITERS": "10",
            "NNUNET_TRANSFER_VAL_ITERS": "1", "NNUNET_TRANSFER_SEED": "3",
            "nnUNet_n_proc_DA": "0", **ONE_THREAD}


@pytest.fixture(scope="module")
def known_answer(workspace) -> dict:
    write_synthetic_dataset(workspace.raw, SAME_ID, "RankOrgan", num_training=4, seed=11)
    write_unrelated_dataset(workspace.raw, UNRELATED_ID, "RankVessel", num_training=4, seed=12)
    target = write_synthetic_dataset(workspace.raw, TARGET_ID, "RankTarget", num_training=6,
                                     num_test=1, domain=LOW_QUALITY_DOMAIN, seed=13)

    def source(dataset_id: int, name: str) -> str:
        workspace.run("nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "3d_fullres",
                      "-np", "1", "-npfp", "1")
        workspace.run("nnunet-transfer", "small-plans", "-d", str(dataset_id))
        workspace.run("nnUNetv2_train", str(dataset_id), "3d_fullres", "all", "-p", SMALL_PLANS,
                      "-tr", "nnUNetTrainer_Scratch", "-device", "cpu", extra_env=TRAINING)
        return os.path.dirname(workspace.run_folder(
            f"Dataset{dataset_id}_{name}", "nnUNetTrainer_Scratch", SMALL_PLANS, fold="all"))

    # one source per core: each chain is mostly nnU-Net's start-up and its worker processes
    with ThreadPoolExecutor(max_workers=2) as pool:
        same = pool.submit(source, SAME_ID, "RankOrgan")
        unrelated = pool.submit(source, UNRELATED_ID, "RankVessel")
        models = {"same": same.result(), "unrelated": unrelated.result()}
    held_out = "ranktarget_tr000"   # the first case, which nnU-Net would read for its reader
    for folder, suffix in (("imagesTr", "_0000"), ("labelsTr", "")):
        _spoil(os.path.join(target, folder, f"{held_out}{suffix}.nii.gz"))
    exclude = os.path.join(workspace.root, "held_out.txt")
    with open(exclude, "w") as f:
        f.write(f"{held_out}\n")
    csv_path = os.path.join(workspace.root, "ranking.csv")
    result = workspace.run("nnunet-transfer", "rank-sources", "--target", str(TARGET_ID),
                           "--csv", csv_path, "--exclude-cases", exclude, "-device", "cpu",
                           f"unrelated={models['unrelated']}", f"same={models['same']}")
    return {"models": models, "target": target, "csv": csv_path, "stdout": result.stdout,
            "cases": [f"ranktarget_tr{i:03d}" for i in range(1, 6)]}


def _dice_by_nnunet_predictor(model: str, target: str, cases: list[str]) -> list[float]:
    """The organ Dice of each case by nnU-Net's own predictor (sliding window, no mirroring;
    one window covers these cases), against the raw labels: independent of our patches."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model, use_folds=("all",))
    dice = []
    for case in cases:
        image = sitk.ReadImage(os.path.join(target, "imagesTr", f"{case}_0000.nii.gz"))
        array = sitk.GetArrayFromImage(image)[None].astype(np.float32)
        properties = {"spacing": list(image.GetSpacing())[::-1]}
        predicted = predictor.predict_single_npy_array(array, properties, None, None, False) == 1
        reference = sitk.GetArrayFromImage(sitk.ReadImage(
            os.path.join(target, "labelsTr", f"{case}.nii.gz"))) == 1
        if reference.any() or predicted.any():
            dice.append(2 * np.sum(reference & predicted)
                        / (np.sum(reference) + np.sum(predicted)))
    return dice


def test_the_same_task_source_ranks_first_for_the_reasons_it_should(known_answer, workspace,
                                                                   monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", workspace.env["nnUNet_extTrainer"])
    ranking = read_ranking_csv(known_answer["csv"])
    same, unrelated = ranking.results
    assert (same.source, same.rank, unrelated.source, unrelated.rank) == (
        "same", 1, "unrelated", 2)
    assert same.score > unrelated.score + 0.1
    assert "same" in known_answer["stdout"] and "1 excluded" in known_answer["stdout"]
    for r in (same, unrelated):
        assert r.cases == 5                                  # the held-out case never read
        assert r.score == pytest.approx(np.mean(list(r.logme_per_class.values())), abs=1e-12)
        # one 32^3 patch is the whole case: each case's quota of each class, where it has it
        quota = math.ceil(DEFAULT_SAMPLES_PER_CLASS / 5)
        counts = [np.bincount(sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(
            known_answer["target"], "labelsTr", f"{c}.nii.gz"))).ravel(), minlength=2)
            for c in known_answer["cases"]]
        assert r.voxels_per_class == {"background": sum(min(int(n[0]), quota) for n in counts),
                                      "organ": sum(min(int(n[1]), quota) for n in counts)}
        assert r.compatibility.loaded["encoder"] == r.compatibility.loaded["decoder"] == 1.0
    assert same.compatibility.shared_labels == ("organ",)
    assert same.compatibility.loaded["head"] == 1.0
    assert unrelated.compatibility.shared_labels == ()
    assert unrelated.compatibility.loaded["head"] == pytest.approx(0.5)   # background only
    # the Dice as is: ours on the patches, nnU-Net's predictor on the whole cases
    expected = _dice_by_nnunet_predictor(known_answer["models"]["same"], known_answer["target"],
                                         known_answer["cases"])
    # (the command ran in another process with other threads: a voxel whose two logits nearly
    # tie may fall the other way; one voxel moves a case's Dice by about 1e-3 / 5 cases)
    assert same.dice_as_is["organ"] == pytest.approx(float(np.mean(expected)), abs=2e-3)
    assert same.dice_as_is["organ"] > 0.8
    assert unrelated.dice_as_is == {}
