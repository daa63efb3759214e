"""The value rules: one wording per rule, whichever reader of user input applies it."""

from __future__ import annotations

import argparse
import math
from dataclasses import fields

import pytest

from nnunet_transfer.arguments import positive_int
from nnunet_transfer.errors import UserError
from nnunet_transfer.study.executors.slurm import check_slurm_options
from nnunet_transfer.training.budget import KNOBS, Budget
from nnunet_transfer.training.commands import register
from nnunet_transfer.value_rules import (
    BOOLEAN,
    POSITIVE_WHOLE_NUMBER,
    NotAllowed,
    choice,
    number,
    whole_number,
)

WORDS = "is not a whole number >= 1"


def test_one_rule_says_the_same_in_every_reader():
    with pytest.raises(argparse.ArgumentTypeError, match=f"^0 {WORDS}$"):
        positive_int("0")
    with pytest.raises(UserError, match=f"NNUNET_TRANSFER_EPOCHS='0' {WORDS}"):
        Budget.from_environment({"NNUNET_TRANSFER_EPOCHS": "0"})
    with pytest.raises(UserError, match=f"slurm.cpus_per_task: 0 {WORDS}"):
        check_slurm_options({"cpus_per_task": 0}, require_time=False)
    with pytest.raises(NotAllowed, match=f"^0 {WORDS}$"):
        POSITIVE_WHOLE_NUMBER.check(0)


@pytest.mark.parametrize("rule, value, words", [
    (whole_number(1, 999), 1000, "1000 is not a whole number from 1 to 999"),
    (whole_number(0), True, "True is not a whole number >= 0"),
    (whole_number(0), 1.5, "1.5 is not a whole number >= 0"),
    (number(above=0, at_most=1), 0, "0 is not a number > 0 and <= 1"),
    (number(at_least=0, below=1), math.nan, "nan is not a number >= 0 and < 1"),
    (number(above=0), math.inf, "inf is not a number > 0"),
    (BOOLEAN, "yes", "'yes' is not true or false"),
    (choice(("local", "slurm")), "slurmm",
     "'slurmm' is not known (did you mean slurm?); choose from local, slurm"),
])
def test_refusals_name_the_value_and_what_it_must_be(rule, value, words):
    with pytest.raises(NotAllowed) as refusal:
        rule.check(value)
    assert str(refusal.value) == words


def test_a_text_that_is_no_number_is_not_a_refusal():
    """The callers say "is not a number" (argparse: "invalid ... value") for these."""
    with pytest.raises(ValueError) as error:
        POSITIVE_WHOLE_NUMBER.parse("ten")
    assert not isinstance(error.value, NotAllowed)
    assert POSITIVE_WHOLE_NUMBER.parse("12") == 12 and number(above=0).parse("2") == 2.0


def test_knobs_are_the_fields_of_budget_and_env_offers_each():
    assert [k.field for k in KNOBS] == [f.name for f in fields(Budget)]
    assert {k.field: k.default for k in KNOBS} == Budget().as_dict()
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    env = parser.parse_args(["env", "--lora-rank", "8", "--snapshot-every", "0"])
    assert (env.lora_rank, env.snapshot_every) == ("8", "0")
