"""Convolutions, linear layers and normalisation shared by both generators, and their numerics.

Every parameter carries logical axis names in its `logical_axes` metadata (`'in'`, `'out'`,
`'norm'`, `'vocab'`, `'embed'`), which `vfjax.sharding` maps onto the mesh, and its
initialiser in its `init` metadata (`'fan_in'`, `'fan_out'`, `'zeros'`, `'ones'`), which
`vfjax.models.init.init_params` reads to create all parameters from one random draw. Parameters
are stored in `param_dtype` (float32 by default) and computation runs in `dtype` (bfloat16 by
default), except normalisation statistics, which are always float32.

Spatial layers see `[M, H, W, C]` (M = batch, or batch x frames for videos); the video layers
see `[B, N, H, W, C]` and reshape (never transpose) to reach the axis they work on.
"""

import dataclasses
import functools

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from vfjax.models import wgrad

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LayerOpts:
    """Numerics shared by every layer of a network."""

    dtype: jnp.dtype = jnp.bfloat16
    param_dtype: jnp.dtype = jnp.float32
    num_groups: int = 32
    norm_eps: float = 1e-5
    attention_impl: str | None = None  # None (XLA picks), 'xla' or 'cudnn'.
    # 'native': XLA's convolution and its gradients. 'matmul_wgrad': the kernel gradient as one
    # matmul per kernel tap (`vfjax.models.wgrad`), several times faster on XLA:CPU.
    conv_impl: str = "native"


def layer_opts(cfg) -> LayerOpts:
    """The numerics of a generator's architecture (`UNet2DConfig` or `UNet3DConfig`)."""
    return LayerOpts(
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        num_groups=cfg.num_groups,
        norm_eps=cfg.norm_eps,
        attention_impl=cfg.attention_impl,
        conv_impl=wgrad.default_conv_impl() if cfg.conv_impl == "auto" else cfg.conv_impl,
    )


def _norm_metadata() -> dict:
    return {
        "scale_metadata": {"logical_axes": ("norm",), "init": "ones"},
        "bias_metadata": {"logical_axes": ("norm",), "init": "zeros"},
    }


def _kernel_init(zero: bool):
    """Fan-in scaled normal (std 1/sqrt(fan_in)) or zeros, with the matching `init` metadata."""
    if zero:
        return nnx.initializers.zeros_init(), "zeros"
    return nnx.initializers.variance_scaling(1.0, "fan_in", "normal"), "fan_in"


def conv(
    in_ch: int,
    out_ch: int,
    opts: LayerOpts,
    rngs: nnx.Rngs,
    kernel: tuple[int, ...] = (3, 3),
    stride: int = 1,
    zero_init: bool = False,
    padding: tuple[tuple[int, int], ...] | None = None,
) -> nnx.Conv:
    """A convolution; `padding` defaults to PyTorch's symmetric `k // 2` (matches imported
    weights)."""
    kernel_init, init = _kernel_init(zero_init)
    return nnx.Conv(
        in_ch,
        out_ch,
        kernel_size=kernel,
        strides=stride,
        padding=padding or tuple((k // 2, k // 2) for k in kernel),
        conv_general_dilated=(
            wgrad.conv_general_dilated
            if opts.conv_impl == "matmul_wgrad"
            else jax.lax.conv_general_dilated
        ),
        dtype=opts.dtype,
        param_dtype=opts.param_dtype,
        kernel_init=kernel_init,
        kernel_metadata={"logical_axes": (None,) * len(kernel) + ("in", "out"), "init": init},
        bias_metadata={"logical_axes": ("norm",), "init": "zeros"},
        rngs=rngs,
    )


def dense(
    in_dim: int,
    out_dim: int,
    opts: LayerOpts,
    rngs: nnx.Rngs,
    use_bias: bool = True,
    zero_init: bool = False,
) -> nnx.Linear:
    """A linear layer over the last axis."""
    kernel_init, init = _kernel_init(zero_init)
    return nnx.Linear(
        in_dim,
        out_dim,
        use_bias=use_bias,
        dtype=opts.dtype,
        param_dtype=opts.param_dtype,
        kernel_init=kernel_init,
        kernel_metadata={"logical_axes": ("in", "out"), "init": init},
        bias_metadata={"logical_axes": ("norm",), "init": "zeros"},
        rngs=rngs,
    )


def layer_norm(channels: int, opts: LayerOpts, rngs: nnx.Rngs, eps: float = 1e-5) -> nnx.LayerNorm:
    """LayerNorm over channels (statistics in float32, as flax computes them)."""
    return nnx.LayerNorm(
        channels,
        epsilon=eps,
        dtype=opts.dtype,
        param_dtype=opts.param_dtype,
        use_fast_variance=False,
        rngs=rngs,
        **_norm_metadata(),
    )


class GroupNorm(nnx.GroupNorm):
    """flax's GroupNorm, run in float32 and fused with the optional scale-shift and SiLU.

    Kept as a subclass because the residual blocks apply the timestep's scale and shift and the
    SiLU to the float32 normalised values before the one cast back to the compute dtype.
    Statistics are taken per example over every axis between the first and the channels, so
    `[M, H, W, C]` normalises each frame and `[B, N, H, W, C]` a whole clip.
    """

    def __init__(self, channels: int, opts: LayerOpts, rngs: nnx.Rngs, eps: float | None = None):
        groups = min(opts.num_groups, channels)
        if channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels do not split into {groups} groups.")
        super().__init__(
            channels,
            num_groups=groups,
            epsilon=opts.norm_eps if eps is None else eps,
            dtype=jnp.float32,
            param_dtype=opts.param_dtype,
            use_fast_variance=False,
            rngs=rngs,
            **_norm_metadata(),
        )
        self.compute_dtype = opts.dtype

    def __call__(
        self, x: Array, act: bool = False, scale_shift: tuple[Array, Array] | None = None
    ) -> Array:
        scale = self.scale[...] if self.scale is not None else None
        bias = self.bias[...] if self.bias is not None else None
        return _norm_act(
            x, scale, bias, scale_shift, self.num_groups, self.epsilon, act, self.compute_dtype
        )


# Rematerialised: the backward pass recomputes the float32 normalisation, scale-shift and SiLU
# from the layer's input (compute dtype) instead of keeping their float32 intermediates. On a
# TPU (reduced `ucf101_64`, v5e) that is 7.6% fewer bytes a train step and 5% less peak memory
# than keeping them, for 0.2% more FLOPs (PERFORMANCE.md, "Where the bytes go").
@functools.partial(jax.checkpoint, static_argnums=(4, 5, 6, 7))
def _norm_act(x, scale, bias, scale_shift, groups: int, eps: float, act: bool, dtype) -> Array:
    """`group_norm`, then the timestep's scale and shift and the SiLU, in float32; one cast to
    `dtype` at the end."""
    y = group_norm(x, scale, bias, groups, eps)
    if scale_shift is not None:
        ts_scale, ts_shift = scale_shift
        y = y * (1.0 + ts_scale.astype(jnp.float32)) + ts_shift.astype(jnp.float32)
    if act:
        y = jax.nn.silu(y)
    return y.astype(dtype)


def group_norm(x: Array, scale, bias, groups: int, eps: float) -> Array:
    """Group normalisation of `x` (`[B, ..., C]`: statistics per example over every axis but the
    first, in groups of channels), in float32. flax reshapes the activation to `[..., groups,
    channels per group]`, which on a TPU puts 4 channels (128 in 32 groups) in the 128 lanes of
    a tile; here each channel's sums are taken first and summed over its group on the small
    `[B, C]` result. Measured on a reduced `ucf101_64` compiled for v5e: 4.5% fewer bytes a
    train step, 7.8% less peak memory (PERFORMANCE.md, "Where the bytes go"). Only the
    summation order differs from flax."""
    x = x.astype(jnp.float32)
    axes = tuple(range(1, x.ndim - 1))
    count = x.size // (x.shape[0] * groups)  # Elements in one group of one example.
    expand = (slice(None),) + (None,) * len(axes)

    def group_mean(sums: Array) -> Array:
        """`[B, C]` sums per channel -> each channel's group mean, as `[B, 1, ..., 1, C]`."""
        means = sums.reshape(sums.shape[0], groups, -1).sum(-1) / count
        return jnp.repeat(means, sums.shape[-1] // groups, axis=-1)[expand]

    centred = x - group_mean(x.sum(axes))
    y = centred * jax.lax.rsqrt(group_mean(jnp.square(centred).sum(axes)) + eps)
    if scale is not None:
        y = y * scale.astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y


def resample_2x(x: Array, direction: str) -> Array:
    """`[M, H, W, C]` halved by 2x2 average pooling ('down') or doubled by nearest ('up')."""
    if direction == "down":
        return einops.reduce(x, "m (h 2) (w 2) c -> m h w c", "mean").astype(x.dtype)
    return einops.repeat(x, "m h w c -> m (h 2) (w 2) c")
