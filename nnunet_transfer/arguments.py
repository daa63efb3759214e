"""The command line's value types, made from the rules of `value_rules` (one wording for one
rule everywhere); and `add_command`, the one way a subcommand is bound to its handler.

An argparse type made by `argparse_type` refuses a value its rule does not allow with
argparse's "argument X: <value> is not ..."; a text that is no value of the rule's kind at all
keeps argparse's own "invalid <name> value: 'text'".
"""

from __future__ import annotations

import argparse
from typing import Callable

from nnunet_transfer.value_rules import (
    NotAllowed,
    OPEN_FRACTION,
    POSITIVE_WHOLE_NUMBER,
    POSITIVE_WHOLE_NUMBER_OR_ALL,
    ValueRule,
)


def argparse_type(rule: ValueRule, name: str) -> Callable[[str], object]:
    """The argparse type of `rule`. argparse names the type by `name` in its "invalid <name>
    value" message, so the name is part of what the user sees."""
    def convert(text: str):
        try:
            return rule.parse(text)
        except NotAllowed as refusal:
            raise argparse.ArgumentTypeError(f"{text} {refusal}") from None
    convert.__name__ = convert.__qualname__ = name
    return convert


# The names are those the "invalid <name> value" messages have always shown.
positive_int = argparse_type(POSITIVE_WHOLE_NUMBER, "positive_int")
fraction = argparse_type(OPEN_FRACTION, "_fraction")
count_or_all = argparse_type(POSITIVE_WHOLE_NUMBER_OR_ALL, "_voxels")


def case_ids(text: str) -> tuple[str, ...]:
    """The argparse type of a list of case ids like `case_001,case_004` (at least one)."""
    ids = tuple(c.strip() for c in text.split(",") if c.strip())
    if not ids:
        raise argparse.ArgumentTypeError("give case ids separated by commas")
    return ids


def add_command(subparsers, name: str, handler: Callable[[argparse.Namespace], None],
                help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add subcommand `name` that runs `handler(args)` (cli.main calls `args.func`)."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(func=handler)
    return parser
