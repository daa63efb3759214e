"""The rules for single values a user gives, each with its wording, written once: the command
line's types (`arguments`), the budget knobs of the environment, the study file, the strategy
file, the SLURM options and the executor settings all check their values with these.

A `ValueRule` says which values it allows and what it says of one it refuses, always in one
shape: "<value> is not <what it must be>" ("0 is not a whole number >= 1", "'slurmm' is not
known (did you mean slurm?); choose from ..."). It reads a value two ways:

- `rule.check(value)` (or `rule(value)`): a value as YAML or Python gives it; it is returned
  (normalised where the rule says) or refused with `NotAllowed`, its message naming the value;
- `rule.parse(text)`: a text (an option, an environment variable); a text that is no value of
  the rule's kind at all ("ten" for a number) raises a plain ValueError, an allowed kind's
  refused value raises `NotAllowed` whose message leaves the value out ("is not ..."), for the
  caller names where the text came from.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from typing import Any, Callable

from nnunet_transfer.yaml_lines import suggest

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class NotAllowed(ValueError):
    """A value the rule refuses; the message says what it must be."""


def _same(value):
    return value


@dataclass(frozen=True)
class ValueRule:
    what: str                                   # what an allowed value is, after "is not"
    allows: Callable[[Any], bool]
    from_text: Callable[[str], Any] = str       # the value a text stands for; ValueError: none
    normalise: Callable[[Any], Any] = _same     # an allowed value as the reader gets it
    hint: str = ""                              # why, or an example, in brackets
    choices: tuple = ()                         # a choice's values (suggested when refused)

    def complaint(self, value) -> str:
        """What the rule says of a refused `value`, without the value itself."""
        if self.choices:
            words = f"is not known{suggest(value, self.choices)}"
        else:
            words = f"is not {self.what}"
        return words + (f" ({self.hint})" if self.hint else "")

    def check(self, value):
        if not self.allows(value):
            raise NotAllowed(f"{value!r} {self.complaint(value)}")
        return self.normalise(value)

    __call__ = check

    def parse(self, text: str):
        value = self.from_text(text)
        if not self.allows(value):
            raise NotAllowed(self.complaint(value))
        return self.normalise(value)

    def explained(self, hint: str) -> "ValueRule":
        """The same rule, its refusal saying `hint` (what the value means, an example)."""
        return replace(self, hint=hint)


def _is_number(value, whole: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        return False
    return whole or math.isfinite(value)


def _bounds(at_least=None, above=None, at_most=None, below=None) -> tuple[str, Callable]:
    low = (f">= {at_least}", lambda v: v >= at_least) if at_least is not None else \
        (f"> {above}", lambda v: v > above) if above is not None else None
    high = (f"<= {at_most}", lambda v: v <= at_most) if at_most is not None else \
        (f"< {below}", lambda v: v < below) if below is not None else None
    present = [b for b in (low, high) if b is not None]
    if at_least is not None and at_most is not None:
        words = f"from {at_least} to {at_most}"
    else:
        words = " and ".join(w for w, _ in present)
    # A comparison is False for NaN, so NaN is refused by every bound.
    return words, lambda v: all(test(v) for _, test in present)


def whole_number(at_least: int | None = None, at_most: int | None = None) -> ValueRule:
    """A whole number (not true / false) within the bounds given, e.g. whole_number(1)."""
    words, within = _bounds(at_least=at_least, at_most=at_most)
    return ValueRule(f"a whole number {words}".strip(),
                     lambda v: _is_number(v, whole=True) and within(v), from_text=int)


def number(at_least: float | None = None, above: float | None = None,
           at_most: float | None = None, below: float | None = None) -> ValueRule:
    """A finite number (whole or not) within the bounds given; read as a float."""
    words, within = _bounds(at_least, above, at_most, below)
    return ValueRule(f"a number {words}".strip(),
                     lambda v: _is_number(v, whole=False) and within(v), from_text=float,
                     normalise=float)


def choice(choices, hint: str = "") -> ValueRule:
    """One of `choices`; a refusal suggests the closest and lists them all."""
    choices = tuple(choices)
    return ValueRule(f"one of {', '.join(map(str, choices))}", lambda v: v in choices,
                     hint=hint, choices=choices)


def list_of(item: Callable, allow_single: bool = False, unique: bool = True) -> Callable:
    """A non-empty list of values that each pass `item`, as a tuple (`allow_single`: one value
    stands for a list of it; `unique`: no entry twice)."""
    def check(value):
        if allow_single and not isinstance(value, list):
            value = [value]
        if not isinstance(value, list) or not value:
            raise NotAllowed(f"{value!r} is not a non-empty list, e.g. [a, b]")
        items = [item(v) for v in value]
        if unique and len(set(map(str, items))) != len(items):
            raise NotAllowed(f"{value!r} repeats an entry")
        return tuple(items)
    return check


def _is_text(value) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


POSITIVE_WHOLE_NUMBER = whole_number(1)
NON_NEGATIVE_WHOLE_NUMBER = whole_number(0)
POSITIVE_NUMBER = number(above=0)
NON_NEGATIVE_NUMBER = number(at_least=0)
OPEN_FRACTION = number(above=0, below=1)
BOOLEAN = ValueRule("true or false", lambda v: isinstance(v, bool))
# A YAML value written as a number (a dataset's folder "2021") is meant as its text.
TEXT = ValueRule("a text value", _is_text, normalise=str)
NON_EMPTY_TEXT = ValueRule("a non-empty text", lambda v: isinstance(v, str) and v.strip() != "")
NAME = ValueRule("a name (letters, digits, _ and -, starting with a letter)",
                      lambda v: isinstance(v, str) and bool(_NAME.match(v)))
# A path given in the environment is kept absolute, so a run started elsewhere finds it.
PATH = ValueRule("a path", lambda v: isinstance(v, str) and v != "", normalise=os.path.abspath)
POSITIVE_WHOLE_NUMBER_OR_ALL = ValueRule(
    "a whole number >= 1 or 'all'",
    lambda v: v is None or POSITIVE_WHOLE_NUMBER.allows(v),
    from_text=lambda text: None if text.lower() == "all" else int(text))
