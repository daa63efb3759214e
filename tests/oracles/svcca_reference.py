"""google/svcca's PWCCA, one-shot: a direct implementation following its algorithm step by step.

For validation (tests/test_similarity.py) and benchmarking (scripts/benchmark_pwcca.py) of the
streaming implementation in ``pwcca``; no analysis uses it. It holds several copies of the
full activations and is slow. Inputs are (datapoints, channels) like the rest of this package
(google/svcca itself takes (neurons, datapoints)).

It reproduces ``pwcca.compute_pwcca(x.T, y.T, epsilon)[0]`` including its quirks (directions
built from unwhitened activations, neuron i's mean added to direction i, pinv followed by an
eigenvalue square root, so singular layers give NaN), except for the reference's else-branch
defect: when the second layer has fewer kept channels the reference builds the directions from
the first layer's activations (an IndexError when the first layer is wider). Here the layers
are swapped instead, i.e. the result is that of ``compute_pwcca(y.T, x.T)``.
"""

from __future__ import annotations

import numpy as np


def _inverse_sqrt(covariance: np.ndarray) -> np.ndarray:
    """Square root of the pseudo-inverse, via the eigenvalues of the (symmetric) pseudo-inverse."""
    eigenvalues, vectors = np.linalg.eigh(np.linalg.pinv(covariance))
    return (vectors * np.sqrt(eigenvalues)) @ vectors.T


def reference_pwcca(x: np.ndarray, y: np.ndarray, *, epsilon: float = 0.0) -> float:
    """PWCCA of x (datapoints, channels_x) and y (datapoints, channels_y), all data at once."""
    acts_x = np.asarray(x, dtype=np.float64).T  # (channels_x, datapoints)
    acts_y = np.asarray(y, dtype=np.float64).T
    cx = acts_x.shape[0]

    # 1. Covariance of the stacked channels, split into blocks and rescaled.
    covariance = np.cov(np.concatenate([acts_x, acts_y]))
    sxx, sxy, syy = covariance[:cx, :cx], covariance[:cx, cx:], covariance[cx:, cx:]
    scale_x, scale_y = np.abs(sxx).max(), np.abs(syy).max()
    sxx, syy, sxy = sxx / scale_x, syy / scale_y, sxy / np.sqrt(scale_x * scale_y)

    # 2. Drop low-variance channels. The layer with fewer kept channels goes first (x on ties).
    keep_x = np.diag(sxx) >= epsilon
    keep_y = np.diag(syy) >= epsilon
    if keep_y.sum() < keep_x.sum():
        acts_x, acts_y, sxx, syy, sxy = acts_y, acts_x, syy, sxx, sxy.T
        keep_x, keep_y = keep_y, keep_x

    # 3. Add the ridge, whiten, take the SVD and build directions over datapoints.
    sxx = sxx[np.ix_(keep_x, keep_x)] + epsilon * np.eye(keep_x.sum())
    syy = syy[np.ix_(keep_y, keep_y)] + epsilon * np.eye(keep_y.sum())
    sxy = sxy[np.ix_(keep_x, keep_y)]
    u, rho, _ = np.linalg.svd(_inverse_sqrt(sxx) @ sxy @ _inverse_sqrt(syy))
    acts = acts_x[keep_x]
    means = acts.mean(axis=1, keepdims=True)
    directions = u.T @ (acts - means) + means

    # 4. Orthonormalise the directions over datapoints and project the raw activations.
    orthonormal, _ = np.linalg.qr(directions.T)
    weights = np.abs(orthonormal.T @ acts.T).sum(axis=1)
    weights = weights / weights.sum()
    return float(weights @ rho)
