"""The study's setup makes its datasets and splits by calling the data functions (no command of
its own in a subprocess): synthetic, degraded, pooled and subset datasets land in nnU-Net's raw
folder, each step's words in its log, and the few-shot splits in the preprocessed folder."""

from __future__ import annotations

import json
import os
import textwrap

from nnunet_transfer.data.splits import INDEX_NAME, dataset_cases
from nnunet_transfer.study.setup import StudySetup
from nnunet_transfer.study.study_file import load_study

STUDY = """\
    study: setup
    datasets:
      src: {id: 811, name: Src, synthetic: {cases: 5, shape: [16, 16, 16]}}
      low: {id: 812, name: Low, degrade: src, seed: 1}
      few: {id: 813, name: Few, subset: src, count: 3, seed: 0}
      both: {id: 814, name: Both, pool: [src, low]}
    source: few
    target: both
    test_cases: 2
    sizes: [2]
    seeds: [0, 1]
    strategies: [Scratch]
    analyses: [convergence]
"""


def test_data_steps_make_datasets_and_splits_without_commands(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY))
    spec = load_study(str(path))
    setup = StudySetup(spec, processes=1)
    setup.command = None   # a data step that still ran a command would fail here
    os.makedirs(setup.layout.path("setup"))
    for key in setup._dataset_order():
        setup.make_dataset(spec.datasets[key])
    cases = {key: len(dataset_cases(setup.raw_folder(key))) for key in spec.datasets}
    assert cases == {"src": 5, "low": 5, "few": 3, "both": 10}
    setup.write_splits()
    with open(os.path.join(setup.preprocessed_folder("both"), INDEX_NAME)) as f:
        index = json.load(f)
    assert {(fold["n"], fold["seed"]) for fold in index["folds"]} == {(2, 0), (2, 1)}
    for step in ("dataset_src", "dataset_low", "dataset_both", "splits"):
        with open(setup.layout.path("setup", f"{step}.log")) as f:
            assert f.read().strip(), step
