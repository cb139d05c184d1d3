"""The constants of one decomposed diffusion process, held together as a value.

A `Diffusion` carries what every loss and sampler call needs besides the networks: alpha-bar
of the noise schedule `[T]`, the per-frame base shares `[N]` and the key frame. The models take
it as an argument, so the same network weights serve any process of the same frame count.
"""

import dataclasses
from typing import Any

import numpy as np

from vfjax.diffusion import decomposed, schedules


@dataclasses.dataclass(frozen=True)
class Diffusion:
    """Constants of the decomposed process: alpha-bar `[T]`, base shares `[N]`, key frame."""

    alphas_cumprod: np.ndarray
    lambdas: np.ndarray
    key_frame: int
    # What the residual generator sees at the key frame: 'latent' (the paper's), 'x0' or 'clean'
    # (`decomposed.remove_base`).
    key_input: str = "latent"
    # What the networks output, 'eps', 'v' or 'x0' (`decomposed.base_as_noise`), and the loss's
    # min-SNR weighting (0: the target's own loss; `decomposed.loss_weights`).
    prediction: str = "eps"
    min_snr_gamma: float = 0.0
    # How training draws its timesteps: 'uniform' or 'importance' (`decomposed.sample_timesteps`).
    t_sampling: str = "uniform"
    t_uniform_share: float = 0.1
    # The floor of the min-SNR weight of the clean-frame error (`decomposed.loss_weights`).
    snr_floor: float = 0.0
    # The share of training clips with held first frames (`decomposed.videofusion_loss`).
    context_rate: float = 0.0

    @classmethod
    def create(
        cls,
        kind: str,
        num_frames: int,
        lam: Any = 0.5,
        key_frame: int | None = None,
        schedule: str = "linear",
        num_timesteps: int = 1000,
        key_input: str = "latent",
        prediction: str = "eps",
        min_snr_gamma: float = 0.0,
        logsnr_shift: float = 0.0,
        t_sampling: str = "uniform",
        t_uniform_share: float = 0.1,
        snr_floor: float = 0.0,
        context_rate: float = 0.0,
    ) -> "Diffusion":
        """VideoFusion shares (`lam`, key frame 1) or, for `kind='vdm'`, the baseline's zeros."""
        k = decomposed.key_frame_index(num_frames, key_frame)
        if kind == "vdm":
            lambdas = decomposed.independent_lambdas(num_frames)
        else:
            lambdas = decomposed.frame_lambdas(num_frames, lam, k)
        if key_input not in decomposed.KEY_INPUTS:
            raise ValueError(
                f"key_input must be one of {decomposed.KEY_INPUTS}, got {key_input!r}."
            )
        if prediction not in decomposed.PREDICTIONS:
            raise ValueError(
                f"prediction must be one of {decomposed.PREDICTIONS}, got {prediction!r}."
            )
        if t_sampling not in decomposed.T_SAMPLINGS:
            raise ValueError(
                f"t_sampling must be one of {decomposed.T_SAMPLINGS}, got {t_sampling!r}."
            )
        if not min_snr_gamma >= 0:
            raise ValueError(f"min_snr_gamma must be >= 0 (0: off), got {min_snr_gamma}.")
        if snr_floor and not (min_snr_gamma > 0 and 0 <= snr_floor <= min_snr_gamma):
            raise ValueError(
                f"snr_floor must lie in [0, min_snr_gamma] and needs min_snr_gamma > 0, got "
                f"snr_floor={snr_floor}, min_snr_gamma={min_snr_gamma}."
            )
        return cls(
            schedules.make_schedule(schedule, num_timesteps, logsnr_shift),
            np.asarray(lambdas),
            k,
            key_input,
            prediction,
            float(min_snr_gamma),
            t_sampling,
            float(t_uniform_share),
            float(snr_floor),
            float(context_rate),
        )

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])
