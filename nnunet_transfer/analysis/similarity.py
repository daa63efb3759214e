"""Representational similarity of network layers from streamed second moments.

Orientation: every activation array in this module is shaped (datapoints, channels) -- one row
per voxel (or sample), one column per channel (neuron). google/svcca's ``cca_core`` takes the
transpose, (neurons, datapoints); pass ``acts.T`` when comparing with it.

All measures here (CCA, PWCCA with google's or Morcos et al.'s weights, SVCCA, linear CKA) are
functions of three statistics of the stacked activations z_t = [x_t, y_t] over datapoints t:

    n       the number of datapoints,
    mu      (C,)    channel means,
    S       (C, C)  centred co-moment  sum_t (z_t - mu)(z_t - mu)^T   (covariance times n - 1).

``MomentAccumulator`` collects them chunk by chunk in float64 (Chan et al.'s pairwise update, so
the result equals a single pass over all data up to rounding). Memory is O(C^2) whatever the
number of voxels, and one pass over the data serves every pair of stacked blocks.

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
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Union

import functools

import numpy as np
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    import torch

Array = Union[np.ndarray, "torch.Tensor"]
Weighting = Literal["google", "morcos"]

# Below this many datapoints per channel, canonical correlations of independent data are far
# from zero (REFERENCES section 3: 32 channels give a PWCCA of 0.28 at 10 datapoints per channel).
LOW_RATIO = 10.0

# Relative floor, on the covariance rescaled to largest entry 1, under which a channel variance
# or a covariance eigenvalue counts as zero. Whitening divides by the square root of each kept
# eigenvalue, so the floor also bounds the condition number of every matrix factorised below.
RELATIVE_FLOOR = 1e-10

# Datapoints per chunk are chosen so that one float64 chunk of the stacked blocks is ~32 MB.
_CHUNK_ELEMENTS = 2**22


def _is_torch(array: object) -> bool:
    # A tensor can only exist once torch has been imported, so numpy-only callers never pay for
    # importing it.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(array, torch.Tensor)


def _to_numpy(array: Array) -> np.ndarray:
    if _is_torch(array):
        return array.detach().cpu().numpy()
    return np.asarray(array)


@dataclass(frozen=True)
class Moments:
    """Finished second-moment statistics of stacked activation blocks (numpy, float64).

    Attributes:
        count: number of datapoints n.
        mean: (C,) channel means, C = sum(widths), blocks stacked in order.
        comoment: (C, C) centred co-moment sum_t (z_t - mean)(z_t - mean)^T; divide by
            count - 1 for the sample covariance.
        widths: number of channels of each block.
    """

    count: int
    mean: np.ndarray
    comoment: np.ndarray
    widths: tuple[int, ...]

    def block(self, index: int) -> slice:
        """Columns (and rows) of ``mean`` / ``comoment`` that belong to block ``index``."""
        start = sum(self.widths[:index])
        return slice(start, start + self.widths[index])


class MomentAccumulator:
    """Streams count, means and centred co-moment of paired activation blocks.

    ``update(x, y)`` takes the next chunk of each block, every one shaped (datapoints,
    channels_k) with the same datapoints in the same order (e.g. two layers evaluated on the same
    voxels). Any number of blocks can be stacked: ``update(a, b, c)`` accumulates the co-moments
    of all pairs at once, for ``pwcca_from_moments(acc, 0, 2)`` and so on.

    Chunks are combined with Chan et al.'s pairwise update in float64: for accumulated
    (n_a, mu_a, S_a) and a chunk (n_b, mu_b, S_b) centred on its own mean, with delta = mu_b - mu_a,

        n  = n_a + n_b
        mu = mu_a + delta n_b / n
        S  = S_a + S_b + delta delta^T n_a n_b / n,

    which is exact (no sums of squares of uncentred values, hence no cancellation when means
    are large compared with standard deviations).

    numpy inputs are accumulated with numpy. If the first chunk is a torch tensor, accumulation
    runs in torch float64 on that tensor's device (e.g. the GPU that produced the activations)
    and only the final O(C^2) statistics are moved to numpy.
    """

    def __init__(self) -> None:
        self.count = 0
        self._widths: tuple[int, ...] | None = None
        self._device: torch.device | None = None
        self._mean: Array | None = None
        self._comoment: Array | None = None
        self._finished: Moments | None = None

    def update(self, *blocks: Array) -> None:
        """Add one chunk of datapoints; each block is (datapoints, channels_k)."""
        widths = _check_blocks(blocks)
        if self._widths is None:
            self._widths = widths
            if _is_torch(blocks[0]):
                self._device = blocks[0].device
        elif widths != self._widths:
            raise ValueError(f"block widths {widths} differ from earlier chunks {self._widths}")
        if blocks[0].shape[0] == 0:
            return
        stacked = self._stack(blocks)
        mean = stacked.mean(1)
        stacked -= mean[:, None]
        self._combine(stacked.shape[1], mean, stacked @ stacked.T)

    def merge(self, other: MomentAccumulator) -> None:
        """Fold in another accumulator's data, e.g. one filled by a different worker."""
        if other.count == 0:
            return
        if self._widths is None:
            self._widths, self._device = other._widths, other._device
        elif other._widths != self._widths:
            raise ValueError(f"block widths {other._widths} differ from {self._widths}")
        self._combine(other.count, self._convert(other._mean), self._convert(other._comoment))

    def moments(self) -> Moments:
        """The accumulated statistics as numpy float64 arrays."""
        if self.count == 0:
            raise ValueError("no datapoints have been accumulated")
        if self._finished is None:
            comoment = _to_numpy(self._comoment)
            # The two triangles of a matrix product are summed in different orders; symmetrise
            # so that every later eigendecomposition sees one consistent matrix.
            self._finished = Moments(
                count=self.count,
                mean=_to_numpy(self._mean).copy(),
                comoment=(comoment + comoment.T) / 2,
                widths=self._widths,
            )
        return self._finished

    def _stack(self, blocks: tuple[Array, ...]) -> Array:
        """The chunk as one float64 (channels, datapoints) array.

        Channel-major, so that the co-moment is a product A @ A.T of contiguous rows, which BLAS
        runs as a symmetric rank-k update (half the work of a general product); measured faster
        than (datapoints, channels) z.T @ z for 64-512 channels despite the transposing copy.
        """
        total = sum(self._widths)
        rows = blocks[0].shape[0]
        if self._device is None:
            stacked = np.empty((total, rows), dtype=np.float64)
        else:
            import torch

            stacked = torch.empty((total, rows), dtype=torch.float64, device=self._device)
        start = 0
        for block, width in zip(blocks, self._widths):
            stacked[start : start + width] = self._convert(block).T
            start += width
        return stacked

    def _convert(self, array: Array) -> Array:
        if self._device is None:
            return _to_numpy(array)
        import torch

        # No dtype conversion here: assigning into the float64 chunk buffer converts in place.
        if _is_torch(array):
            return array.detach().to(device=self._device)
        return torch.as_tensor(np.asarray(array), device=self._device)

    def _combine(self, count: int, mean: Array, comoment: Array) -> None:
        self._finished = None
        if self.count == 0:
            self.count, self._mean, self._comoment = count, mean, comoment
            return
        total = self.count + count
        delta = mean - self._mean
        self._comoment = self._comoment + comoment
        self._comoment += (self.count * count / total) * (delta[:, None] * delta[None, :])
        self._mean = self._mean + delta * (count / total)
        self.count = total


def _check_blocks(blocks: tuple[Array, ...]) -> tuple[int, ...]:
    if not blocks:
        raise ValueError("at least one activation block is needed")
    for block in blocks:
        if len(block.shape) != 2:
            raise ValueError(
                f"activations must be 2-D (datapoints, channels), got shape {tuple(block.shape)}"
            )
    rows = {block.shape[0] for block in blocks}
    if len(rows) != 1:
        raise ValueError(f"blocks disagree on the number of datapoints: {sorted(rows)}")
    return tuple(int(block.shape[1]) for block in blocks)


def default_chunk_size(total_channels: int) -> int:
    """Datapoints per chunk such that a float64 chunk of all blocks takes about 32 MB."""
    return max(256, _CHUNK_ELEMENTS // max(total_channels, 1))


def accumulate(*blocks: Array, chunk_size: int | None = None) -> MomentAccumulator:
    """Accumulate in-memory blocks, each (datapoints, channels_k), in chunks of datapoints.

    Chunks are views, so peak extra memory is one float64 chunk plus O(C^2).
    """
    widths = _check_blocks(blocks)
    step = chunk_size or default_chunk_size(sum(widths))
    accumulator = MomentAccumulator()
    for start in range(0, blocks[0].shape[0], step):
        accumulator.update(*(block[start : start + step] for block in blocks))
    return accumulator


Source = Union[MomentAccumulator, Moments]


@dataclass(frozen=True)
class _Pair:
    """Moments of one pair of blocks: x is (datapoints, cx), y is (datapoints, cy)."""

    count: int
    mean_x: np.ndarray  # (cx,)
    mean_y: np.ndarray  # (cy,)
    sxx: np.ndarray  # (cx, cx) centred co-moments
    sxy: np.ndarray  # (cx, cy)
    syy: np.ndarray  # (cy, cy)


def _pair(source: Source, x_block: int, y_block: int) -> _Pair:
    moments = source.moments() if isinstance(source, MomentAccumulator) else source
    sx, sy = moments.block(x_block), moments.block(y_block)
    pair = _Pair(
        count=moments.count,
        mean_x=moments.mean[sx],
        mean_y=moments.mean[sy],
        sxx=moments.comoment[sx, sx],
        sxy=moments.comoment[sx, sy],
        syy=moments.comoment[sy, sy],
    )
    _warn_if_few_datapoints(pair.count, max(pair.sxx.shape[0], pair.syy.shape[0]))
    return pair


def _warn_if_few_datapoints(count: int, channels: int) -> None:
    ratio = count / channels
    if ratio < LOW_RATIO:
        warnings.warn(
            f"only {ratio:.3g} datapoints per channel ({count} datapoints, {channels} channels): "
            "similarities of independent data are far above zero at this ratio (REFERENCES "
            "section 3 null baseline for 32 channels: 0.28 at 10x, 0.66 at 2x, 0.91 at 1.25x). "
            "Use more datapoints from more images and report a null baseline "
            "(gaussian_null_baseline). Arrays must be (datapoints, channels), not transposed.",
            stacklevel=3,
        )


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


def _single_threaded_blas(func):
    """Run `func` with one BLAS thread. The matrices here are channels x channels (small);
    with torch's OpenMP threads alive in the same process, multi-threaded OpenBLAS was
    measured 40x slower on a 512 x 512 eigendecomposition (3.6 s against 80 ms)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)
    return wrapper


@_single_threaded_blas
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
    pair = _pair(source, x_block, y_block)
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


def pwcca_from_moments(
    source: Source,
    x_block: int = 0,
    y_block: int = 1,
    *,
    weighting: Weighting = "google",
    epsilon: float = 0.0,
) -> float:
    """PWCCA (RSIM) between two accumulated blocks; see ``pwcca_details_from_moments``."""
    return pwcca_details_from_moments(
        source, x_block, y_block, weighting=weighting, epsilon=epsilon
    ).similarity


def pwcca(
    x: Array,
    y: Array,
    *,
    weighting: Weighting = "google",
    chunk_size: int | None = None,
    epsilon: float = 0.0,
) -> float:
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


@_single_threaded_blas
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
    pair = _pair(source, x_block, y_block)
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


@_single_threaded_blas
def linear_cka_from_moments(source: Source, x_block: int = 0, y_block: int = 1) -> float:
    """Linear CKA (Kornblith et al. 2019) between two accumulated blocks.

    With centred activations Xc (datapoints, cx) and Yc (datapoints, cy),
    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) = ||Sxy||^2 / (||Sxx|| ||Syy||),
    equal to the HSIC form with linear kernels on the datapoints.
    """
    pair = _pair(source, x_block, y_block)
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
