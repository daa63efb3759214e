"""An independent LogME for small problems: the evidence as the density of a Gaussian, maximised
by a general optimiser. Slow (an n x n covariance), for the tests only.

Under w ~ N(0, alpha^-1 I) and y = F w + noise, noise ~ N(0, beta^-1 I), the targets are
Gaussian: y ~ N(0, C), C = beta^-1 I_n + alpha^-1 F F^T. Its log density, by Cholesky and
nothing of the library's eigen-decomposition, is maximised over (log alpha, log beta) with
scipy's Nelder-Mead from a coarse grid's best point.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize


def gaussian_log_evidence(features: np.ndarray, targets: np.ndarray, alpha: float,
                          beta: float) -> float:
    """log N(y; 0, beta^-1 I + alpha^-1 F F^T) for features (n, d), targets (n,)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    n = f.shape[0]
    covariance = np.eye(n) / beta + f @ f.T / alpha
    lower = np.linalg.cholesky(covariance)
    solved = np.linalg.solve(lower, y)
    return float(-0.5 * solved @ solved - np.sum(np.log(np.diag(lower)))
                 - 0.5 * n * np.log(2 * np.pi))


def reference_logme(features: np.ndarray, targets: np.ndarray) -> tuple[float, float, float]:
    """(max evidence / n, alpha, beta) by a grid over log10 alpha, log10 beta in [-6, 6] and
    Nelder-Mead from its best point."""
    n = np.asarray(features).shape[0]

    def negative(log_precisions):
        alpha, beta = np.exp(log_precisions)
        return -gaussian_log_evidence(features, targets, alpha, beta)

    grid = np.log(10.0) * np.linspace(-6, 6, 25)
    start = min(((a, b) for a in grid for b in grid), key=negative)
    best = minimize(negative, np.array(start), method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
    alpha, beta = np.exp(best.x)
    return -best.fun / n, float(alpha), float(beta)
