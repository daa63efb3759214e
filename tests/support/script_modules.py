"""Code that lives under scripts/ (kept out of the package), for the tests that check it: the
benchmark code of scripts/benchmarking/, the layer check scripts/check_layering.py, the report's
layout check scripts/inspect_report.py and the suite's balance scripts/suite_balance.py. The
scripts import it from their own folder, so the tests put that folder on sys.path too."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "scripts")
if SCRIPTS not in sys.path:
    sys.path.append(SCRIPTS)

from benchmarking.segmentation_loss import SegmentationLoss  # noqa: E402
from benchmarking.step_cost import apply_strategy  # noqa: E402
from check_layering import LAYERS, check_layering, layer_of  # noqa: E402
import inspect_report  # noqa: E402
import suite_balance  # noqa: E402

__all__ = ["SCRIPTS", "LAYERS", "SegmentationLoss", "apply_strategy", "check_layering",
           "inspect_report", "layer_of", "suite_balance"]
