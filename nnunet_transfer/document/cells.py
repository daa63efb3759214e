"""Table cells: a value as the text a table shows, and whether a column holds numbers.

Shared by the Markdown tables (`markdown.markdown_table`) and the HTML ones (CSV previews and
rendered Markdown tables), so that both right-align the same columns.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Iterable

_NUMBER = re.compile(r"""[-+\u2212]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?%?""")
_NUMERIC_CELL = re.compile(rf"""\s*{_NUMBER.pattern}\s*(?:(?:±|\+-|\+/-)\s*{_NUMBER.pattern})?
                               \s*[*†]*\s*""", re.VERBOSE)
_PLACEHOLDERS = {"", "-", "\u2013", "\u2014", "nan", "NaN", "NA", "N/A", "n/a", "<NA>", "None",
                 "inf", "-inf", "+inf", "Infinity", "-Infinity"}


def is_numeric_column(cells: Iterable[str]) -> bool:
    """True when every cell is a number such as `0.934 ± 0.012*` (placeholders such as `-` or
    `nan` aside) and at least one is."""
    seen = False
    for cell in cells:
        cell = cell.strip()
        if cell in _PLACEHOLDERS:
            continue
        if not _NUMERIC_CELL.fullmatch(cell):
            return False
        seen = True
    return seen


def is_missing(value: Any) -> bool:
    """None, NaN (float or numpy) or pandas' NA / NaT."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        try:
            return math.isnan(float(value))
        except (TypeError, ValueError):
            return False
    return False


def is_bool(value: Any) -> bool:
    """A Python or numpy boolean (numbers.Integral would take Python's for a number)."""
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")


def format_value(value: Any, digits: int, missing: str) -> str:
    """Floats with `digits` decimals, whole numbers as they are, missing values as `missing`."""
    if is_missing(value):
        return missing
    if is_bool(value):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.{digits}f}"
    return str(value)
