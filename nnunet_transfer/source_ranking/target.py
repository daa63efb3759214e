"""The target of a ranking: a raw nnU-Net dataset, its labelled training cases, and the cases
a user leaves out (`--exclude-cases FILE`, e.g. a study's held-out test cases: never read).

Only imagesTr / labelsTr are used; imagesTs is never read. Which cases are scored is decided
here, from file names alone, before any image is opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from nnunet_transfer.data.raw_dataset import case_id_problem, find_dataset, read_dataset_json
from nnunet_transfer.errors import UserError

# Which training cases a ranking scores when there are more than max_cases: a seeded draw,
# the same for every source and every run.
CASE_SEED = 0
DEFAULT_MAX_CASES = 10


@dataclass(frozen=True)
class RankingTarget:
    """A raw dataset's labelled training cases that a ranking may read.

    Attributes:
        name: DatasetXXX_Name.
        folder: its raw folder.
        dataset_json: its dataset.json.
        cases: case id -> {"images": [file per channel], "label": file}, sorted by id, the
            excluded cases left out.
        excluded: the ids left out (those of the exclude file that are training cases).
    """

    name: str
    folder: str
    dataset_json: dict
    cases: dict[str, dict]
    excluded: tuple[str, ...]

    def chosen(self, max_cases: int) -> dict[str, dict]:
        """At most `max_cases` of the cases: all of them, or a seeded draw (sorted by id)."""
        ids = sorted(self.cases)
        if len(ids) > max_cases:
            picked = np.random.default_rng(CASE_SEED).choice(len(ids), max_cases, replace=False)
            ids = [ids[i] for i in sorted(picked)]
        return {i: self.cases[i] for i in ids}

    @property
    def labels(self) -> dict:
        return self.dataset_json["labels"]


def read_exclude_file(path: str) -> tuple[list[str], list[str]]:
    """(case ids, problems) of a text file with one case id a line; blank lines and lines
    starting with # are skipped, a trailing .nii.gz (or _0000.nii.gz) is dropped."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        return [], [f"--exclude-cases {path} cannot be read ({type(error).__name__}: "
                    f"{getattr(error, 'strerror', None) or error}); give a text file with one "
                    "case id a line"]
    ids, problems = [], []
    for number, line in enumerate(lines, 1):
        case = line.strip()
        if not case or case.startswith("#"):
            continue
        for ending in ("_0000.nii.gz", ".nii.gz"):
            if case.endswith(ending):
                case = case[:-len(ending)]
                break
        problem = case_id_problem(case)
        if problem:
            problems.append(f"--exclude-cases {path} line {number}: {problem}")
        else:
            ids.append(case)
    return ids, problems


def _test_case_ids(folder: str, file_ending: str) -> set[str]:
    images = os.path.join(folder, "imagesTs")
    if not os.path.isdir(images):
        return set()
    return {f[:-len(file_ending)].rsplit("_", 1)[0] for f in os.listdir(images)
            if f.endswith(file_ending)}


def read_target(dataset: str, exclude_cases: tuple[str, ...] = (),
                exclude_file: str | None = None) -> tuple[RankingTarget | None, list[str]]:
    """The target `dataset` (id, DatasetXXX_Name or folder, looked up in nnUNet_raw) without
    the cases of `exclude_cases` and of `exclude_file`; with every problem found (then the
    target is None when it cannot be read at all). An excluded id that is neither a training
    nor a test case is a problem (most likely a typo that would let a case through)."""
    problems: list[str] = []
    ids = list(exclude_cases)
    if exclude_file is not None:
        read, file_problems = read_exclude_file(exclude_file)
        ids += read
        problems += file_problems
    try:
        folder = find_dataset(os.environ.get("nnUNet_raw"), str(dataset))
        dataset_json = read_dataset_json(folder)
    except UserError as error:
        return None, [f"--target {dataset}: {error}"] + problems
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    try:
        cases = get_filenames_of_train_images_and_targets(folder, dataset_json)
    except (OSError, KeyError) as error:
        return None, [f"--target {dataset}: cannot list its training cases in {folder} "
                      f"({type(error).__name__}: {error})"] + problems
    known = set(cases) | _test_case_ids(folder, dataset_json["file_ending"])
    unknown = sorted(set(ids) - known)
    if unknown:
        where = f"--exclude-cases {exclude_file}" if exclude_file else "the excluded cases"
        problems.append(f"{where}: {', '.join(unknown[:10])}"
                        f"{' ...' if len(unknown) > 10 else ''} {'is' if len(unknown) == 1 else 'are'}"
                        f" no case of {os.path.basename(folder)} (neither in imagesTr nor "
                        "imagesTs); fix the ids, so that no case you meant to hold out is read")
    excluded = tuple(sorted(set(ids) & set(cases)))
    kept = {c: cases[c] for c in sorted(cases) if c not in excluded}
    missing_labels = [c for c, files in kept.items() if not os.path.isfile(files["label"])]
    if missing_labels:
        problems.append(f"--target {dataset}: training case(s) without a label file in labelsTr: "
                        f"{', '.join(missing_labels[:5])}")
    if not kept:
        problems.append(f"--target {dataset}: no labelled training case is left to score "
                        f"({len(excluded)} excluded of {len(cases)})")
    return RankingTarget(os.path.basename(folder), folder, dataset_json, kept, excluded), problems
