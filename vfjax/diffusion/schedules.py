"""Noise schedules: betas and their cumulative products alpha-bar.

Schedules are computed in float64 with NumPy (so that 1000 products do not accumulate float32
error) and returned as float32 arrays, the dtype every other function here expects.
"""

import math

import numpy as np

SCHEDULES = ("linear", "cosine")


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    """DDPM's linear schedule (Ho et al. 2020), rescaled so any step count keeps its shape."""
    scale = 1000.0 / num_steps
    return np.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
    """Improved-DDPM's cosine schedule (Nichol & Dhariwal 2021), betas clipped at `max_beta`."""

    def abar(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [
        min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta) for i in range(num_steps)
    ]
    return np.asarray(betas, dtype=np.float64)


def make_schedule(name: str = "linear", num_steps: int = 1000, shift: float = 0.0) -> np.ndarray:
    """Returns alpha-bar `[T]` in float32 for schedule `name` with `num_steps` steps.

    Index `t` (0-based) is the noise level after `t + 1` forward steps, so `abar[0]` is close to 1
    and `abar[T - 1]` close to 0. `shift` moves every level's log signal-to-noise ratio,
    `log(abar / (1 - abar))`, by that much (> 0: less noise at every step): what scaling the
    data by `exp(shift / 2)` would do (Chen 2023, "On the importance of noise scheduling for
    diffusion models"; Hoogeboom et al. 2023, "simple diffusion"), for data whose content is
    small against the noise (low resolution, a small object on a flat background).
    """
    if num_steps < 1:
        raise ValueError(f"diffusion.num_timesteps must be >= 1, got {num_steps}.")
    if name == "linear":
        betas = linear_betas(num_steps)
    elif name == "cosine":
        betas = cosine_betas(num_steps)
    else:
        raise ValueError(f"Unknown noise schedule {name!r}; choose one of {SCHEDULES}.")
    abar = np.cumprod(1.0 - betas)
    if shift:
        logsnr = np.log(abar) - np.log1p(-abar)
        abar = 1.0 / (1.0 + np.exp(-(logsnr + shift)))
    return abar.astype(np.float32)
