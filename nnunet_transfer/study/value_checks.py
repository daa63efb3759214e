"""The checks of the study file's own kinds of value (sizes, shapes, strategies,
architectures, the prediction step), made from the rules of `value_rules`. Each takes the value
as YAML gave it and returns it (converted where said) or raises ValueError with the message the
user reads; `study_file` records the message with the value's line.
"""

from __future__ import annotations

import os

from nnunet_transfer.architectures.registry import ARCHITECTURES
from nnunet_transfer.errors import UserError
from nnunet_transfer.study.spec import ALL, UNET
from nnunet_transfer.training.strategies import STRATEGIES, Strategy
from nnunet_transfer.training.strategy_file import read_strategy_file
from nnunet_transfer.value_rules import NotAllowed, POSITIVE_WHOLE_NUMBER, choice, list_of, \
    number, whole_number

STRATEGY_NAMES = [s.name for s in STRATEGIES]
_STRATEGY_NAME = choice(STRATEGY_NAMES)
_SHAPE_SIZES = list_of(whole_number(8), unique=False)
# nnU-Net's sliding-window step, as a fraction of the patch.
STEP_SIZE = number(above=0, at_most=1).explained(
    "nnU-Net's default 0.5; larger is faster and less accurate")
# The convergence rule's relative distance to a run's best score.
TOLERANCE = number(at_least=0, below=1)


def size(value):
    if value == ALL:
        return ALL
    return POSITIVE_WHOLE_NUMBER(value)


def shape(value):
    sizes = _SHAPE_SIZES(value)
    if len(sizes) != 3:
        raise NotAllowed(f"{list(value)!r} is not three sizes, e.g. [32, 32, 32]")
    return sizes


def strategy(value, base: str = ".") -> Strategy:
    """A strategy's name, as the Strategy it names; or a custom strategy's YAML file (relative
    to `base`, the study file's folder), as the Strategy it describes."""
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        try:
            return read_strategy_file(os.path.join(base, os.path.expanduser(value)))
        except UserError as error:
            raise ValueError(str(error)) from None
    return STRATEGIES[STRATEGY_NAMES.index(_STRATEGY_NAME(value))]


def architecture(value) -> str:
    return choice([UNET, *ARCHITECTURES])(value)
