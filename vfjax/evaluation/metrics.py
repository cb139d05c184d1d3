"""FVD, KVD and the Inception Score from features, in float64 NumPy.

Feature extraction runs on accelerators in float32; the statistics here are computed on the host
in float64, because the covariance of 2048 400-d features and the trace of a matrix square root
lose digits in float32 that move FVD in its first decimal.
"""

import numpy as np
import scipy.special


def _as_2d(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"{name} must be [N >= 2, D] features, got shape {features.shape}.")
    return features


def feature_statistics(features: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features, for caching the real-data side of FVD.

    Args:
        features: [N, D] features.
        ddof: Covariance normaliser N - ddof: 1 (unbiased; TATS, the FVD reference) or 0
            (StyleGAN-V).

    Returns:
        float64 mean [D] and covariance [D, D].
    """
    features = _as_2d(features, "features")
    mean = features.mean(axis=0)
    centred = features - mean
    return mean, centred.T @ centred / (features.shape[0] - ddof)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """tr((S_a S_b)^(1/2)) of two covariance matrices.

    S_a S_b is not symmetric, but it is similar to S_a^(1/2) S_b S_a^(1/2), which is symmetric
    PSD; the trace of the square root is the sum of the square roots of its eigenvalues. This form
    stays real and finite for singular covariances (fewer clips than dimensions), where a general
    ``scipy.linalg.sqrtm`` returns complex round-off or fails.
    """
    root_a = _psd_sqrt(sigma_a)
    inner = root_a @ sigma_b @ root_a
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance_from_statistics(
    mean_a: np.ndarray, sigma_a: np.ndarray, mean_b: np.ndarray, sigma_b: np.ndarray
) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two Gaussians."""
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    if mean_a.shape != mean_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(f"Statistics do not match: means {mean_a.shape} vs {mean_b.shape}.")
    mean_term = float(np.sum((mean_a - mean_b) ** 2))
    trace_term = np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt_product(sigma_a, sigma_b)
    return mean_term + float(trace_term)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, ddof: int = 1) -> float:
    """Fréchet distance (FVD on I3D logits) between two feature sets [N, D] and [M, D]."""
    return frechet_distance_from_statistics(
        *feature_statistics(feats_a, ddof), *feature_statistics(feats_b, ddof)
    )


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # sklearn's polynomial_kernel defaults (degree 3, gamma 1/D, coef0 1), as TATS calls it.
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    # Unbiased: the diagonals k(x_i, x_i) are left out of the within-set means.
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * k_xy.mean())


def kernel_distance(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    *,
    num_subsets: int | None = None,
    subset_size: int | None = None,
    seed: int = 0,
) -> float:
    """Unbiased MMD^2 with the kernel (x.y / d + 1)^3 (KVD on I3D logits).

    By default over all clips of both sets, as TATS computes it. With ``num_subsets`` and
    ``subset_size`` it is the mean over random subsets drawn without replacement from each set
    (the KID practice of StyleGAN's code), for sets too large for the full kernel matrices.
    """
    feats_a, feats_b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"Feature sizes differ: {feats_a.shape[1]} vs {feats_b.shape[1]}.")
    if num_subsets is None:
        return _unbiased_mmd2(feats_a, feats_b)
    if subset_size is None or subset_size < 2:
        raise ValueError("kernel_distance with num_subsets needs subset_size >= 2.")
    size = min(subset_size, feats_a.shape[0], feats_b.shape[0])
    rng = np.random.default_rng(seed)
    values = [
        _unbiased_mmd2(
            feats_a[rng.choice(feats_a.shape[0], size, replace=False)],
            feats_b[rng.choice(feats_b.shape[0], size, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(values))


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score: mean and standard deviation over ``splits`` consecutive parts.

    IS = exp(E_x KL(p(y|x) || p(y))), with p(y) the mean prediction of the part. Parts are
    ``probs[i * N // splits : (i + 1) * N // splits]`` as in the TGANv2 and StyleGAN-V codes
    (TGANv2's script is 10 runs of 2048 samples with one split each: ``splits=10`` over the
    20480 samples). 0 log 0 is taken as 0, so one-hot predictions are scored exactly.

    Args:
        probs: [N, K] class probabilities (rows sum to one).
        splits: Number of parts.
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or not 1 <= splits <= probs.shape[0]:
        raise ValueError(f"inception_score needs [N, K] probs with N >= splits, got {probs.shape}.")
    n = probs.shape[0]
    scores = []
    for i in range(splits):
        part = probs[i * n // splits : (i + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
