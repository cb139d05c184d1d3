"""Known answers for FVD's Fréchet distance, KVD's MMD and the Inception Score."""

import itertools

import numpy as np
import pytest
import scipy.linalg

from vfjax.evaluation import metrics


def _random_covariance(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).normal(size=(300, 20)) * 3 + 1
    assert abs(metrics.frechet_distance(feats, feats)) < 1e-9


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
    rng = np.random.default_rng(1)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    var_a, var_b = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    # Diagonal covariances commute: tr(S_a + S_b - 2 (S_a S_b)^1/2) = sum (sqrt(a) - sqrt(b))^2.
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = metrics.frechet_distance_from_statistics(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    rng = np.random.default_rng(2)
    mu_a, mu_b = rng.normal(size=12), rng.normal(size=12)
    sigma_a, sigma_b = _random_covariance(rng, 12), _random_covariance(rng, 12)
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * root)
    got = metrics.frechet_distance_from_statistics(mu_a, sigma_a, mu_b, sigma_b)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_with_fewer_clips_than_dimensions_stays_real():
    rng = np.random.default_rng(3)
    feats_a, feats_b = rng.normal(size=(10, 40)), rng.normal(size=(10, 40)) + 0.5
    value = metrics.frechet_distance(feats_a, feats_b)
    assert np.isfinite(value) and value > 0


def test_feature_statistics_covariance_normaliser():
    feats = np.random.default_rng(4).normal(size=(50, 5))
    for ddof in (0, 1):
        mean, cov = metrics.feature_statistics(feats, ddof=ddof)
        np.testing.assert_allclose(mean, feats.mean(axis=0))
        np.testing.assert_allclose(cov, np.cov(feats, rowvar=False, ddof=ddof))
    # The normaliser reaches FVD: biased and unbiased covariances give different distances.
    other = feats[::-1] * 1.5
    assert metrics.frechet_distance(feats, other, ddof=0) != metrics.frechet_distance(
        feats, other, ddof=1
    )


def _brute_force_mmd2(x, y):
    def kernel(a, b):
        return (sum(ai * bi for ai, bi in zip(a, b, strict=True)) / len(a) + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(kernel(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(kernel(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(kernel(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_kernel_distance_matches_brute_force_loop():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(5, 4)) + 0.3
    expected = _brute_force_mmd2(x.tolist(), y.tolist())
    assert metrics.kernel_distance(x, y) == pytest.approx(expected, rel=1e-12)


def test_kernel_distance_subsets():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 1.0
    full = metrics.kernel_distance(x, y)
    # Subsets as large as the sets are permutations of them: the same value.
    whole = metrics.kernel_distance(x, y, num_subsets=3, subset_size=30)
    assert whole == pytest.approx(full, rel=1e-12)
    sampled = metrics.kernel_distance(x, y, num_subsets=20, subset_size=10, seed=1)
    assert sampled > 0 and sampled != pytest.approx(full, rel=1e-6)
    with pytest.raises(ValueError, match="subset_size"):
        metrics.kernel_distance(x, y, num_subsets=2)


def test_inception_score_known_answers():
    num_classes = 7
    uniform = np.full((70, num_classes), 1 / num_classes)
    assert metrics.inception_score(uniform, splits=5) == pytest.approx((1.0, 0.0))
    one_hot = np.tile(np.eye(num_classes), (10, 1))  # Every 7 consecutive rows cover all classes.
    mean, std = metrics.inception_score(one_hot, splits=10)
    assert mean == pytest.approx(num_classes, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    # Two splits that each hold one class score 1 each: the split boundary is i * N // splits.
    halves = np.repeat(np.eye(2), 5, axis=0)
    assert metrics.inception_score(halves, splits=2) == pytest.approx((1.0, 0.0))
    assert metrics.inception_score(halves, splits=1)[0] == pytest.approx(2.0)


def test_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\[N >= 2, D\]"):
        metrics.frechet_distance(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="Feature sizes"):
        metrics.kernel_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="splits"):
        metrics.inception_score(np.full((3, 2), 0.5), splits=4)
