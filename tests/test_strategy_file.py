"""Custom strategy files: the documented examples are the built-in strategies, every mistake is
reported with its line, and the study file takes the new names and a custom file."""

from __future__ import annotations

import os
import re
import textwrap

import pytest

from nnunet_transfer.errors import UserError
from nnunet_transfer.study.study_file import load_study
from nnunet_transfer.training.strategies import BY_TRAINER_NAME, CUSTOM_TRAINER
from nnunet_transfer.training.strategy_file import parse_strategy, read_strategy_file

GUIDE = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "how_to",
                     "add_a_strategy_file.md")


def documented_examples() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", open(GUIDE).read(), flags=re.S)


@pytest.mark.parametrize("example", documented_examples(),
                         ids=lambda t: t.split("name: ")[1].split()[0])
def test_documented_examples_are_the_built_in_strategies(example):
    strategy = parse_strategy(example, "add_a_strategy_file.md")
    built_in = BY_TRAINER_NAME[f"nnUNetTrainer_{strategy.name}"]
    assert strategy.schedule.as_json() == built_in.schedule.as_json()
    assert (strategy.pretrained, strategy.lr_factor) == (built_in.pretrained, built_in.lr_factor)
    assert strategy.frozen_parts == built_in.frozen_parts
    assert strategy.trainer_name == CUSTOM_TRAINER


def test_every_mistake_is_reported_with_its_line():
    text = textwrap.dedent("""\
        name: Broken
        pretrained: maybe
        phases:
          - name: probe
            train:
              - parts: [encodr]
                lr: -1
          - name: probe
            fraction: 1.5
            warmup_epochs: 2
            warmup_fraction: 0.1
            per_stage: head
            train:
              - kinds: [weights, bias]
                stages: first
                color: red
            adapters: {rank: 0}
        """)
    with pytest.raises(UserError) as error:
        parse_strategy(text, "mine.yaml")
    message = str(error.value)
    expected = [
        "mine.yaml:2: pretrained: 'maybe' is not known",
        "mine.yaml:4: phases.0: give the phase's length",
        "mine.yaml:6: phases.0.train.0.parts: 'encodr' is not known (did you mean encoder?)",
        "mine.yaml:7: phases.0.train.0.lr: -1 is not a number >= 0",
        "mine.yaml:8: phases.1.name: 'probe' is the name of phase 1 too",
        "mine.yaml:9: phases.1.fraction: 1.5 is not a number > 0 and <= 1",
        "mine.yaml:11: phases.1.warmup_fraction: give warmup_epochs or warmup_fraction",
        "mine.yaml:12: phases.1.per_stage: 'head' is not known",
        "mine.yaml:14: phases.1.train.0.kinds: 'bias' is not known (did you mean biases?)",
        "mine.yaml:15: phases.1.train.0.stages: 'first' is not a list of stage indices",
        "mine.yaml:16: phases.1.train.0.color: unknown key",
        "mine.yaml:17: phases.1.adapters.rank: 0 is not a whole number >= 1",
    ]
    for line in expected:
        assert line in message, line
    assert "12 mistakes" in message


def test_unreadable_or_invalid_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="NNUNET_TRANSFER_STRATEGY_FILE"):
        read_strategy_file(None)
    with pytest.raises(UserError, match="cannot read the strategy file"):
        read_strategy_file(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: X\nphases:\n  - name: [a\n")
    with pytest.raises(UserError, match=r"bad.yaml:\d+: not valid YAML"):
        read_strategy_file(str(bad))


STUDY = """\
study: scheduled
datasets:
  src: {{id: 801, name: Src, synthetic: {{cases: 6}}}}
  tgt: {{id: 802, name: Tgt, synthetic: {{cases: 9, low_quality: true}}}}
source: src
target: tgt
seeds: [0, 1]
strategies: [Scratch, LinearProbeThenFineTune, LoRA, {custom}]
"""


def test_study_file_takes_the_new_names_and_one_custom_file(tmp_path):
    (tmp_path / "mine.yaml").write_text(documented_examples()[2].replace(
        "LinearProbeThenFineTune", "MyLPFT"))
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(custom="mine.yaml"))
    spec = load_study(str(study))
    assert [s.name for s in spec.strategies] == ["Scratch", "LinearProbeThenFineTune", "LoRA",
                                                 "MyLPFT"]
    assert spec.strategies[3].file == str(tmp_path / "mine.yaml")
    study.write_text(STUDY.format(custom="mine.yaml, other.yaml"))
    with pytest.raises(UserError, match=r"study.yaml:8: strategies: .*other.yaml"):
        load_study(str(study))
    (tmp_path / "other.yaml").write_text(documented_examples()[4])
    with pytest.raises(UserError, match="at most one custom strategy file"):
        load_study(str(study))
