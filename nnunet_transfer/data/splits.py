"""Folds for transfer studies in nnU-Net's splits_final.json: few-shot subsets and cross-site.

Three files are written into the preprocessed dataset folder (where nnU-Net reads its splits):

    splits_final.json   nnU-Net's list of {"train": [...], "val": [...]}, one entry per fold
    test_cases.json     {"test": [...]}: held-out cases that no fold trains or validates on
    fold_index.json     which fold is what, e.g. {"fold": 3, "kind": "few-shot", "n": 5, "seed": 1}

Few-shot: for every n and seed a fold whose train set is n cases of the train pool and whose
validation set is the rest of the pool (or its first --max-val cases). Per seed the pool is
shuffled once and every n takes the first n cases of that order, so the subsets are nested:
the n = 5 subset of a seed contains its n = 2 subset. The test list is fixed: drawn once (or
given), kept in test_cases.json and reused by later runs, and excluded from every fold.

Cross-site: train on some sites and test on another one; leave-one-site-out makes one such fold
per site. The validation cases are drawn from the training sites, per site, so that every
training site is represented. Sites come from the raw dataset's sites.json.

An existing file that differs from the new one is never replaced silently: the command stops and
says what differs, unless --force (then the old file is kept as <name>.<time>.bak).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from nnunet_transfer.data.raw_dataset import read_dataset_json, read_sites
from nnunet_transfer.errors import UserError
from nnunet_transfer.atomic_files import atomic_write_json

SPLITS_NAME = "splits_final.json"
TEST_NAME = "test_cases.json"
INDEX_NAME = "fold_index.json"


@dataclass
class Fold:
    train: list[str]
    val: list[str]
    info: dict                                     # kind and parameters, for fold_index.json
    test: list[str] = field(default_factory=list)  # this fold's own test cases (cross-site)


@dataclass
class SplitsResult:
    folder: str
    folds: list[Fold]
    test: list[str]
    unchanged: bool

    def summary(self) -> str:
        verb = "unchanged" if self.unchanged else "written"
        lines = [f"{os.path.join(self.folder, SPLITS_NAME)} {verb}: {len(self.folds)} fold(s); "
                 f"{len(self.test)} held-out test case(s) in {TEST_NAME}"]
        for index, fold in enumerate(self.folds):
            info = ", ".join(f"{k} {'+'.join(v) if isinstance(v, list) else v}"
                             for k, v in fold.info.items() if k != "kind")
            extra = f", test {len(fold.test)}" if fold.test else ""
            lines.append(f"  fold {index}: {fold.info['kind']} {info}: train {len(fold.train)}, "
                         f"val {len(fold.val)}{extra}")
        return "\n".join(lines)


# -- the cases and their sites ----------------------------------------------------------------

def dataset_cases(raw_dataset_folder: str) -> list[str]:
    """The training case ids of a raw dataset, as nnU-Net lists them (its identifier listing,
    without the process pool nnU-Net's full file listing starts)."""
    from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder
    dataset_json = read_dataset_json(raw_dataset_folder)
    if "dataset" in dataset_json:
        return sorted(dataset_json["dataset"])
    return sorted(str(c) for c in get_identifiers_from_splitted_dataset_folder(
        os.path.join(raw_dataset_folder, "imagesTr"), dataset_json["file_ending"]))


def cases_by_site(cases: list[str], sites: dict[str, str], where: str) -> dict[str, list[str]]:
    missing = [c for c in cases if c not in sites]
    if missing:
        raise UserError(f"{len(missing)} case(s) have no site in {where} (e.g. "
                        f"{', '.join(missing[:3])}); cross-site splits need a site for every case")
    grouped: dict[str, list[str]] = {}
    for case in cases:
        grouped.setdefault(sites[case], []).append(case)
    return grouped


def _known_sites(names: list[str], grouped: dict[str, list[str]], option: str) -> list[str]:
    unknown = sorted(set(names) - set(grouped))
    if unknown:
        raise UserError(f"{option}: unknown site(s) {', '.join(unknown)}; the dataset's sites "
                        f"are {', '.join(sorted(grouped))}")
    return sorted(set(names))


# -- the held-out test list ---------------------------------------------------------------------

def read_case_list(path: str) -> list[str]:
    """Case ids from a JSON list, a JSON {"test": [...]} or a text file with one id per line."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as error:
        raise UserError(f"cannot read the case list {path}: {error.strerror}") from None
    try:
        content = json.loads(text)
    except ValueError:
        content = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(content, dict):
        content = content.get("test")
    if not isinstance(content, list) or not all(isinstance(c, str) for c in content):
        raise UserError(f"{path}: expected a list of case ids (JSON list, {{\"test\": [...]}} or "
                        "one id per line)")
    return sorted(set(content))


def held_out_cases(cases: list[str], folder: str, count: int | None, seed: int,
                   test_file: str | None, reuse_existing: bool = True) -> list[str]:
    """The fixed test list: from `test_file`, drawn (`count` cases, `seed`), or (with
    `reuse_existing`) the one already in `folder`'s test_cases.json, so that later runs keep it;
    empty if none of these."""
    if test_file and count is not None:
        raise UserError("give either --test-file or --test-count, not both")
    if test_file:
        test = read_case_list(test_file)
        unknown = sorted(set(test) - set(cases))
        if unknown:
            raise UserError(f"{test_file}: case(s) {', '.join(unknown[:5])} are not cases of the "
                            "dataset (or not in the chosen sites)")
        return test
    if count is not None:
        if not 1 <= count <= len(cases) - 2:
            raise UserError(f"--test-count {count}: between 1 and {len(cases) - 2} for "
                            f"{len(cases)} cases (at least 2 must stay for training and "
                            "validation)")
        return sorted(map(str, np.random.default_rng(seed).choice(sorted(cases), count,
                                                                  replace=False)))
    existing = os.path.join(folder, TEST_NAME)
    if reuse_existing and os.path.isfile(existing):
        test = read_case_list(existing)
        unknown = sorted(set(test) - set(cases))
        if unknown:
            raise UserError(f"{existing} lists case(s) {', '.join(unknown[:5])} that are not "
                            "among the cases to split; give --test-count or --test-file (and "
                            "--force to replace it)")
        return test
    return []


# -- the folds -----------------------------------------------------------------------------------

def few_shot_folds(pool: list[str], ns: list[int], seeds: list[int],
                   max_val: int | None = None) -> list[Fold]:
    """A fold per (n, seed), n outer: train n cases, val the rest of `pool` (nested per seed)."""
    ns, seeds = sorted(set(ns)), sorted(set(seeds))
    if not ns or not seeds:
        raise UserError("give at least one --n and one --seeds value")
    if ns[0] < 1 or ns[-1] > len(pool) - 1:
        raise UserError(f"--n {ns[0] if ns[0] < 1 else ns[-1]}: the train pool has {len(pool)} "
                        f"case(s) (after the held-out test cases), so n can be 1 to "
                        f"{len(pool) - 1} (one case at least must stay for validation)")
    if seeds[0] < 0:
        raise UserError(f"--seeds {seeds[0]}: seeds are whole numbers >= 0")
    if max_val is not None and max_val < 1:
        raise UserError(f"--max-val {max_val}: at least 1")
    orders = {seed: [str(c) for c in np.random.default_rng(seed).permutation(sorted(pool))]
              for seed in seeds}
    folds = []
    for n in ns:
        for seed in seeds:
            rest = orders[seed][n:]
            folds.append(Fold(sorted(orders[seed][:n]), sorted(rest[:max_val] if max_val else rest),
                              {"kind": "few-shot", "n": n, "seed": seed}))
    return folds


def site_fold(grouped: dict[str, list[str]], train_sites: list[str], test_site: str,
              val_fraction: float, seed: int) -> Fold:
    """Train (and validate) on `train_sites`, test on `test_site`; validation cases are drawn per
    training site: round(val_fraction x its cases), at least 1 where the site has 2 or more."""
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction}: between 0 and 1 (e.g. 0.2)")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for site in sorted(train_sites):
        order = [str(c) for c in rng.permutation(sorted(grouped[site]))]
        k = min(max(1, round(val_fraction * len(order))), len(order) - 1)
        val += order[:k]
        train += order[k:]
    if not val or not train:
        raise UserError(f"the training site(s) {', '.join(train_sites)} have too few cases for "
                        "a training and a validation set")
    return Fold(sorted(train), sorted(val),
                {"kind": "cross-site", "train_sites": sorted(train_sites), "test_site": test_site},
                sorted(grouped[test_site]))


def cross_site_folds(cases: list[str], sites: dict[str, str], test_site: str,
                     train_sites: list[str] | None, val_fraction: float, seed: int,
                     where: str) -> list[Fold]:
    grouped = cases_by_site(cases, sites, where)
    test_site = _known_sites([test_site], grouped, "--test-site")[0]
    train_sites = _known_sites(train_sites, grouped, "--train-sites") if train_sites else \
        sorted(set(grouped) - {test_site})
    if test_site in train_sites:
        raise UserError(f"site {test_site} is both a training site and the test site")
    if not train_sites:
        raise UserError(f"the dataset has only the site {test_site}; cross-site splits need two")
    return [site_fold(grouped, train_sites, test_site, val_fraction, seed)]


def leave_one_site_out_folds(cases: list[str], sites: dict[str, str], val_fraction: float,
                             seed: int, where: str) -> list[Fold]:
    grouped = cases_by_site(cases, sites, where)
    if len(grouped) < 2:
        raise UserError(f"leave-one-site-out needs at least 2 sites; the dataset has "
                        f"{', '.join(grouped) or 'none'}")
    return [site_fold(grouped, sorted(set(grouped) - {site}), site, val_fraction, seed)
            for site in sorted(grouped)]


# -- writing -----------------------------------------------------------------------------------

def write_splits(folder: str, folds: list[Fold], test: list[str], force: bool = False
                 ) -> SplitsResult:
    """Write the three files, refusing to replace a differing one without `force`."""
    touched = set(test) & {c for f in folds for c in f.train + f.val}
    if touched:   # a bug guard: every builder excludes the held-out list
        raise RuntimeError(f"held-out cases in a fold: {sorted(touched)[:5]}")
    contents = {
        SPLITS_NAME: [{"train": f.train, "val": f.val} for f in folds],
        TEST_NAME: {"test": sorted(test)},
        INDEX_NAME: {"folds": [{"fold": i, **f.info, "train": len(f.train), "val": len(f.val),
                                **({"test": f.test} if f.test else {})}
                               for i, f in enumerate(folds)]},
    }
    existing = {name: _read_json(os.path.join(folder, name)) for name in contents}
    differing = [name for name in contents
                 if existing[name] is not None and existing[name] != contents[name]]
    if differing and not force:
        details = [d for name in differing for d in _differences(name, existing[name],
                                                                   contents[name])]
        raise UserError(f"{folder} already has different splits; not replaced: "
                        + "; ".join(details[:6]) + ("; ..." if len(details) > 6 else "")
                        + ". Add --force to replace them (the old files are kept as .bak)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in differing:
        path = os.path.join(folder, name)
        os.replace(path, f"{path}.{stamp}.bak")
    for name, content in contents.items():
        if existing[name] != content:
            atomic_write_json(os.path.join(folder, name), content)
    unchanged = all(existing[name] == contents[name] for name in contents)
    return SplitsResult(folder, folds, sorted(test), unchanged)


def _read_json(path: str):
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the existing {path} ({error}); move it away or fix it") \
            from None


def _differences(name: str, old, new) -> list[str]:
    if name == SPLITS_NAME and isinstance(old, list):
        out = [] if len(old) == len(new) else [f"{name} has {len(old)} folds, the new one "
                                                 f"{len(new)}"]
        for index, (a, b) in enumerate(zip(old, new)):
            for part in ("train", "val"):
                before, after = set(a.get(part, [])), set(b[part])
                if before != after:
                    out.append(f"fold {index} {part}: {len(before)} -> {len(after)} cases "
                               f"({len(after - before)} added, {len(before - after)} removed)")
        return out
    if name == TEST_NAME and isinstance(old, dict):
        before, after = set(old.get("test", [])), set(new["test"])
        return [f"{name}: {len(before)} -> {len(after)} held-out cases ({len(after - before)} "
                f"added, {len(before - after)} removed)"]
    return [f"{name} describes other folds"]


# -- from a dataset to the files ---------------------------------------------------------------

def few_shot_splits(raw_dataset_folder: str, out_folder: str, ns: list[int], seeds: list[int],
                    test_count: int | None = None, test_seed: int = 0,
                    test_file: str | None = None, sites: list[str] | None = None,
                    max_val: int | None = None, force: bool = False) -> SplitsResult:
    """Few-shot folds of a raw dataset (optionally of some sites only) into `out_folder`."""
    cases = dataset_cases(raw_dataset_folder)
    if sites:
        grouped = cases_by_site(cases, read_sites(raw_dataset_folder),
                                os.path.join(raw_dataset_folder, "sites.json"))
        cases = sorted(c for site in _known_sites(sites, grouped, "--sites") for c in grouped[site])
    test = held_out_cases(cases, out_folder, test_count, test_seed, test_file)
    if not test:
        raise UserError("few-shot splits need a held-out test list: give --test-count N (drawn "
                        "with --test-seed) or --test-file FILE; later runs reuse it")
    pool = sorted(set(cases) - set(test))
    return write_splits(out_folder, few_shot_folds(pool, ns, seeds, max_val), test, force)


def cross_site_splits(raw_dataset_folder: str, out_folder: str, test_site: str | None,
                      train_sites: list[str] | None = None, val_fraction: float = 0.2,
                      seed: int = 0, test_count: int | None = None, test_seed: int = 0,
                      test_file: str | None = None, force: bool = False) -> SplitsResult:
    """One cross-site fold (`test_site` given) or leave-one-site-out folds (None). With
    leave-one-site-out an extra held-out list (--test-count/--test-file) is optional."""
    cases = dataset_cases(raw_dataset_folder)
    sites = read_sites(raw_dataset_folder)
    where = os.path.join(raw_dataset_folder, "sites.json")
    if not sites:
        raise UserError(f"{where} is missing or empty; cross-site splits need the site of every "
                        "case (convert with a site column or {site} pattern, or pool datasets)")
    if test_site is not None:
        if test_count is not None or test_file:
            raise UserError("with --test-site the test cases are that site's; drop --test-count "
                            "and --test-file")
        folds = cross_site_folds(cases, sites, test_site, train_sites, val_fraction, seed, where)
        return write_splits(out_folder, folds, folds[0].test, force)
    # Not reused implicitly: a test list left by another kind of split would drop cases here.
    test = held_out_cases(cases, out_folder, test_count, test_seed, test_file,
                          reuse_existing=False)
    remaining = sorted(set(cases) - set(test))
    folds = leave_one_site_out_folds(remaining, sites, val_fraction, seed, where)
    return write_splits(out_folder, folds, test, force)
