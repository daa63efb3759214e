"""The Gaussian null baseline: the similarity of independent layers of given shapes.

With few datapoints per channel even unrelated layers look similar (REFERENCES section 3: 32
channels give a PWCCA of 0.28 at 10 datapoints per channel); this value is the floor a measured
similarity is read against.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from nnunet_transfer.analysis.moments import Moments
from nnunet_transfer.analysis.pwcca import pwcca_from_moments


def gaussian_null_baseline(
    n_datapoints: int,
    channels_x: int,
    channels_y: int,
    *,
    measure: Callable[[Moments], float] = pwcca_from_moments,
    repeats: int = 5,
    seed: int = 0,
) -> float:
    """Mean similarity of independent standard-normal layers of the given shapes.

    A floor against which to read a measured similarity: with few datapoints per channel even
    unrelated layers look similar. Nothing is sampled per datapoint: for n i.i.d. normal rows the
    centred co-moment is Wishart(I, n - 1) and independent of the mean, N(0, I / n), so each
    repeat costs O(C^3) whatever n (Bartlett decomposition). Real activations are correlated
    between neighbouring voxels, so their effective n is smaller than the voxel count.

    Args:
        n_datapoints: number of datapoints n (must exceed channels_x + channels_y).
        channels_x, channels_y: layer widths.
        measure: function of Moments with blocks (x, y), e.g. pwcca_from_moments,
            svcca_from_moments or linear_cka_from_moments.
        repeats: number of independent draws averaged.
        seed: seed of numpy's default_rng.
    """
    total = channels_x + channels_y
    if n_datapoints <= total:
        raise ValueError("gaussian_null_baseline needs more datapoints than channels in total")
    rng = np.random.default_rng(seed)
    degrees = n_datapoints - 1
    values = []
    for _ in range(repeats):
        # Bartlett: W = T T^T with T lower triangular, T_ii^2 ~ chi2(df - i), T_ij ~ N(0, 1).
        factor = np.tril(rng.standard_normal((total, total)), -1)
        factor[np.diag_indices(total)] = np.sqrt(rng.chisquare(degrees - np.arange(total)))
        moments = Moments(
            count=n_datapoints,
            mean=rng.standard_normal(total) / math.sqrt(n_datapoints),
            comoment=factor @ factor.T,
            widths=(channels_x, channels_y),
        )
        with warnings.catch_warnings():
            # The low-ratio warning is the reason for calling this function.
            warnings.simplefilter("ignore")
            values.append(measure(moments))
    return float(np.mean(values))
