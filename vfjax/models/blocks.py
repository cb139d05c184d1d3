"""The UNet pieces besides attention: the residual block, the resamplers, and the timestep,
frame-index and class embeddings."""

import math

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from vfjax.models.layers import GroupNorm, LayerOpts, conv, dense, resample_2x

Array = jax.Array


def class_embedding(
    num_classes: int, dim: int, opts: LayerOpts, rngs: nnx.Rngs
) -> nnx.Embed | None:
    """A class embedding with one extra row, index `num_classes`, for the null (dropped) class."""
    if not num_classes:
        return None
    return nnx.Embed(
        num_classes + 1,
        dim,
        param_dtype=opts.param_dtype,
        embedding_init=nnx.initializers.normal(stddev=dim**-0.5),
        embedding_metadata={"logical_axes": ("vocab", "embed"), "init": "fan_out"},
        rngs=rngs,
    )


def timestep_embedding(
    t: Array, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0
) -> Array:
    """Sinusoidal embedding `[..., dim]` of (possibly fractional) timesteps or frame indices.

    `flip_sin_to_cos` puts cosines first and `freq_shift` offsets the frequency denominator, the
    two knobs that distinguish the DDPM, ADM and diffusers conventions.
    """
    half = dim // 2
    exponent = -math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    args = jnp.asarray(t, jnp.float32)[..., None] * jnp.exp(exponent)
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
    return emb


class EmbeddingMLP(nnx.Module):
    """`linear_2(silu(linear_1(x)))`: the timestep (and frame-index) embedding network."""

    def __init__(self, in_dim: int, out_dim: int, opts: LayerOpts, rngs: nnx.Rngs):
        self.linear_1 = dense(in_dim, out_dim, opts, rngs)
        self.linear_2 = dense(out_dim, out_dim, opts, rngs)

    def __call__(self, x: Array) -> Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class ResBlock(nnx.Module):
    """Residual block: GroupNorm, SiLU, 3x3 conv, timestep embedding, GroupNorm, SiLU, dropout,
    3x3 conv, plus a (1x1 conv) shortcut. The embedding is added, or applied as scale and shift
    of the second normalisation (`scale_shift`, ADM's `use_scale_shift_norm`). With `resample`
    ('down': 2x2 average pool, 'up': nearest x2) the block also resamples, both branches between
    the first normalisation and the first convolution (ADM's `resblock_updown`, diffusers'
    'resnet' up/downsampling).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        opts: LayerOpts,
        rngs: nnx.Rngs,
        *,
        dropout: float = 0.0,
        scale_shift: bool = False,
        zero_init: bool = True,
        resample: str | None = None,
    ):
        if resample not in (None, "down", "up"):
            raise ValueError(f"ResBlock resample must be None, 'down' or 'up', got {resample!r}.")
        self.scale_shift = scale_shift
        self.resample = resample
        self.norm1 = GroupNorm(in_ch, opts, rngs)
        self.conv1 = conv(in_ch, out_ch, opts, rngs)
        self.time_emb_proj = dense(emb_dim, 2 * out_ch if scale_shift else out_ch, opts, rngs)
        self.norm2 = GroupNorm(out_ch, opts, rngs)
        self.dropout = nnx.Dropout(dropout)
        self.conv2 = conv(out_ch, out_ch, opts, rngs, zero_init=zero_init)
        self.conv_shortcut = (
            conv(in_ch, out_ch, opts, rngs, kernel=(1, 1)) if in_ch != out_ch else None
        )

    @classmethod
    def from_config(cls, cfg, in_ch: int, out_ch: int, emb_dim: int, opts, rngs, **kwargs):
        """A block with a generator config's `dropout`, `scale_shift` and `zero_init`."""
        return cls(
            in_ch,
            out_ch,
            emb_dim,
            opts,
            rngs,
            dropout=cfg.dropout,
            scale_shift=cfg.scale_shift,
            zero_init=cfg.zero_init,
            **kwargs,
        )

    def __call__(self, x: Array, emb: Array, rngs: nnx.Rngs | None = None) -> Array:
        """x `[M, H, W, C]`, emb `[M, D]`."""
        h = self.norm1(x, act=True)
        if self.resample is not None:
            h, x = resample_2x(h, self.resample), resample_2x(x, self.resample)
        h = self.conv1(h)
        e = self.time_emb_proj(jax.nn.silu(emb))[:, None, None, :]
        if self.scale_shift:
            scale, shift = jnp.split(e, 2, axis=-1)
            h = self.norm2(h, act=True, scale_shift=(scale, shift))
        else:
            h = self.norm2(h + e, act=True)
        h = self.dropout(h, deterministic=rngs is None, rngs=rngs)
        h = self.conv2(h)
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample(nnx.Module):
    """Stride-2 3x3 convolution. `padding` 1 pads every side by one; 0 pads only the bottom and
    right edges (the original DDPM's, kept by its diffusers ports as `downsample_padding=0`)."""

    def __init__(self, channels: int, opts: LayerOpts, rngs: nnx.Rngs, padding: int = 1):
        if padding not in (0, 1):
            raise ValueError(f"downsample_padding must be 0 (DDPM) or 1, got {padding}.")
        pads = ((1, 1), (1, 1)) if padding else ((0, 1), (0, 1))
        self.conv = conv(channels, channels, opts, rngs, stride=2, padding=pads)

    def __call__(self, x: Array) -> Array:
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest-neighbour x2 then a 3x3 convolution."""

    def __init__(self, channels: int, opts: LayerOpts, rngs: nnx.Rngs):
        self.conv = conv(channels, channels, opts, rngs)

    def __call__(self, x: Array) -> Array:
        return self.conv(resample_2x(x, "up"))


def patch_grid(image_size: int, patch_size: int) -> int:
    """The side of the patch grid a network works on (`UNet2DConfig.patch_size`)."""
    if patch_size < 1 or image_size % patch_size:
        raise ValueError(
            f"patch_size={patch_size} must be a positive divisor of the image size {image_size}."
        )
    return image_size // patch_size


def to_patches(x: jax.Array, patch_size: int) -> jax.Array:
    """Space-to-depth: `[M, H, W, C]` -> `[M, H / p, W / p, p * p * C]`."""
    if patch_size == 1:
        return x
    return einops.rearrange(x, "m (h p) (w r) c -> m h w (p r c)", p=patch_size, r=patch_size)


def from_patches(x: jax.Array, patch_size: int) -> jax.Array:
    """Depth-to-space, `to_patches`' inverse."""
    if patch_size == 1:
        return x
    return einops.rearrange(x, "m h w (p r c) -> m (h p) (w r) c", p=patch_size, r=patch_size)
