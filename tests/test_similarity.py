"""Tests of the similarity measures (nnunet_transfer.analysis.moments, .pwcca, .svcca_cka,
.null_baseline): PWCCA / SVCCA / linear CKA from moments.

Every expected value is either a value printed by google/svcca (commit 1f3fbf1) or computed here
by a direct formula on the raw activations, never by the code under test. Arrays passed to the
package are (datapoints, channels); the seeded data of REFERENCES section 3 is drawn as
(neurons, datapoints), as google/svcca takes it, and transposed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from nnunet_transfer.analysis import (
    MomentAccumulator,
    accumulate,
    gaussian_null_baseline,
    linear_cka,
    linear_cka_from_moments,
    pwcca,
    pwcca_details_from_moments,
    pwcca_from_moments,
    svcca,
)
from oracles.svcca_reference import reference_pwcca


@pytest.fixture(scope="module")
def seeded() -> dict[str, np.ndarray]:
    """REFERENCES section 3 data, transposed to (datapoints, channels)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5000))
    a = rng.normal(size=(32, 32))
    y_noisy = a @ x + rng.normal(size=(32, 5000))
    y_independent = rng.normal(size=(32, 5000))
    b = rng.normal(size=(64, 32))
    return {
        "X": x.T,
        "Yn": y_noisy.T,
        "Yi": y_independent.T,
        "R": np.maximum(b @ x, 0.0).T,
    }


# Values of google/svcca pwcca.compute_pwcca(first.T, second.T)[0] for (neurons, datapoints)
# inputs. The first three are REFERENCES section 3; the reversed equal-width orders were printed
# by the same code. ("R", "X") raises an IndexError in google/svcca (its else-branch defect); by
# design it equals the swapped call here.
GOOGLE_VALUES = [
    ("X", "Yn", 0.8922939253),
    ("X", "Yi", 0.0682088365),
    ("X", "R", 0.8833651444),
    ("Yn", "X", 0.9632242604),
    ("Yi", "X", 0.0676583585),
    ("R", "X", 0.8833651444),
]


@pytest.mark.parametrize(("first", "second", "expected"), GOOGLE_VALUES)
def test_seeded_values_of_google_svcca(seeded, first, second, expected):
    assert abs(pwcca(seeded[first], seeded[second]) - expected) < 1e-8
    assert abs(reference_pwcca(seeded[first], seeded[second]) - expected) < 1e-8


def _layers(rng: np.random.Generator, points: int, cx: int, cy: int) -> tuple[np.ndarray, ...]:
    """Correlated layers with unequal scales and non-zero means, (points, c)."""
    x = rng.normal(size=(points, cx)) * rng.uniform(0.5, 3.0, cx) + rng.uniform(-2.0, 4.0, cx)
    y = np.tanh(x @ rng.normal(size=(cx, cy)) / np.sqrt(cx)) + 0.5 * rng.normal(size=(points, cy))
    return x, y + 1.5


@pytest.mark.parametrize(("cx", "cy"), [(12, 20), (20, 12), (16, 16)])
@pytest.mark.parametrize("chunk_size", [None, 97])
def test_streaming_equals_one_shot_reference(cx, cy, chunk_size):
    x, y = _layers(np.random.default_rng(cx * 100 + cy), 2000, cx, cy)
    expected = reference_pwcca(x, y)
    assert abs(pwcca(x, y, chunk_size=chunk_size) - expected) < 1e-8


def test_mean_term_of_reference_is_reproduced():
    # The reference adds neuron means to its directions, so shifting one layer changes its
    # value; the second-moment formula must follow it through the n m m^T terms.
    x, y = _layers(np.random.default_rng(5), 2000, 10, 14)
    shifted = x + 7.0
    assert abs(reference_pwcca(shifted, y) - reference_pwcca(x, y)) > 1e-4
    assert abs(pwcca(shifted, y) - reference_pwcca(shifted, y)) < 1e-8


def test_epsilon_matches_reference():
    x, y = _layers(np.random.default_rng(6), 2000, 10, 14)
    x[:, 3] *= 1e-3  # rescaled variance ~1e-7, below epsilon: dropped by both implementations
    with pytest.warns(UserWarning, match="dropped 1 of 10 channels"):
        ours = pwcca(x, y, epsilon=1e-4)
    assert abs(ours - reference_pwcca(x, y, epsilon=1e-4)) < 1e-8


def test_chunked_moments_equal_direct_statistics():
    rng = np.random.default_rng(7)
    x, y = _layers(rng, 1000, 6, 4)
    accumulator = MomentAccumulator()
    for start, stop in [(0, 1), (1, 8), (8, 8), (8, 600), (600, 1000)]:
        accumulator.update(x[start:stop], y[start:stop])
    moments = accumulator.moments()
    stacked = np.hstack([x, y])
    assert moments.count == 1000
    np.testing.assert_allclose(moments.mean, stacked.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        moments.comoment / 999, np.cov(stacked, rowvar=False), rtol=1e-11, atol=1e-12
    )

    halves = accumulate(x[:300], y[:300])
    halves.merge(accumulate(x[300:], y[300:], chunk_size=50))
    np.testing.assert_allclose(halves.moments().comoment, moments.comoment, rtol=1e-12)
    assert abs(pwcca_from_moments(halves) - pwcca(x, y)) < 1e-12


def test_one_pass_serves_every_pair_of_blocks():
    rng = np.random.default_rng(18)
    x, y = _layers(rng, 1200, 5, 9)
    z = np.sin(y[:, :7]) + rng.normal(size=(1200, 7))
    together = accumulate(x, y, z, chunk_size=100)
    assert abs(pwcca_from_moments(together, 0, 2) - pwcca(x, z)) < 1e-12
    assert abs(pwcca_from_moments(together, 2, 1) - pwcca(z, y)) < 1e-12
    assert abs(linear_cka_from_moments(together, 1, 2) - linear_cka(y, z)) < 1e-12


def test_torch_input_matches_numpy():
    x, y = _layers(np.random.default_rng(8), 1500, 8, 12)
    for dtype in (np.float64, np.float32):
        xd, yd = x.astype(dtype), y.astype(dtype)
        expected = accumulate(xd, yd).moments()
        tx = torch.from_numpy(xd).requires_grad_(True)
        got = accumulate(tx, torch.from_numpy(yd), chunk_size=128).moments()
        np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-12)
        np.testing.assert_allclose(got.comoment, expected.comoment, rtol=1e-11, atol=1e-9)
    assert abs(pwcca(torch.from_numpy(x), torch.from_numpy(y)) - pwcca(x, y)) < 1e-10


def _centred(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=0)


def test_morcos_weighting_matches_direct_canonical_variates():
    x, y = _layers(np.random.default_rng(9), 3000, 9, 15)
    xc, yc = _centred(x), _centred(y)
    qx, qy = np.linalg.qr(xc)[0], np.linalg.qr(yc)[0]
    rotation, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    variates = qx @ rotation  # unit-norm, zero-mean canonical variates of x, (points, 9)
    correlation = variates.T @ xc / np.linalg.norm(xc, axis=0)
    alpha = np.abs(correlation).sum(axis=1)
    expected = alpha @ rho / alpha.sum()
    assert abs(pwcca(x, y, weighting="morcos") - expected) < 1e-10
    assert abs(pwcca(x, y, weighting="morcos") - pwcca(x, y)) > 1e-4


def test_linear_cka_matches_hsic_on_datapoints():
    x, y = _layers(np.random.default_rng(10), 300, 7, 11)
    centring = np.eye(300) - 1.0 / 300
    gram_x, gram_y = centring @ x @ x.T @ centring, centring @ y @ y.T @ centring
    expected = np.sum(gram_x * gram_y) / np.sqrt(np.sum(gram_x**2) * np.sum(gram_y**2))
    assert abs(linear_cka(x, y) - expected) < 1e-10


def _direct_svcca(x: np.ndarray, y: np.ndarray, keep: float) -> tuple[float, int, int]:
    reduced = []
    for a in (x, y):
        u, s, _ = np.linalg.svd(_centred(a), full_matrices=False)
        k = int(np.argmax(np.cumsum(s**2) / np.sum(s**2) >= keep)) + 1
        reduced.append(u[:, :k] * s[:k])
    qx, qy = np.linalg.qr(reduced[0])[0], np.linalg.qr(reduced[1])[0]
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return float(rho.mean()), reduced[0].shape[1], reduced[1].shape[1]


def test_svcca_matches_direct_svd_then_cca():
    rng = np.random.default_rng(11)
    decay = 0.6 ** np.arange(16)  # a spectrum for which the 99 % cut keeps a few directions
    x = rng.normal(size=(2000, 16)) * decay @ np.linalg.qr(rng.normal(size=(16, 16)))[0]
    y = x[:, :12] @ rng.normal(size=(12, 20)) + 0.2 * rng.normal(size=(2000, 20))
    expected, kx, ky = _direct_svcca(x, y, 0.99)
    assert kx < 16 and ky < 20
    assert abs(svcca(x, y) - expected) < 1e-8
    expected_3, _, _ = _direct_svcca(x[:, :3] @ np.eye(3), y[:, :3] @ np.eye(3), 1.0)
    assert abs(svcca(x[:, :3], y[:, :3], n_components=3) - expected_3) < 1e-8


def test_invariance_to_orthogonal_transform_and_scaling(seeded):
    x, y = seeded["X"][:2000], seeded["Yn"][:2000]
    rng = np.random.default_rng(12)
    rotation = np.linalg.qr(rng.normal(size=(32, 32)))[0]
    for measure in (pwcca, svcca, linear_cka):
        assert abs(measure(x, 3.7 * x @ rotation) - 1.0) < 1e-9
    # Transforming y leaves x's canonical directions unchanged, hence the weights on x's side.
    # google's weights also see x's means paired with LAPACK's arbitrary singular-vector signs,
    # which change with y; they are invariant only for centred x.
    x = x - x.mean(axis=0)
    y_transformed = 0.2 * (y + 5.0) @ rotation
    for measure in (pwcca, svcca, linear_cka):
        assert abs(measure(x, y_transformed) - measure(x, y)) < 1e-9
    morcos = pwcca(x, y, weighting="morcos")
    assert abs(pwcca(x + 5.0, y_transformed, weighting="morcos") - morcos) < 1e-9


def test_independent_data_gives_the_null_baseline():
    rng = np.random.default_rng(13)
    # REFERENCES section 3 (single draws): 0.070 at 156 and 0.283 at 10 datapoints per channel.
    assert 0.06 < pwcca(rng.normal(size=(5000, 32)), rng.normal(size=(5000, 32))) < 0.08
    assert abs(gaussian_null_baseline(5000, 32, 32) - 0.070) < 0.008
    assert abs(gaussian_null_baseline(320, 32, 32) - 0.283) < 0.02
    # The Wishart shortcut has the distribution of PWCCA on sampled independent data.
    sampled = [pwcca(rng.normal(size=(320, 32)), rng.normal(size=(320, 32))) for _ in range(20)]
    assert abs(gaussian_null_baseline(320, 32, 32, repeats=20) - np.mean(sampled)) < 0.01
    unrelated = accumulate(rng.normal(size=(5000, 8)), rng.normal(size=(5000, 8)))
    assert linear_cka_from_moments(unrelated) < 0.01


def test_dead_channels_are_dropped():
    x, y = _layers(np.random.default_rng(14), 1000, 8, 12)
    with_dead = np.hstack([np.zeros((1000, 1)), x[:, :4], np.full((1000, 1), 3.0), x[:, 4:]])
    with pytest.warns(UserWarning, match="dropped 2 of 10 channels of x"):
        value = pwcca(with_dead, y)
    assert abs(value - pwcca(x, y)) < 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # dead channels alone are not a warning for CKA / SVCCA
        assert abs(linear_cka(with_dead, y) - linear_cka(x, y)) < 1e-10
        assert abs(svcca(with_dead, y) - svcca(x, y)) < 1e-10


def test_rank_deficient_layer_keeps_canonical_correlations():
    x, y = _layers(np.random.default_rng(15), 1000, 8, 12)
    dependent = np.hstack([x, x[:, :1], x[:, 1:2] - 2.0 * x[:, 2:3]])
    with pytest.warns(UserWarning, match="rank deficient: 10 channels span only 8"):
        details = pwcca_details_from_moments(accumulate(dependent, y))
    full = pwcca_details_from_moments(accumulate(x, y))
    np.testing.assert_allclose(details.rho, full.rho, atol=1e-8)
    assert np.isfinite(details.similarity) and 0.0 <= details.similarity <= 1.0
    assert abs(details.weights.sum() - 1.0) < 1e-12


def _warning_messages(function, *args, **kwargs) -> tuple[object, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args, **kwargs)
    return result, " | ".join(str(warning.message) for warning in caught)


def test_fewer_datapoints_than_channels_is_finite_and_warns():
    rng = np.random.default_rng(16)
    x, y = rng.normal(size=(20, 32)), rng.normal(size=(20, 48))
    for measure in (pwcca, svcca, linear_cka):
        value, messages = _warning_messages(measure, x, y)
        assert "0.417 datapoints per channel" in messages
        assert np.isfinite(value) and 0.0 <= value <= 1.0
    value, messages = _warning_messages(pwcca, x, y, weighting="morcos")
    assert "x is rank deficient: 32 channels span only 19" in messages
    assert np.isfinite(value)


def test_constant_layer_gives_zero():
    x = np.random.default_rng(17).normal(size=(500, 4))
    value, messages = _warning_messages(pwcca, x, np.ones((500, 3)))
    assert value == 0.0
    assert "all 3 channels of y are constant" in messages


def test_invalid_inputs_raise():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="number of datapoints"):
        pwcca(x, np.zeros((11, 3)))
    with pytest.raises(ValueError, match="2-D"):
        pwcca(x, np.zeros(10))
    with pytest.raises(ValueError, match="weighting"):
        pwcca_from_moments(accumulate(x + np.arange(30).reshape(10, 3) ** 2, x), weighting="pw")
