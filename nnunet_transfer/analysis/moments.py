"""Streamed second moments of activation blocks: what every similarity measure is computed from.

Orientation: every activation array of the similarity modules (`moments`, `pwcca`, `svcca_cka`,
`null_baseline`) is shaped (datapoints, channels) -- one row per voxel (or sample), one column
per channel (neuron). google/svcca's ``cca_core`` takes the transpose, (neurons, datapoints);
pass ``acts.T`` when comparing with it.

All measures (CCA, PWCCA with google's or Morcos et al.'s weights, SVCCA, linear CKA) are
functions of three statistics of the stacked activations z_t = [x_t, y_t] over datapoints t:

    n       the number of datapoints,
    mu      (C,)    channel means,
    S       (C, C)  centred co-moment  sum_t (z_t - mu)(z_t - mu)^T   (covariance times n - 1).

``MomentAccumulator`` collects them chunk by chunk in float64 (Chan et al.'s pairwise update, so
the result equals a single pass over all data up to rounding). Memory is O(C^2) whatever the
number of voxels, and one pass over the data serves every pair of stacked blocks.
``pair_moments`` cuts the statistics of one pair of blocks (x, y) out of them: the input of
every measure.
"""

from __future__ import annotations

import functools
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    import torch

Array = Union[np.ndarray, "torch.Tensor"]

# Below this many datapoints per channel, canonical correlations of independent data are far
# from zero (REFERENCES section 3: 32 channels give a PWCCA of 0.28 at 10 datapoints per channel).
LOW_RATIO = 10.0

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


# -- what every measure starts from -----------------------------------------------------------

Source = Union[MomentAccumulator, Moments]

# Relative floor, on a side's covariance rescaled to largest entry 1, under which a channel
# variance or a covariance eigenvalue counts as zero (PWCCA's whitening, SVCCA's principal
# directions). Whitening divides by the square root of each kept eigenvalue, so the floor also
# bounds the condition number of every matrix the measures factorise.
RELATIVE_FLOOR = 1e-10


@dataclass(frozen=True)
class PairMoments:
    """Moments of one pair of blocks: x is (datapoints, cx), y is (datapoints, cy)."""

    count: int
    mean_x: np.ndarray  # (cx,)
    mean_y: np.ndarray  # (cy,)
    sxx: np.ndarray  # (cx, cx) centred co-moments
    sxy: np.ndarray  # (cx, cy)
    syy: np.ndarray  # (cy, cy)


def pair_moments(source: Source, x_block: int, y_block: int) -> PairMoments:
    """The moments of blocks `x_block` (x) and `y_block` (y) of `source`; warns when there are
    fewer than LOW_RATIO datapoints per channel."""
    moments = source.moments() if isinstance(source, MomentAccumulator) else source
    sx, sy = moments.block(x_block), moments.block(y_block)
    pair = PairMoments(
        count=moments.count,
        mean_x=moments.mean[sx],
        mean_y=moments.mean[sy],
        sxx=moments.comoment[sx, sx],
        sxy=moments.comoment[sx, sy],
        syy=moments.comoment[sy, sy],
    )
    warn_if_few_datapoints(pair.count, max(pair.sxx.shape[0], pair.syy.shape[0]))
    return pair


def warn_if_few_datapoints(count: int, channels: int) -> None:
    """Warn (for the caller's caller) when `count` datapoints are too few for `channels`."""
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


def single_threaded_blas(func):
    """Run `func` with one BLAS thread. The measures' matrices are channels x channels (small);
    with torch's OpenMP threads alive in the same process, multi-threaded OpenBLAS was
    measured 40x slower on a 512 x 512 eigendecomposition (3.6 s against 80 ms)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)
    return wrapper

