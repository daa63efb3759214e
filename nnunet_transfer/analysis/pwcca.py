"""PWCCA (RSIM) of two layers from their streamed second moments (see `moments`).

Entry points, one per form, all on (datapoints, channels) activations:

    pwcca(x, y)                               in-memory arrays (numpy or torch), streamed in chunks
    pwcca_from_moments(source, i, j)          blocks i and j of accumulated moments
    pwcca_details_from_moments(source, i, j)  the same with its canonical correlations and weights

PWCCA (Morcos et al. 2018, "RSIM" in the transfer-learning literature) as computed by
google/svcca ``pwcca.compute_pwcca``:

1. Rescale Sxx and Syy by their largest absolute entry and Sxy by the square root of both
   (affects only the meaning of ``epsilon``); drop channels whose rescaled variance is below
   ``epsilon`` and add ``epsilon`` to the remaining diagonal.
2. Canonical correlations rho_i are the singular values of Sxx^-1/2 Sxy Syy^-1/2; its left
   singular vectors u_i (columns of U, one per canonical pair) live in x's whitened coordinates.
3. The side with fewer channels is projected (x on ties; for a wider x the value of the
   swapped call, since the reference's branch for that case is defective). The reference builds
   "directions" d_i = u_i^T (x - mu_x) + mu_x[i] over datapoints -- u_i is applied to the
   *unwhitened* centred activations, and neuron i's mean is added to direction i (a
   broadcasting quirk).
4. The directions are orthonormalised over datapoints (QR, i.e. Gram-Schmidt in the order of
   decreasing rho) into p_i, and w_i = sum_j |<p_i, x_j>| over the raw (uncentred) activation
   vectors x_j of that side's channels. PWCCA = sum_i w_i rho_i / sum_i w_i.

Why step 4 needs only moments: stack the directions as columns of M = Xc U + 1 m^T (datapoints x
k, Xc centred activations, m the paired means) and the raw activations as A = Xc + 1 mu^T. Since
the columns of Xc sum to zero, 1^T Xc = 0 and

    M^T M = U^T S U + n m m^T,        M^T A = U^T S + n m mu^T.

QR gives M = P R with R^T R = M^T M, so R^T is the Cholesky factor L of M^T M and
P^T A = L^-1 M^T A (QR and Cholesky may differ in the signs of rows of R, which |.| ignores).
The mean terms do matter: the reference weights raw activations.

Because the mean is added to u_i^T (x - mu_x) rather than projected, flipping the sign of a
singular vector u_i changes the google weights: the reference's value depends on the arbitrary
signs LAPACK returns, and so for layers with non-zero means (every post-ReLU layer) it is not a
function of the data alone (shifting a layer by 5 standard deviations moved it by ~2e-3 between
sign choices). We reproduce the reference by taking the signs from the same ``np.linalg.svd`` of
the same matrix. The "morcos" weighting uses correlations and has no such dependence.

Robustness differs from the reference on purpose: constant channels are dropped and whitening
uses the eigendecomposition of the symmetric covariance with eigenvalues below a relative floor
treated as null (instead of pinv followed by a square root, which yields NaN for singular
layers). Each dropped channel or direction is reported with ``warnings.warn``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from nnunet_transfer.analysis.moments import (
    RELATIVE_FLOOR, Array, Source, accumulate, pair_moments, single_threaded_blas)

Weighting = Literal["google", "morcos"]


@dataclass(frozen=True)
class _Whitening:
    """Whitening of one side's covariance after dropping constant channels and null directions.

    With S_k the rescaled covariance of the kept channels (plus epsilon on its diagonal),
    S_k = basis diag(eigenvalues) basis^T restricted to non-null eigenvalues, and
    ``whitener = basis diag(eigenvalues)^-1/2`` maps centred activations of the kept channels,
    (datapoints, kept), to (datapoints, rank) coordinates whose rescaled covariance is the
    identity (exactly so for epsilon = 0).
    """

    kept: np.ndarray  # indices of kept channels
    scale: float  # largest absolute entry of the side's co-moment
    basis: np.ndarray  # (kept, rank) orthonormal eigenvectors
    eigenvalues: np.ndarray  # (rank,)

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    @property
    def whitener(self) -> np.ndarray:
        return self.basis / np.sqrt(self.eigenvalues)


def _whiten(comoment: np.ndarray, epsilon: float, side: str) -> _Whitening:
    channels = comoment.shape[0]
    scale = float(np.abs(comoment).max())
    if scale == 0.0:
        warnings.warn(f"all {channels} channels of {side} are constant", stacklevel=4)
        return _Whitening(np.arange(0), 0.0, np.zeros((0, 0)), np.zeros(0))
    rescaled = comoment / scale
    variance = np.diag(rescaled)
    kept = np.flatnonzero((variance > RELATIVE_FLOOR) & (variance >= epsilon))
    if kept.size == 0:
        warnings.warn(
            f"all {channels} channels of {side} are below epsilon={epsilon:g}", stacklevel=4
        )
        return _Whitening(kept, scale, np.zeros((0, 0)), np.zeros(0))
    if kept.size < channels:
        warnings.warn(
            f"dropped {channels - kept.size} of {channels} channels of {side}: constant, or "
            f"variance below max(epsilon={epsilon:g}, {RELATIVE_FLOOR:g}) of the largest",
            stacklevel=4,
        )
    eigenvalues, basis = np.linalg.eigh(rescaled[np.ix_(kept, kept)])
    # Null directions are judged on the data, before the epsilon ridge, so that the ridge can
    # never resurrect a direction the data does not span.
    non_null = eigenvalues > RELATIVE_FLOOR * eigenvalues.max()
    if not non_null.all():
        warnings.warn(
            f"{side} is rank deficient: {kept.size} channels span only {int(non_null.sum())} "
            "directions (duplicated / linearly dependent channels, or fewer datapoints than "
            "channels); null directions are dropped",
            stacklevel=4,
        )
    return _Whitening(kept, scale, basis[:, non_null], eigenvalues[non_null] + epsilon)


@dataclass(frozen=True)
class PWCCAResult:
    """PWCCA and its parts.

    Attributes:
        similarity: sum_i weights_i rho_i, in [0, 1].
        rho: (k,) canonical correlations in decreasing order, k = rank of the projected side.
        weights: (k,) non-negative weights summing to 1.
        side: "x" or "y", the layer whose activations the weights are computed on (the one with
            fewer non-null dimensions, x on ties).
    """

    similarity: float
    rho: np.ndarray
    weights: np.ndarray
    side: Literal["x", "y"]



@single_threaded_blas
def pwcca_details_from_moments(
    source: Source,
    x_block: int = 0,
    y_block: int = 1,
    *,
    weighting: Weighting = "google",
    epsilon: float = 0.0,
) -> PWCCAResult:
    """PWCCA between two accumulated blocks, with the canonical correlations and weights.

    Args:
        source: a MomentAccumulator (or its Moments) fed with blocks shaped (datapoints, c_k).
        x_block, y_block: indices of the two blocks to compare.
        weighting: "google" reproduces google/svcca ``pwcca.compute_pwcca`` (see the module
            docstring); "morcos" uses alpha_i ~ sum_j |corr(h_i, x_j)| of Morcos et al. 2018,
            with h_i the whitened canonical variates of the projected side and x_j its channels.
        epsilon: as in google/svcca: channels whose variance, relative to the side's largest
            covariance entry, is below epsilon are dropped and epsilon is added to the
            rescaled covariance diagonal before whitening.

    The projected side is the one with fewer non-null dimensions. For full-rank layers that is
    the narrower layer, x on ties, as in the reference. When x is the wider layer the reference's
    else-branch mixes up the two layers' activations (an IndexError when widths differ); here
    the result is then that of the swapped call, ``compute_pwcca(y.T, x.T)``, which the
    reference computes correctly. Equal widths keep the reference's asymmetry:
    pwcca(x, y) != pwcca(y, x) in general.
    """
    if weighting not in ("google", "morcos"):
        raise ValueError(f"weighting must be 'google' or 'morcos', got {weighting!r}")
    pair = pair_moments(source, x_block, y_block)
    white_x = _whiten(pair.sxx, epsilon, "x")
    white_y = _whiten(pair.syy, epsilon, "y")
    if min(white_x.rank, white_y.rank) == 0:
        warnings.warn("a layer has no varying channel; its similarity is set to 0", stacklevel=2)
        return PWCCAResult(0.0, np.zeros(0), np.zeros(0), "x")

    cross = pair.sxy[np.ix_(white_x.kept, white_y.kept)] / math.sqrt(white_x.scale * white_y.scale)
    # Canonical pairs in whitened coordinates: column i of `left` (of `right_t.T`) holds the
    # weights of x's (y's) whitened coordinates for pair i, in order of decreasing rho.
    left, rho, right_t = np.linalg.svd(
        white_x.whitener.T @ cross @ white_y.whitener, full_matrices=False
    )
    rho = np.clip(rho, 0.0, 1.0)
    if white_x.rank <= white_y.rank:
        side, own, rotation, mean, comoment = "x", white_x, left, pair.mean_x, pair.sxx
    else:
        side, own, rotation, mean, comoment = "y", white_y, right_t.T, pair.mean_y, pair.syy
    mean, comoment = mean[own.kept], comoment[np.ix_(own.kept, own.kept)]

    if weighting == "google":
        directions = own.basis @ rotation
        directions *= _reference_signs(white_x, white_y, cross, directions, side)
        weights = _google_weights(pair.count, mean, comoment, directions)
    else:
        weights = _morcos_weights(comoment / own.scale, own.whitener @ rotation)
    weights = weights / weights.sum()
    return PWCCAResult(float(weights @ rho), rho, weights, side)


def _reference_signs(
    white_x: _Whitening,
    white_y: _Whitening,
    cross: np.ndarray,
    directions: np.ndarray,
    side: Literal["x", "y"],
) -> np.ndarray:
    """Signs (k,) that turn ``directions`` into the singular vectors the reference uses.

    The reference adds neuron i's mean to direction i, so its weights change when a singular
    vector flips sign: its value depends on the (arbitrary) signs LAPACK gives the left singular
    vectors of S11^-1/2 S12 S22^-1/2, layer 1 being the projected one. Running the same
    ``np.linalg.svd`` on the same matrix, with the symmetric inverse square roots
    V diag(lambda)^-1/2 V^T, reproduces them.

    Args:
        white_x, white_y: whitening of each side; cross: rescaled (kept_x, kept_y) Sxy.
        directions: (kept, k) canonical directions u_i of the projected side as columns.
        side: which side ``directions`` belong to.
    """
    inverse_sqrt_x = white_x.whitener @ white_x.basis.T
    inverse_sqrt_y = white_y.whitener @ white_y.basis.T
    if side == "x":
        reference, _, _ = np.linalg.svd(inverse_sqrt_x @ cross @ inverse_sqrt_y)
    else:
        reference, _, _ = np.linalg.svd(inverse_sqrt_y @ cross.T @ inverse_sqrt_x)
    agreement = np.einsum("ck,ck->k", reference[:, : directions.shape[1]], directions)
    return np.where(agreement < 0, -1.0, 1.0)


def _google_weights(
    count: int, mean: np.ndarray, comoment: np.ndarray, directions: np.ndarray
) -> np.ndarray:
    """Unnormalised google/svcca weights w_i = sum_j |<p_i, x_j>|, from moments only.

    Args:
        count: number of datapoints n.
        mean: (c,) channel means mu of the projected side.
        comoment: (c, c) its centred co-moment S.
        directions: (c, k) the reference's coefficient vectors u_i as columns, ordered by
            decreasing canonical correlation.

    Direction i over datapoints is M[:, i] = Xc u_i + mu_i (the reference adds neuron i's mean
    to direction i). p_i are the QR-orthonormalised columns of M and x_j the raw activation
    vectors, A = Xc + 1 mu^T. From M^T M = L L^T (Cholesky, L = R^T of the QR) the projections
    are P^T A = L^-1 M^T A with, because 1^T Xc = 0,

        M^T M = U^T S U + n m m^T,    M^T A = U^T S + n m mu^T,    m = mu[:k].

    M^T M is positive definite: U^T S U has the kept (non-null) eigenvalues of S.
    """
    paired_mean = mean[: directions.shape[1]]
    gram = directions.T @ comoment @ directions + count * np.outer(paired_mean, paired_mean)
    cross = directions.T @ comoment + count * np.outer(paired_mean, mean)
    projections = np.linalg.solve(np.linalg.cholesky(gram), cross)
    return np.abs(projections).sum(axis=1)


def _morcos_weights(covariance: np.ndarray, canonical_weights: np.ndarray) -> np.ndarray:
    """Unnormalised Morcos et al. weights alpha_i = sum_j |corr(h_i, x_j)|.

    Args:
        covariance: (c, c) covariance (any positive multiple) of the projected side's channels.
        canonical_weights: (c, k) columns a_i such that h_i = (x - mu) a_i is canonical variate i.
    """
    cov_h_x = canonical_weights.T @ covariance  # (k, c)
    std_h = np.sqrt(np.einsum("kc,ck->k", cov_h_x, canonical_weights))
    std_x = np.sqrt(np.diag(covariance))
    return np.abs(cov_h_x / std_h[:, None] / std_x[None, :]).sum(axis=1)


def pwcca_from_moments(source: Source, x_block: int = 0, y_block: int = 1, *,
                       weighting: Weighting = "google", epsilon: float = 0.0) -> float:
    """PWCCA (RSIM) between two accumulated blocks; see ``pwcca_details_from_moments``."""
    return pwcca_details_from_moments(
        source, x_block, y_block, weighting=weighting, epsilon=epsilon
    ).similarity


def pwcca(x: Array, y: Array, *, weighting: Weighting = "google", chunk_size: int | None = None,
          epsilon: float = 0.0) -> float:
    """Projection-weighted CCA (RSIM) between activations x and y.

    Args:
        x: (datapoints, channels_x) activations of one layer, numpy array or torch tensor.
        y: (datapoints, channels_y) activations of the other layer on the same datapoints.
        weighting: "google" (default) equals google/svcca ``pwcca.compute_pwcca(x.T, y.T)[0]``
            wherever the reference is well defined; "morcos" uses the weights of Morcos et al.
            2018 (see ``pwcca_details_from_moments``).
        chunk_size: datapoints per streamed chunk (default: about 32 MB of float64 per chunk).
        epsilon: google/svcca's epsilon (channel-dropping threshold and ridge).

    Returns:
        sum_i w_i rho_i in [0, 1]; 1 when one layer is an invertible linear map of the other.
    """
    accumulator = accumulate(x, y, chunk_size=chunk_size)
    return pwcca_from_moments(accumulator, weighting=weighting, epsilon=epsilon)
