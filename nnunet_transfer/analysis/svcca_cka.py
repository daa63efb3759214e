"""SVCCA and linear CKA of two layers from their streamed second moments (see `moments`).

Entry points, one per measure and form, all on (datapoints, channels) activations:

    svcca(x, y), linear_cka(x, y)                      in-memory arrays, streamed in chunks
    svcca_from_moments(source, i, j),
    linear_cka_from_moments(source, i, j)              blocks i and j of accumulated moments

SVCCA (Raghu et al. 2017) reduces each side to its leading principal directions and averages the
canonical correlations of the reduced layers; linear CKA (Kornblith et al. 2019) is
||Sxy||_F^2 / (||Sxx||_F ||Syy||_F). Both are in [0, 1] and, unlike PWCCA, symmetric in x and y.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from nnunet_transfer.analysis.moments import (
    RELATIVE_FLOOR, Array, Source, accumulate, pair_moments, single_threaded_blas)


def _principal_subspace(
    comoment: np.ndarray, keep: float, n_components: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Leading eigenvectors (c, k) and their variances (k,) of one side's covariance.

    k is ``n_components`` if given (capped at the rank), else the fewest leading directions
    whose variance adds up to at least ``keep`` of the total.
    """
    scale = float(np.abs(comoment).max())
    if scale == 0.0:
        return np.zeros((comoment.shape[0], 0)), np.zeros(0)
    eigenvalues, basis = np.linalg.eigh(comoment / scale)
    eigenvalues, basis = eigenvalues[::-1], basis[:, ::-1]
    rank = int((eigenvalues > RELATIVE_FLOOR * eigenvalues[0]).sum())
    if n_components is None:
        fraction = np.cumsum(eigenvalues[:rank]) / eigenvalues[:rank].sum()
        # The tolerance keeps keep=1.0 from failing on a cumulative sum that ends at 1 - ulp.
        k = int(np.searchsorted(fraction, keep - 1e-12)) + 1
    else:
        k = n_components
    k = min(k, rank)
    return basis[:, :k], eigenvalues[:k]


@single_threaded_blas
def svcca_from_moments(
    source: Source,
    x_block: int = 0,
    y_block: int = 1,
    *,
    keep: float = 0.99,
    n_components: int | None = None,
) -> float:
    """SVCCA (Raghu et al. 2017) between two accumulated blocks.

    Each side is reduced to its leading principal directions (the SVD step: the fewest
    directions explaining ``keep`` of the variance, or exactly ``n_components``); the result is
    the mean of all min(k_x, k_y) canonical correlations between the reduced layers.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if n_components is not None and n_components < 1:
        raise ValueError(f"n_components must be positive, got {n_components}")
    pair = pair_moments(source, x_block, y_block)
    basis_x, var_x = _principal_subspace(pair.sxx, keep, n_components)
    basis_y, var_y = _principal_subspace(pair.syy, keep, n_components)
    if var_x.size == 0 or var_y.size == 0:
        warnings.warn("a layer has no varying channel; its similarity is set to 0", stacklevel=2)
        return 0.0
    scale = math.sqrt(np.abs(pair.sxx).max() * np.abs(pair.syy).max())
    # Principal coordinates are uncorrelated, so whitening them is a division by their std.
    whitened_cross = (basis_x / np.sqrt(var_x)).T @ (pair.sxy / scale) @ (basis_y / np.sqrt(var_y))
    rho = np.linalg.svd(whitened_cross, compute_uv=False)
    return float(np.clip(rho, 0.0, 1.0).mean())


def svcca(
    x: Array,
    y: Array,
    *,
    keep: float = 0.99,
    n_components: int | None = None,
    chunk_size: int | None = None,
) -> float:
    """SVCCA between x (datapoints, channels_x) and y (datapoints, channels_y).

    See ``svcca_from_moments``; ``n_components``, if given, overrides ``keep``.
    """
    accumulator = accumulate(x, y, chunk_size=chunk_size)
    return svcca_from_moments(accumulator, keep=keep, n_components=n_components)


@single_threaded_blas
def linear_cka_from_moments(source: Source, x_block: int = 0, y_block: int = 1) -> float:
    """Linear CKA (Kornblith et al. 2019) between two accumulated blocks.

    With centred activations Xc (datapoints, cx) and Yc (datapoints, cy),
    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) = ||Sxy||^2 / (||Sxx|| ||Syy||),
    equal to the HSIC form with linear kernels on the datapoints.
    """
    pair = pair_moments(source, x_block, y_block)
    scale_x, scale_y = np.abs(pair.sxx).max(), np.abs(pair.syy).max()
    if scale_x == 0.0 or scale_y == 0.0:
        warnings.warn("a layer has no varying channel; its similarity is set to 0", stacklevel=2)
        return 0.0
    # Rescaling each side first keeps the fourth powers of large activations in range.
    cross = np.linalg.norm(pair.sxy / math.sqrt(scale_x * scale_y)) ** 2
    return float(cross / (np.linalg.norm(pair.sxx / scale_x) * np.linalg.norm(pair.syy / scale_y)))


def linear_cka(x: Array, y: Array, *, chunk_size: int | None = None) -> float:
    """Linear CKA between x (datapoints, channels_x) and y (datapoints, channels_y)."""
    return linear_cka_from_moments(accumulate(x, y, chunk_size=chunk_size))
