"""The checks of single values of a study file. Each takes the value as YAML gave it and
returns it (converted where said) or raises ValueError with the message the user reads;
`study_file` records the message with the value's line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from nnunet_transfer.architectures.registry import ARCHITECTURES
from nnunet_transfer.errors import UserError
from nnunet_transfer.study.spec import ALL, UNET
from nnunet_transfer.training.strategies import STRATEGIES, Strategy
from nnunet_transfer.training.strategy_file import read_strategy_file
from nnunet_transfer.yaml_lines import suggest

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
STRATEGY_NAMES = [s.name for s in STRATEGIES]


def whole_number(low: int | None = None, high: int | None = None) -> Callable:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if low is not None and value < low:
            raise ValueError(f"{value} is below the smallest allowed value, {low}")
        if high is not None and value > high:
            raise ValueError(f"{value} is above the largest allowed value, {high}")
        return value
    return check


def boolean(value):
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def text(value):
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"expected a text value, got {value!r}")
    return str(value)


def name(value):
    value = text(value)
    if not _NAME.match(value):
        raise ValueError(f"{value!r}: use letters, digits, _ and -, starting with a letter")
    return value


def choice(choices) -> Callable:
    def check(value):
        if value not in choices:
            raise ValueError(f"{value!r} is not known" + suggest(value, choices))
        return value
    return check


def list_of(item: Callable, allow_single: bool = False, unique: bool = True) -> Callable:
    def check(value):
        if allow_single and not isinstance(value, list):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ValueError("expected a non-empty list, e.g. [a, b]")
        items = [item(v) for v in value]
        if unique and len(set(map(str, items))) != len(items):
            raise ValueError(f"{value} repeats an entry")
        return tuple(items)
    return check


def size(value):
    if value == ALL:
        return ALL
    return whole_number(1)(value)


def shape(value):
    sizes = list_of(whole_number(8), unique=False)(value)
    if len(sizes) != 3:
        raise ValueError(f"give three sizes, e.g. [32, 32, 32], got {list(value)}")
    return sizes


def fraction(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"expected a number from 0 to below 1, got {value!r}")
    return float(value)


def strategy(value, base: str = ".") -> Strategy:
    """A strategy's name, as the Strategy it names; or a custom strategy's YAML file (relative
    to `base`, the study file's folder), as the Strategy it describes."""
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        try:
            return read_strategy_file(os.path.join(base, os.path.expanduser(value)))
        except UserError as error:
            raise ValueError(str(error)) from None
    return STRATEGIES[STRATEGY_NAMES.index(choice(STRATEGY_NAMES)(value))]


def architecture(value) -> str:
    return choice([UNET, *ARCHITECTURES])(value)
