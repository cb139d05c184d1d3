"""Building blocks shared by both generators: convolutions, normalisation, attention, embeddings.

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
import math

import jax
import jax.numpy as jnp
from flax import nnx

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
    # matmul per kernel tap, several times faster on XLA:CPU, whose own kernel gradient is slow.
    conv_impl: str = "native"


def default_conv_impl() -> str:
    """'matmul_wgrad' on CPU, 'native' on GPU and TPU (where cuDNN / the MXU do it well)."""
    return "matmul_wgrad" if jax.default_backend() == "cpu" else "native"


def _native_conv(lhs, rhs, strides, padding):
    return jax.lax.conv_general_dilated(
        lhs, rhs, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul_wgrad(lhs, rhs, strides, padding):
    return _native_conv(lhs, rhs, strides, padding)


def _conv_fwd(lhs, rhs, strides, padding):
    return _native_conv(lhs, rhs, strides, padding), (lhs, rhs)


def _conv_bwd(strides, padding, res, dy):
    lhs, rhs = res
    _, vjp = jax.vjp(lambda x: _native_conv(x, rhs, strides, padding), lhs)
    (dx,) = vjp(dy)
    # dW[i, j] = sum over batch and output positions of the input window at tap (i, j) times dy.
    padded = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    _, ho, wo, _ = dy.shape
    sh, sw = strides
    taps = []
    for i in range(rhs.shape[0]):
        for j in range(rhs.shape[1]):
            window = jax.lax.slice(
                padded,
                (0, i, j, 0),
                (padded.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, padded.shape[3]),
                (1, sh, sw, 1),
            )
            taps.append(jnp.einsum("nhwc,nhwo->co", window, dy, preferred_element_type=jnp.float32))
    dw = jnp.stack(taps).reshape(rhs.shape).astype(rhs.dtype)
    return dx, dw


_conv_matmul_wgrad.defvjp(_conv_fwd, _conv_bwd)


def _conv_general_dilated_matmul_wgrad(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """`lax.conv_general_dilated` for 2D NHWC convolutions with the faster kernel gradient."""
    plain = (lhs_dilation in (None, (1, 1))) and (rhs_dilation in (None, (1, 1)))
    if lhs.ndim != 4 or not plain or feature_group_count != 1 or isinstance(padding, str):
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **kwargs,
        )
    return _conv_matmul_wgrad(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)))


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
) -> nnx.Conv:
    """A convolution with PyTorch-style symmetric padding `k // 2` (matches imported weights)."""
    kernel_init, init = _kernel_init(zero_init)
    impl = opts.conv_impl
    return nnx.Conv(
        in_ch,
        out_ch,
        kernel_size=kernel,
        strides=stride,
        padding=tuple((k // 2, k // 2) for k in kernel),
        conv_general_dilated=(
            _conv_general_dilated_matmul_wgrad
            if impl == "matmul_wgrad"
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


class GroupNorm(nnx.Module):
    """GroupNorm with float32 statistics, fused with the optional scale-shift and SiLU.

    Statistics are taken per example over every axis between the first and the channels, so
    `[M, H, W, C]` normalises each frame and `[B, N, H, W, C]` a whole clip.
    """

    def __init__(self, channels: int, opts: LayerOpts, eps: float | None = None):
        groups = min(opts.num_groups, channels)
        if channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels do not split into {groups} groups.")
        self.groups = groups
        self.eps = opts.norm_eps if eps is None else eps
        self.dtype = opts.dtype
        self.scale = nnx.Param(
            jnp.ones((channels,), opts.param_dtype), logical_axes=("norm",), init="ones"
        )
        self.bias = nnx.Param(
            jnp.zeros((channels,), opts.param_dtype), logical_axes=("norm",), init="zeros"
        )

    def __call__(
        self, x: Array, act: bool = False, scale_shift: tuple[Array, Array] | None = None
    ) -> Array:
        shape = x.shape
        xf = x.astype(jnp.float32).reshape(shape[:-1] + (self.groups, shape[-1] // self.groups))
        axes = tuple(range(1, xf.ndim - 2)) + (xf.ndim - 1,)
        mean = jnp.mean(xf, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=axes, keepdims=True)
        y = ((xf - mean) * jax.lax.rsqrt(var + self.eps)).reshape(shape)
        y = y * self.scale.value.astype(jnp.float32) + self.bias.value.astype(jnp.float32)
        if scale_shift is not None:
            scale, shift = scale_shift
            y = y * (1.0 + scale.astype(jnp.float32)) + shift.astype(jnp.float32)
        if act:
            y = jax.nn.silu(y)
        return y.astype(self.dtype)


class LayerNorm(nnx.Module):
    """LayerNorm over channels with float32 statistics."""

    def __init__(self, channels: int, opts: LayerOpts, eps: float = 1e-5):
        self.eps = eps
        self.dtype = opts.dtype
        self.scale = nnx.Param(
            jnp.ones((channels,), opts.param_dtype), logical_axes=("norm",), init="ones"
        )
        self.bias = nnx.Param(
            jnp.zeros((channels,), opts.param_dtype), logical_axes=("norm",), init="zeros"
        )

    def __call__(self, x: Array) -> Array:
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.scale.value + self.bias.value
        return y.astype(self.dtype)


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
        self.norm1 = GroupNorm(in_ch, opts)
        self.conv1 = conv(in_ch, out_ch, opts, rngs)
        self.time_emb_proj = dense(emb_dim, 2 * out_ch if scale_shift else out_ch, opts, rngs)
        self.norm2 = GroupNorm(out_ch, opts)
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


def attend(q: Array, k: Array, v: Array, heads: int, implementation: str | None = None) -> Array:
    """Multi-head attention over axis 1 of `[B, L, G, heads * d]` queries.

    Any group axis G (spatial positions, for temporal attention) is folded into the heads, so
    attention along time needs a reshape and no transpose.
    """
    b, lq, g, inner = q.shape
    d = inner // heads
    out = jax.nn.dot_product_attention(
        q.reshape(b, lq, g * heads, d),
        k.reshape(b, k.shape[1], g * heads, d),
        v.reshape(b, v.shape[1], g * heads, d),
        implementation=implementation,
    )
    return out.reshape(b, lq, g, inner)


class Attention(nnx.Module):
    """Multi-head (cross-)attention with q/k/v/out projections on `[B, L, G, C]` tokens."""

    def __init__(
        self,
        dim: int,
        head_dim: int,
        opts: LayerOpts,
        rngs: nnx.Rngs,
        *,
        context_dim: int | None = None,
        qkv_bias: bool = True,
        zero_init: bool = False,
    ):
        if dim % head_dim:
            raise ValueError(f"attention width {dim} is not a multiple of head_dim {head_dim}.")
        self.heads = dim // head_dim
        self.impl = opts.attention_impl
        kv_dim = context_dim or dim
        self.to_q = dense(dim, dim, opts, rngs, use_bias=qkv_bias)
        self.to_k = dense(kv_dim, dim, opts, rngs, use_bias=qkv_bias)
        self.to_v = dense(kv_dim, dim, opts, rngs, use_bias=qkv_bias)
        self.to_out = dense(dim, dim, opts, rngs, zero_init=zero_init)

    def __call__(self, x: Array, context: Array | None = None) -> Array:
        """x `[B, L, G, C]`; context `[B, S, 1, Cc]` (cross-attention) or None (self-attention)."""
        src = x if context is None else context
        out = attend(self.to_q(x), self.to_k(src), self.to_v(src), self.heads, self.impl)
        return self.to_out(out)


class FeedForward(nnx.Module):
    """GEGLU feed-forward (`proj` to 2 x mult x dim, gate with GELU, project back)."""

    def __init__(self, dim: int, opts: LayerOpts, rngs: nnx.Rngs, mult: int = 4):
        self.proj = dense(dim, 2 * mult * dim, opts, rngs)
        self.out = dense(mult * dim, dim, opts, rngs)

    def __call__(self, x: Array) -> Array:
        h, gate = jnp.split(self.proj(x), 2, axis=-1)
        return self.out(h * jax.nn.gelu(gate, approximate=False))


class AttentionBlock(nnx.Module):
    """The DDPM / ADM / diffusers-UNet2DModel attention block on `[B, L, G, C]` tokens.

    GroupNorm (statistics over L and G), self-attention along L, output projection, residual; then,
    with `context_dim`, LayerNorm and cross-attention to a text context, residual.
    """

    def __init__(
        self,
        channels: int,
        head_dim: int,
        opts: LayerOpts,
        rngs: nnx.Rngs,
        *,
        context_dim: int | None = None,
        zero_init: bool = True,
    ):
        self.group_norm = GroupNorm(channels, opts)
        self.attn = Attention(channels, head_dim, opts, rngs, zero_init=zero_init)
        self.norm_cross = LayerNorm(channels, opts) if context_dim else None
        self.cross = (
            Attention(
                channels,
                head_dim,
                opts,
                rngs,
                context_dim=context_dim,
                qkv_bias=False,
                zero_init=True,
            )
            if context_dim
            else None
        )

    def __call__(self, x: Array, context: Array | None = None) -> Array:
        """x `[B, L, G, C]`; context `[B, S, Cc]` or None."""
        x = x + self.attn(self.group_norm(x)).astype(x.dtype)
        if self.cross is not None and context is not None:
            x = x + self.cross(self.norm_cross(x), context[:, :, None, :]).astype(x.dtype)
        return x


class TransformerBlock(nnx.Module):
    """A transformer on `[B, L, G, C]` tokens, attending along L (diffusers' Transformer2DModel and
    TransformerTemporalModel layout).

    GroupNorm, `proj_in`; LayerNorm + self-attention; LayerNorm + a second attention
    (cross-attention to the context when `context_dim` is set, else a second self-attention when
    `double_self`);
    LayerNorm + GEGLU feed-forward; `proj_out` (zero-initialised); residual around the whole.
    The transformer runs at width `inner_dim` (default: `channels`).
    """

    def __init__(
        self,
        channels: int,
        head_dim: int,
        opts: LayerOpts,
        rngs: nnx.Rngs,
        *,
        context_dim: int | None = None,
        double_self: bool = False,
        zero_init: bool = True,
        inner_dim: int = 0,
    ):
        inner = inner_dim or channels
        self.norm = GroupNorm(channels, opts, eps=1e-6)
        self.proj_in = dense(channels, inner, opts, rngs)
        self.norm1 = LayerNorm(inner, opts)
        self.attn1 = Attention(inner, head_dim, opts, rngs, qkv_bias=False)
        second = bool(context_dim or double_self)
        self.norm2 = LayerNorm(inner, opts) if second else None
        self.attn2 = (
            Attention(inner, head_dim, opts, rngs, context_dim=context_dim or None, qkv_bias=False)
            if second
            else None
        )
        self.cross = bool(context_dim)
        self.norm3 = LayerNorm(inner, opts)
        self.ff = FeedForward(inner, opts, rngs)
        self.proj_out = dense(inner, channels, opts, rngs, zero_init=zero_init)

    def __call__(self, x: Array, context: Array | None = None) -> Array:
        """x `[B, L, G, C]`; context `[B, S, Cc]` or None."""
        h = self.proj_in(self.norm(x))
        h = h + self.attn1(self.norm1(h))
        if self.attn2 is not None and (context is not None or not self.cross):
            ctx = context[:, :, None, :] if self.cross else None
            h = h + self.attn2(self.norm2(h), ctx)
        h = h + self.ff(self.norm3(h))
        return x + self.proj_out(h).astype(x.dtype)


def attention_block(
    kind: str, channels: int, head_dim: int, opts: LayerOpts, rngs: nnx.Rngs, **kwargs
) -> nnx.Module:
    """`'block'` (ADM-style AttentionBlock) or `'transformer'` (TransformerBlock)."""
    if kind == "block":
        kwargs.pop("double_self", None)
        kwargs.pop("inner_dim", None)
        return AttentionBlock(channels, head_dim, opts, rngs, **kwargs)
    if kind == "transformer":
        return TransformerBlock(channels, head_dim, opts, rngs, **kwargs)
    raise ValueError(f"Unknown attention type {kind!r}; choose 'block' or 'transformer'.")


def resample_2x(x: Array, direction: str) -> Array:
    """`[M, H, W, C]` halved by 2x2 average pooling ('down') or doubled by nearest ('up')."""
    m, h, w, c = x.shape
    if direction == "down":
        return x.reshape(m, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).astype(x.dtype)
    return jnp.broadcast_to(x[:, :, None, :, None, :], (m, h, 2, w, 2, c)).reshape(
        m, 2 * h, 2 * w, c
    )


class Downsample(nnx.Module):
    """Stride-2 3x3 convolution."""

    def __init__(self, channels: int, opts: LayerOpts, rngs: nnx.Rngs):
        self.conv = conv(channels, channels, opts, rngs, stride=2)

    def __call__(self, x: Array) -> Array:
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest-neighbour x2 then a 3x3 convolution."""

    def __init__(self, channels: int, opts: LayerOpts, rngs: nnx.Rngs):
        self.conv = conv(channels, channels, opts, rngs)

    def __call__(self, x: Array) -> Array:
        return self.conv(resample_2x(x, "up"))
