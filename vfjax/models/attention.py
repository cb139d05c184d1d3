"""Attention on `[B, L, G, C]` tokens: attention along L, with any group axis G (spatial
positions, for temporal attention) folded into the heads, so both generators reach the axis they
attend over by a reshape, never a transpose. The ADM-style block and the diffusers-style
transformer block both build on `Attention` (`jax.nn.dot_product_attention`)."""

import jax
import jax.numpy as jnp
from flax import nnx

from vfjax.models.layers import GroupNorm, LayerOpts, dense, layer_norm

Array = jax.Array


def attend(q: Array, k: Array, v: Array, heads: int, implementation: str | None = None) -> Array:
    """Multi-head attention over axis 1 of `[B, L, G, heads * d]` queries."""
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
    """Multi-head (cross-)attention with q/k/v/out projections on `[B, L, G, C]` tokens.

    Not `nnx.MultiHeadAttention`: that attends along the second-to-last axis only, while here
    the group axis G joins the heads; and the separate `to_q/to_k/to_v/to_out` projections are
    the layout the checkpoint converters map onto.
    """

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
        self.group_norm = GroupNorm(channels, opts, rngs)
        self.attn = Attention(channels, head_dim, opts, rngs, zero_init=zero_init)
        self.norm_cross = layer_norm(channels, opts, rngs) if context_dim else None
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
    `double_self`); LayerNorm + GEGLU feed-forward; `proj_out` (zero-initialised); residual around
    the whole. The transformer runs at width `inner_dim` (default: `channels`).
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
        self.norm = GroupNorm(channels, opts, rngs, eps=1e-6)
        self.proj_in = dense(channels, inner, opts, rngs)
        self.norm1 = layer_norm(inner, opts, rngs)
        self.attn1 = Attention(inner, head_dim, opts, rngs, qkv_bias=False)
        second = bool(context_dim or double_self)
        self.norm2 = layer_norm(inner, opts, rngs) if second else None
        self.attn2 = (
            Attention(inner, head_dim, opts, rngs, context_dim=context_dim or None, qkv_bias=False)
            if second
            else None
        )
        self.cross = bool(context_dim)
        self.norm3 = layer_norm(inner, opts, rngs)
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
