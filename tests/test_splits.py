"""Few-shot and cross-site folds: nesting, the untouched test list, leave-one-site-out, refusals
and the protection of an existing splits_final.json."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nnunet_transfer.data.splits import INDEX_NAME, SPLITS_NAME, TEST_NAME, \
    cross_site_splits, few_shot_folds, few_shot_splits
from nnunet_transfer.errors import UserError

from support.data_commands import run_command

SITES = {"a": 8, "b": 6, "c": 4}   # cases per site


@pytest.fixture
def raw_dataset(tmp_path):
    """A raw dataset folder with 18 cases over 3 sites: what splitting reads (file names,
    dataset.json, sites.json), no image content needed."""
    folder = tmp_path / "raw" / "Dataset070_Sites"
    os.makedirs(folder / "imagesTr")
    os.makedirs(folder / "labelsTr")
    sites = {}
    for site, count in SITES.items():
        for i in range(count):
            case = f"{site}{i:02d}"
            sites[case] = site
            for name in (f"imagesTr/{case}_0000.nii.gz", f"labelsTr/{case}.nii.gz"):
                (folder / name).write_bytes(b"")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "organ": 1},
        "numTraining": len(sites), "file_ending": ".nii.gz"}))
    (folder / "sites.json").write_text(json.dumps(sites))
    return str(folder), sites


def load(folder, name):
    return json.load(open(os.path.join(folder, name)))


def test_few_shot_subsets_are_nested_and_never_touch_the_test_list(tmp_path, raw_dataset):
    source, sites = raw_dataset
    out = str(tmp_path / "pre")
    result = few_shot_splits(source, out, ns=[5, 2, 8], seeds=[0, 1], test_count=4, test_seed=7)
    splits, test = load(out, SPLITS_NAME), load(out, TEST_NAME)["test"]
    index = load(out, INDEX_NAME)["folds"]
    assert len(splits) == 6 and len(test) == 4 and not result.unchanged
    assert [(f["n"], f["seed"]) for f in index] == [(2, 0), (2, 1), (5, 0), (5, 1), (8, 0), (8, 1)]
    every = set(sites)
    for entry, fold in zip(index, splits):
        assert len(fold["train"]) == entry["n"] == entry["train"]
        assert set(fold["train"]) | set(fold["val"]) | set(test) == every    # val = the rest
        assert not set(fold["train"]) & set(fold["val"])
        assert not (set(fold["train"]) | set(fold["val"])) & set(test)
    for seed in (0, 1):
        subsets = [set(f["train"]) for f, e in zip(splits, index) if e["seed"] == seed]
        assert subsets[0] < subsets[1] < subsets[2]                           # 2 in 5 in 8
    assert splits[2]["train"] != splits[3]["train"]                            # seeds differ
    # The drawn list is reproducible: the seed's choice among the sorted cases.
    expected = sorted(np.random.default_rng(7).choice(sorted(sites), 4, replace=False))
    assert test == expected


def test_few_shot_fold_is_the_first_n_of_the_seeds_order():
    pool = [f"c{i}" for i in range(6)]
    order = [str(c) for c in np.random.default_rng(3).permutation(pool)]
    folds = few_shot_folds(pool, [2, 4], [3], max_val=1)
    assert folds[0].train == sorted(order[:2]) and folds[0].val == [order[2]]
    assert folds[1].train == sorted(order[:4]) and folds[1].val == [order[4]]


def test_later_runs_keep_the_test_list_and_refuse_to_replace_different_splits(tmp_path,
                                                                             raw_dataset):
    source, _ = raw_dataset
    out = str(tmp_path / "pre")
    few_shot_splits(source, out, ns=[2, 5], seeds=[0], test_count=4)
    test = load(out, TEST_NAME)["test"]
    assert few_shot_splits(source, out, ns=[2, 5], seeds=[0]).unchanged    # test list reused
    with pytest.raises(UserError) as error:
        few_shot_splits(source, out, ns=[2, 5, 8], seeds=[0])
    message = str(error.value)
    assert "already has different splits" in message and "has 2 folds, the new one 3" in message
    assert "--force" in message and len(load(out, SPLITS_NAME)) == 2        # untouched
    with pytest.raises(UserError, match=r"test_cases.json: 4 -> 5 held-out cases"):
        few_shot_splits(source, out, ns=[2, 5], seeds=[0], test_count=5, test_seed=1)
    result = few_shot_splits(source, out, ns=[2, 5, 8], seeds=[0], force=True)
    assert len(result.folds) == 3 and load(out, TEST_NAME)["test"] == test
    backups = [n for n in os.listdir(out) if n.startswith(SPLITS_NAME) and n.endswith(".bak")]
    assert len(backups) == 1 and len(load(out, backups[0])) == 2


def test_few_shot_refusals(tmp_path, raw_dataset):
    source, _ = raw_dataset
    out = str(tmp_path / "pre")
    with pytest.raises(UserError, match="need a held-out test list"):
        few_shot_splits(source, out, ns=[2], seeds=[0])
    with pytest.raises(UserError, match=r"--n 15: the train pool has 14 case\(s\).* 1 to 13"):
        few_shot_splits(source, out, ns=[2, 15], seeds=[0], test_count=4)
    with pytest.raises(UserError, match="unknown site.*zz; the dataset's sites are a, b, c"):
        few_shot_splits(source, out, ns=[2], seeds=[0], test_count=2, sites=["a", "zz"])
    listing = tmp_path / "test.txt"
    listing.write_text("a00\nnot_a_case\n")
    with pytest.raises(UserError, match="not_a_case are not cases of the dataset"):
        few_shot_splits(source, out, ns=[2], seeds=[0], test_file=str(listing))
    assert not os.path.exists(os.path.join(out, SPLITS_NAME))


def test_few_shot_within_one_site(tmp_path, raw_dataset):
    source, _ = raw_dataset
    out = str(tmp_path / "pre")
    few_shot_splits(source, out, ns=[1, 2], seeds=[0], test_count=1, sites=["c"])
    for fold in load(out, SPLITS_NAME):
        assert all(case.startswith("c") for case in fold["train"] + fold["val"])
        assert len(fold["train"]) + len(fold["val"]) == 3


def test_cross_site_fold_tests_on_the_other_site(tmp_path, raw_dataset):
    source, sites = raw_dataset
    out = str(tmp_path / "pre")
    result = cross_site_splits(source, out, test_site="c", train_sites=["a", "b"],
                               val_fraction=0.25)
    fold = load(out, SPLITS_NAME)[0]
    test = load(out, TEST_NAME)["test"]
    assert test == sorted(c for c, s in sites.items() if s == "c") and len(result.folds) == 1
    val_sites = [sites[c] for c in fold["val"]]
    assert val_sites.count("a") == 2 and val_sites.count("b") == 2     # 0.25 x 8, 0.25 x 6
    assert len(fold["train"]) == 10 and not set(fold["train"] + fold["val"]) & set(test)
    assert load(out, INDEX_NAME)["folds"][0]["test_site"] == "c"
    with pytest.raises(UserError, match="unknown site.*x; the dataset's sites are a, b, c"):
        cross_site_splits(source, str(tmp_path / "other"), test_site="x")
    with pytest.raises(UserError, match="both a training site and the test site"):
        cross_site_splits(source, str(tmp_path / "other"), test_site="a", train_sites=["a", "b"])


def test_leave_one_site_out(tmp_path, raw_dataset):
    source, sites = raw_dataset
    out = str(tmp_path / "pre")
    held_out = tmp_path / "held.json"
    held_out.write_text(json.dumps(["a00", "b00"]))
    cross_site_splits(source, out, test_site=None, test_file=str(held_out))
    splits, index = load(out, SPLITS_NAME), load(out, INDEX_NAME)["folds"]
    assert [e["test_site"] for e in index] == ["a", "b", "c"]
    assert load(out, TEST_NAME)["test"] == ["a00", "b00"]
    for fold, entry in zip(splits, index):
        left_out = entry["test_site"]
        used = fold["train"] + fold["val"]
        assert all(sites[c] != left_out for c in used)
        assert not {"a00", "b00"} & set(used + entry["test"])
        assert entry["test"] == sorted(c for c, s in sites.items()
                                       if s == left_out and c not in ("a00", "b00"))
        assert {sites[c] for c in fold["val"]} == set(SITES) - {left_out}


def test_cross_site_needs_sites(tmp_path, raw_dataset):
    source, _ = raw_dataset
    os.remove(os.path.join(source, "sites.json"))
    with pytest.raises(UserError, match="sites.json is missing or empty"):
        cross_site_splits(source, str(tmp_path / "pre"), test_site=None)


def test_splits_commands(tmp_path, raw_dataset, capsys, monkeypatch):
    source, _ = raw_dataset
    out = str(tmp_path / "pre")
    status, stdout, _ = run_command(["splits", "few-shot", "-d", source, "--out", out, "--n", "2",
                                     "5", "--seeds", "0", "1", "--test-count", "3"], capsys)
    assert status == 0 and "fold 3: few-shot n 5, seed 1: train 5, val 10" in stdout
    status, _, err = run_command(["splits", "few-shot", "-d", source, "--out", out, "--n", "2"],
                                 capsys)
    assert status == 2 and "already has different splits" in err and "Traceback" not in err
    status, stdout, _ = run_command(["splits", "loso", "-d", "70", "--raw",
                                     os.path.dirname(source), "--out", str(tmp_path / "l")],
                                    capsys)
    assert status == 0 and "fold 2: cross-site train_sites a+b, test_site c" in stdout
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    status, _, err = run_command(["splits", "cross-site", "-d", source, "--test-site", "c"],
                                 capsys)
    assert status == 2 and "give --out or export nnUNet_preprocessed" in err
