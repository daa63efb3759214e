"""The analyses' defaults that the command line, the study file and the functions share,
each written once. Nothing heavy is imported here: every `nnunet-transfer` command builds the
parser from it.
"""

from __future__ import annotations

from nnunet_transfer.value_rules import number

# Input blocks of the patch size an analysis feeds every network: the command line's default
# since the analyses were written (a study file once said 8; a study can still give 8).
DEFAULT_BLOCKS = 16

# Convergence: the first epoch within this relative distance of the run's best validation
# score (0.005 = 0.5 %, Karimi et al.).
CONVERGENCE_TOLERANCE = 0.005
# 0 asks for the epoch of the best score itself; 1 or more would call any epoch converged.
TOLERANCE = number(at_least=0, below=1)
