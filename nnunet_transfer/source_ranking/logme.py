"""LogME (You et al., ICML 2021): the log marginal evidence of a Bayesian linear model on fixed
features, maximised over its two hyperparameters, per sample. Plain functions on numpy arrays.

The model, for features F (n samples, d features) and a target vector y (n,):

    w ~ N(0, alpha^-1 I_d),        y | F, w ~ N(F w, beta^-1 I_n)

so that y ~ N(0, beta^-1 I_n + alpha^-1 F F^T) and the evidence is

    log p(y | F, alpha, beta) = n/2 log beta + d/2 log alpha - n/2 log 2 pi
                                - beta/2 ||y - F m||^2 - alpha/2 ||m||^2 - 1/2 log |A|,
    A = alpha I_d + beta F^T F,    m = beta A^-1 F^T y   (the posterior mean of w).

With F^T F = V diag(sigma) V^T and z = V^T F^T y every term is a sum over the d eigenvalues:
log |A| = sum log(alpha + beta sigma_i), m_i = beta z_i / (alpha + beta sigma_i) in V's basis,
||y - F m||^2 = ||y||^2 - 2 sum m_i z_i + sum sigma_i m_i^2. The maximum over (alpha, beta) is
found by MacKay's fixed point, which You et al. use:

    gamma = sum beta sigma_i / (alpha + beta sigma_i),
    alpha <- gamma / ||m||^2,      beta <- (n - gamma) / ||y - F m||^2,

iterated here until both change by less than a relative 1e-10 (a stationary point of the
evidence). LogME is the maximum divided by n. For a segmentation target, each class is one
binary target (one-vs-rest, y = 1 on the class's voxels, 0 elsewhere) and the score is the mean
over the classes (the paper's mean over its K outputs). Higher is better: the features explain
the labels with a simpler linear model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_TOLERANCE = 1e-10
_MAX_ITERATIONS = 1000


@dataclass(frozen=True)
class Evidence:
    """The maximised evidence of one binary target.

    Attributes:
        per_sample: log p(y | F, alpha, beta) / n at the maximum (LogME).
        alpha: the prior precision of the weights at the maximum.
        beta: the noise precision at the maximum.
        iterations: fixed-point iterations taken.
    """

    per_sample: float
    alpha: float
    beta: float
    iterations: int


@dataclass(frozen=True)
class _Spectrum:
    """F^T F's eigenvalues `sigma` (d,) and z = V^T F^T y (d,), with n and ||y||^2."""

    sigma: np.ndarray
    z: np.ndarray
    n: int
    y_norm2: float


def _spectrum(features: np.ndarray, targets: np.ndarray) -> _Spectrum:
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise ValueError(f"features must be (n, d) and targets (n,), not {f.shape} and "
                         f"{y.shape}")
    sigma, v = np.linalg.eigh(f.T @ f)
    # eigh of a Gram matrix may return tiny negative values for its zero eigenvalues
    return _Spectrum(np.clip(sigma, 0.0, None), v.T @ (f.T @ y), f.shape[0], float(y @ y))


def _terms(s: _Spectrum, alpha: float, beta: float) -> tuple[float, float, float, np.ndarray]:
    """(||m||^2, ||y - F m||^2, log |A|, beta sigma / (alpha + beta sigma)) at (alpha, beta)."""
    denominator = alpha + beta * s.sigma
    m = beta * s.z / denominator
    m_norm2 = float(m @ m)
    residual2 = max(s.y_norm2 - 2.0 * float(m @ s.z) + float(s.sigma @ (m * m)), 0.0)
    return m_norm2, residual2, float(np.sum(np.log(denominator))), beta * s.sigma / denominator


def _log_evidence(s: _Spectrum, alpha: float, beta: float) -> float:
    m_norm2, residual2, log_det, _ = _terms(s, alpha, beta)
    d = s.sigma.shape[0]
    return float(0.5 * s.n * np.log(beta) + 0.5 * d * np.log(alpha) - 0.5 * s.n * np.log(2 * np.pi)
                 - 0.5 * beta * residual2 - 0.5 * alpha * m_norm2 - 0.5 * log_det)


def log_evidence(features: np.ndarray, targets: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) of the model above (the whole, not per sample), for features
    (n, d) and targets (n,) at the given precisions (both > 0)."""
    return _log_evidence(_spectrum(features, targets), alpha, beta)


def maximum_evidence(features: np.ndarray, targets: np.ndarray) -> Evidence:
    """LogME of features (n, d) for one target vector (n,): the evidence maximised over alpha
    and beta by the fixed point above (from alpha = beta = 1), divided by n."""
    s = _spectrum(features, targets)
    alpha, beta = 1.0, 1.0
    iterations = 0
    for iterations in range(1, _MAX_ITERATIONS + 1):
        m_norm2, residual2, _, ratios = _terms(s, alpha, beta)
        gamma = float(np.sum(ratios))
        # a target the features fit exactly (or not at all) drives a precision to infinity;
        # the tiny floor keeps the evidence finite and the order of sources unchanged
        new_alpha = gamma / max(m_norm2, 1e-300)
        new_beta = (s.n - gamma) / max(residual2, 1e-300)
        converged = (abs(new_alpha - alpha) <= _TOLERANCE * alpha
                     and abs(new_beta - beta) <= _TOLERANCE * beta)
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    return Evidence(_log_evidence(s, alpha, beta) / s.n, alpha, beta, iterations)


def one_vs_rest_logme(features: np.ndarray, labels: np.ndarray,
                      classes: Sequence[int]) -> dict[int, Evidence]:
    """LogME per class of `classes` for features (n, d) of voxels with integer labels (n,): the
    class's voxels against all others (y = 1 / 0). A class without voxels, or whose voxels are
    all there is, has no binary problem and is left out."""
    labels = np.asarray(labels)
    result = {}
    for value in classes:
        y = (labels == value).astype(np.float64)
        if 0 < y.sum() < y.size:
            result[int(value)] = maximum_evidence(features, y)
    return result


def mean_logme(per_class: dict[int, Evidence]) -> float:
    """The score of a source: the mean LogME over the classes (nan when there are none)."""
    return float(np.mean([e.per_sample for e in per_class.values()])) if per_class else float("nan")
