"""Videos as stored (uint8 pixels) and as the model reads them (float32 in [-1, 1]).

Training moves uint8 batches to the devices (a quarter of the bytes) and converts them inside
its jitted step; evaluation and the sample mode read float32 batches converted on the host. Both
go through `to_model_input`, and get the same values.
"""

import jax.numpy as jnp
import numpy as np

# Each 8-bit level's value, `level / 127.5 - 1`, divided once here: a jitted division by a
# constant becomes a product with its rounded reciprocal, one unit in the last place off for
# most levels, so the devices look these up instead of computing them.
_LEVELS = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def to_model_input(video):
    """uint8 videos -> float32 in [-1, 1] (0 -> -1, 255 -> 1 exactly), in NumPy on the host or
    in jax.numpy inside a jitted step, the same values either way; float videos, model input
    already, pass through.

    Args:
      video: `[..., H, W, C]` pixels, a NumPy or a JAX array.
    """
    if jnp.issubdtype(video.dtype, jnp.floating):
        return video
    if video.dtype != np.uint8:
        raise ValueError(f"Videos must be uint8 pixels or floats in [-1, 1], got {video.dtype}.")
    if isinstance(video, np.ndarray):
        return _LEVELS[video]
    return jnp.asarray(_LEVELS)[video]
