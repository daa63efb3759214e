"""The default layers of the representation analysis: three encoder and three decoder module
names per network (as the six layers of Karimi et al.'s Figure 1), chosen by shared rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn


LAYERS_PER_SIDE = 3


def child_names(prefix: str, modules: nn.ModuleList) -> list[str]:
    """The names of the entries of `modules`, registered under `prefix`: prefix.0, prefix.1, ..."""
    return [f"{prefix}.{index}" for index in range(len(modules))]


def spread(names: Sequence[str], count: int = LAYERS_PER_SIDE) -> list[str]:
    """`count` names evenly spread over `names`, first and last included; a position halfway
    between two names rounds to the even one (Python's round). Fewer names are returned as
    they are."""
    if len(names) <= count:
        return list(names)
    return [names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)]


def with_stand_ins(names: Sequence[str], stand_ins: Iterable[tuple[int, str]],
                   count: int = LAYERS_PER_SIDE) -> list[str]:
    """`names`, and while they are fewer than `count`, the next (position, name) of
    `stand_ins` inserted (list.insert): finer layers standing in for the stages a network
    with few stages lacks on one side."""
    names = list(names)
    for position, name in stand_ins:
        if len(names) >= count:
            break
        names.insert(position, name)
    return names
