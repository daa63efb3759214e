"""The benchmark code of scripts/benchmarking/ (kept out of the package), for the tests that
check it: the scripts import it as `benchmarking` from their own folder, so the tests put that
folder on sys.path the same way."""

import os
import sys

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
if SCRIPTS not in sys.path:
    sys.path.append(SCRIPTS)

from benchmarking.segmentation_loss import SegmentationLoss  # noqa: E402
from benchmarking.step_cost import apply_strategy  # noqa: E402

__all__ = ["SCRIPTS", "SegmentationLoss", "apply_strategy"]
