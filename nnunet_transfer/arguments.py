"""Value types of the command line and of the budget knobs, each rule written once; and
`add_command`, the one way a subcommand is bound to its handler.

Two forms share the rules. A *value parser* (`positive_whole_number`, `one_of`, ...) turns a
text into a value or raises ValueError: `NotAllowed` when the text is a value of the right kind
that is not allowed, its message "must be ..."; the budget knobs read these. An *argparse type*
(`positive_int`, `fraction`, ...) is made from a parser by `argparse_type`: a refused value
becomes argparse's "argument X: <complaint>", a text that is no number at all keeps argparse's
own "invalid <name> value: 'text'".
"""

from __future__ import annotations

import argparse
from typing import Callable, TypeVar

T = TypeVar("T")


class NotAllowed(ValueError):
    """A value of the right kind that is not allowed; the message says what it must be."""


def _rule(convert: Callable[[str], T], allowed: Callable[[T], bool], must: str
          ) -> Callable[[str], T]:
    def parse(text: str) -> T:
        value = convert(text)
        if not allowed(value):
            raise NotAllowed(f"must be {must}")
        return value
    return parse


# A comparison is False for NaN, so NaN is refused by every rule.
positive_whole_number = _rule(int, lambda v: v >= 1, "a positive whole number")
non_negative_whole_number = _rule(int, lambda v: v >= 0, "0 or a positive whole number")
positive_number = _rule(float, lambda v: v > 0, "a positive number")


def one_of(*choices: str) -> Callable[[str], str]:
    """A value parser accepting exactly the texts `choices`."""
    return _rule(str, lambda v: v in choices, f"one of {', '.join(choices)}")


def argparse_type(parse: Callable[[str], T], name: str, complaint: str) -> Callable[[str], T]:
    """The argparse type of value parser `parse`: a NotAllowed value is refused with
    `complaint` ({text} is the text given). argparse names the type by `name` in its
    "invalid <name> value" message, so the name is part of what the user sees."""
    def convert(text: str) -> T:
        try:
            return parse(text)
        except NotAllowed:
            raise argparse.ArgumentTypeError(complaint.format(text=text)) from None
    convert.__name__ = convert.__qualname__ = name
    return convert


def _count_or_all(text: str) -> int | None:
    return None if text.lower() == "all" else positive_whole_number(text)


# The names are those the "invalid <name> value" messages have always shown.
positive_int = argparse_type(positive_whole_number, "positive_int",
                             "{text} is not a positive whole number")
non_negative_float = argparse_type(_rule(float, lambda v: v >= 0, ">= 0"),
                                   "_non_negative_float", "{text} is not >= 0")
fraction = argparse_type(_rule(float, lambda v: 0 < v < 1, "between 0 and 1"), "_fraction",
                         "{text} is not between 0 and 1")
count_or_all = argparse_type(_count_or_all, "_voxels", "{text}: give a positive number or 'all'")


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
