"""Analyses of finished training runs: `nnunet-transfer analyze <kind>`, its figures, and the
layer-similarity measures they rest on.

The kinds, each declared once in `kinds` (name, help, report title, options, how it runs, what a
study job passes it, what the study file check needs) and each computed by its own module:
`convergence`, `evolution`, `cross_network` (similarity within and across groups of runs),
`reuse` and `weight_analysis` (weights). `commands` builds the CLI from `kinds`; `options` holds
the options several kinds share; `outputs` writes what every kind produces (tables, figures,
Markdown summary with its notes).

What the kinds read and measure:
- `runs`: the RUN arguments, their snapshots and convergence, and the networks rebuilt from
  them; `weights` reads checkpoints, the convergence rule and the weight changes.
- `blocks` (input blocks of preprocessed images), `layers` (which layers), `capture` (one pass
  of many networks, streamed into moments) and `measure` (the capture, rows and null baseline
  the similarity kinds share).
- Layer similarity from streamed second moments: `moments`, `pwcca` (PWCCA / RSIM),
  `svcca_cka` (SVCCA, linear CKA) and `null_baseline` (google/svcca's PWCCA done in one shot,
  the tests' oracle, is tests/oracles/svcca_reference.py). All activation arrays are
  (datapoints, channels); google/svcca uses the transpose.
- `summary` (mean +- std, Welch's test, table cells) and `figures`.

The similarity measures are re-exported here.
"""

from nnunet_transfer.analysis.moments import LOW_RATIO, MomentAccumulator, Moments, accumulate
from nnunet_transfer.analysis.null_baseline import gaussian_null_baseline
from nnunet_transfer.analysis.pwcca import (
    PWCCAResult,
    pwcca,
    pwcca_details_from_moments,
    pwcca_from_moments,
)
from nnunet_transfer.analysis.svcca_cka import (
    linear_cka,
    linear_cka_from_moments,
    svcca,
    svcca_from_moments,
)

__all__ = [
    "LOW_RATIO",
    "MomentAccumulator",
    "Moments",
    "PWCCAResult",
    "accumulate",
    "gaussian_null_baseline",
    "linear_cka",
    "linear_cka_from_moments",
    "pwcca",
    "pwcca_details_from_moments",
    "pwcca_from_moments",
    "svcca",
    "svcca_from_moments",
]
