"""One colour per strategy, the same in every figure of every study.

A strategy's colour depends on its name only, never on which other strategies a study has: the
strategies of the package and of the papers have fixed colours, any other name (a custom
strategy) gets one from a stable hash of its name. Scratch, the reference, is dark grey.
"""

from __future__ import annotations

import colorsys
import hashlib
import re

FIXED = {
    "Scratch": "#3b3b3b",
    "FineTune": "#1f77b4",
    "FrozenEncoder": "#2ca02c",
    "FrozenDecoder": "#ff7f0e",
    "FrozenRandomEncoder": "#d62728",
    "HeadOnly": "#9467bd",
    "FrozenDecoderAndHead": "#8c564b",
    "LinearProbeThenFineTune": "#17becf",
    "GradualUnfreeze": "#bcbd22",
    "LayerwiseLR": "#e377c2",
    "WarmupFineTune": "#393b79",
    "LoRA": "#637939",
    "NormAndBias": "#843c39",
}


def strategy_color(name: str) -> str:
    """The colour of a strategy, as #rrggbb."""
    if name in FIXED:
        return FIXED[name]
    digest = hashlib.sha256(name.encode()).digest()
    # hue anywhere; saturation and value kept in a band that reads on white
    hue = digest[0] / 256
    saturation = 0.55 + 0.35 * digest[1] / 255
    value = 0.45 + 0.35 * digest[2] / 255
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (red, green, blue)))


def strategy_of_label(label: str) -> str:
    """The strategy of an analysis run label (`<strategy>_fold<k>`, `<strategy>_<x>_fold<k>`)."""
    return re.sub(r"_fold\d+$", "", label).split("_")[0]


def label_color(label: str) -> str:
    """A run's colour: its strategy's."""
    return strategy_color(strategy_of_label(label))
