"""Bilinear frame resizing with the pixel-coordinate conventions of the reference metric codes.

The FVD and IS references do not agree on where pixel centres lie, and at 64 -> 224 or
256 -> 224 the difference moves the metric. Each convention is a named method:

- ``'bilinear_half_pixel'``: PyTorch ``F.interpolate(mode='bilinear', align_corners=False)`` and
  TF2 ``tf.image.resize``: source coordinate ``(o + 0.5) * in / out - 0.5`` (TATS, StyleGAN-V).
- ``'bilinear_tf1_legacy'``: TF1 ``tf.image.resize_bilinear`` with its defaults, as the original
  FVD code calls it: source coordinate ``o * in / out``.
- ``'bilinear_align_corners'``: Chainer ``F.resize_images`` (its default ``align_corners=True``), as
  the TGANv2 C3D code calls it: source coordinate ``o * (in - 1) / (out - 1)``.

None of them antialiases when shrinking (``jax.image.resize`` does by default, which none of the
references do), so the resize is written out as two small interpolation matrices.
"""

import jax.numpy as jnp
import numpy as np

RESIZE_METHODS = ("bilinear_half_pixel", "bilinear_tf1_legacy", "bilinear_align_corners")


def interpolation_matrix(in_size: int, out_size: int, method: str) -> np.ndarray:
    """Returns the [out_size, in_size] matrix of 1-D linear interpolation weights.

    Args:
        in_size: Number of input samples.
        out_size: Number of output samples.
        method: One of ``RESIZE_METHODS``.

    Returns:
        A float64 matrix whose rows sum to one; row ``o`` holds the weights of output sample ``o``.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"Unknown resize method {method!r}; use one of {RESIZE_METHODS}.")
    out = np.arange(out_size, dtype=np.float64)
    if method == "bilinear_half_pixel":
        # PyTorch clamps negative source coordinates to 0 (the first output pixels copy the
        # first input pixel when upsampling).
        src = np.maximum((out + 0.5) * (in_size / out_size) - 0.5, 0.0)
    elif method == "bilinear_tf1_legacy":
        src = out * (in_size / out_size)
    elif out_size == 1:
        src = np.zeros_like(out)
    else:
        src = out * ((in_size - 1) / (out_size - 1))
    lower = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = src - lower
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lower), 1.0 - frac)
    np.add.at(weights, (rows, upper), frac)
    return weights


def resize_frames(videos: jnp.ndarray, size: tuple[int, int], method: str) -> jnp.ndarray:
    """Resizes every frame of a batch of videos.

    Bilinear interpolation is linear with weights summing to one, so it commutes with the affine
    maps between value ranges: resizing in [-1, 1] equals resizing in [0, 255] and mapping back.

    Args:
        videos: [B, T, H, W, C] float array.
        size: Output (height, width).
        method: One of ``RESIZE_METHODS``.

    Returns:
        [B, T, size[0], size[1], C] float32 array.
    """
    videos = jnp.asarray(videos, jnp.float32)
    height, width = videos.shape[2], videos.shape[3]
    if (height, width) == tuple(size):
        return videos
    rows = jnp.asarray(interpolation_matrix(height, size[0], method), jnp.float32)
    cols = jnp.asarray(interpolation_matrix(width, size[1], method), jnp.float32)
    # Two separable contractions; 'highest' keeps the float32 weights exact on accelerators.
    videos = jnp.einsum("oh,bthwc->btowc", rows, videos, precision="highest")
    return jnp.einsum("pw,btowc->btopc", cols, videos, precision="highest")


def quantize_8bit(videos: jnp.ndarray) -> jnp.ndarray:
    """Rounds [-1, 1] videos to the 256 levels of 8-bit frames, staying in [-1, 1].

    The reference codes score generated videos after storing them as uint8, so generated and real
    clips reach the feature network with the same quantisation.
    """
    levels = jnp.round((jnp.clip(videos, -1.0, 1.0) + 1.0) * 127.5)
    return levels / 127.5 - 1.0
