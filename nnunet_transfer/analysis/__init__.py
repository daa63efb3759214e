"""Layer similarity (PWCCA / RSIM, SVCCA, linear CKA) from streamed second moments.

All activation arrays are (datapoints, channels); google/svcca uses the transpose.
"""

from nnunet_transfer.analysis.similarity import (
    LOW_RATIO,
    MomentAccumulator,
    Moments,
    PWCCAResult,
    accumulate,
    gaussian_null_baseline,
    linear_cka,
    linear_cka_from_moments,
    pwcca,
    pwcca_details_from_moments,
    pwcca_from_moments,
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
