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
        return cls(
            schedules.make_schedule(schedule, num_timesteps), np.asarray(lambdas), k, key_input
        )

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])
