"""A small valid study file, and writing study-file text into a test's folder."""

from __future__ import annotations

import textwrap


def write_study_text(tmp_path, text: str, name: str = "study.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


SMALL_STUDY = """\
    study: small
    datasets:
      src: {id: 801, name: Src, synthetic: {cases: 6}}
      tgt: {id: 802, name: Tgt, synthetic: {cases: 9, low_quality: true}}
    source: src
    target: tgt
    test_cases: 3
    sizes: [2, all]
    seeds: [0, 1]
    strategies: [Scratch, FineTune, FrozenEncoder]
    architectures: [unet, karimi]
"""
