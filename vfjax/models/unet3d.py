"""The residual generator: a video UNet factorised in space and time.

Activations stay `[B, N, H, W, C]`. Spatial layers (3x3 convolutions, spatial attention,
resampling) see `[B * N, H, W, C]`; temporal convolutions see `[B, N, H * W, C]` with a `(3, 1)`
kernel; temporal attention sees tokens `[B, N, H * W, C]` with the positions folded into the
attention heads. All of these are reshapes of the same buffer, never transposes.

The frame index enters through a sinusoidal embedding added, per frame, to the timestep
embedding that every residual block receives.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vfjax.models import attention, blocks, layers, wgrad

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class UNet3DConfig:
    """Architecture of the residual generator (and of the VDM baseline's only network)."""

    image_size: int = 64
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16, 8)  # spatial attention
    temporal_attn_resolutions: tuple[int, ...] = (64, 32, 16, 8)
    mid_attention: bool = True
    attn_type: str = "block"  # 'block' (ADM-style) or 'transformer' (diffusers-style, with FF)
    temporal_input_attention: bool = False  # a temporal transformer right after conv_in
    temporal_input_dim: int = 0  # its width (0: the first level's channels)
    head_dim: int = 64
    temporal_conv_layers: int = 2  # convolutions in each temporal conv block; 0 disables them
    frame_embedding: bool = True
    dropout: float = 0.0
    scale_shift: bool = False
    zero_init: bool = True
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    num_groups: int = 32
    norm_eps: float = 1e-5
    num_classes: int = 0
    text_dim: int = 0
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    attention_impl: str | None = None
    conv_impl: str = "auto"  # 'auto', 'native' or 'matmul_wgrad' (see layers.LayerOpts)

    def opts(self) -> layers.LayerOpts:
        return layers.LayerOpts(
            dtype=jnp.dtype(self.dtype),
            param_dtype=jnp.dtype(self.param_dtype),
            num_groups=self.num_groups,
            norm_eps=self.norm_eps,
            attention_impl=self.attention_impl,
            conv_impl=wgrad.default_conv_impl() if self.conv_impl == "auto" else self.conv_impl,
        )


class TemporalConv(nnx.Module):
    """GroupNorm, SiLU, (dropout,) `(3, 1)` convolution over frames, repeated; residual.

    The last convolution starts at zero, so a new block is the identity (the image prior of the
    spatial layers is untouched at initialisation).
    """

    def __init__(self, channels: int, num_layers: int, dropout: float, opts, rngs: nnx.Rngs):
        self.norms = nnx.List([layers.GroupNorm(channels, opts, rngs) for _ in range(num_layers)])
        self.convs = nnx.List(
            [
                layers.conv(
                    channels, channels, opts, rngs, kernel=(3, 1), zero_init=i == num_layers - 1
                )
                for i in range(num_layers)
            ]
        )
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
        """x `[B, N, H, W, C]`."""
        b, n, h, w, c = x.shape
        y = x.reshape(b, n, h * w, c)
        for i, (norm, conv) in enumerate(zip(self.norms, self.convs, strict=True)):
            y = norm(y, act=True)
            if i > 0:
                y = self.dropout(y, deterministic=rngs is None, rngs=rngs)
            y = conv(y)
        return x + y.reshape(x.shape).astype(x.dtype)


class VideoBlock(nnx.Module):
    """Residual block, temporal convolution, spatial attention, temporal attention."""

    def __init__(self, cfg, in_ch, out_ch, emb_dim, spatial, temporal, opts, rngs):
        self.resnet = blocks.ResBlock.from_config(cfg, in_ch, out_ch, emb_dim, opts, rngs)
        self.temporal_conv = (
            TemporalConv(out_ch, cfg.temporal_conv_layers, cfg.dropout, opts, rngs)
            if cfg.temporal_conv_layers
            else None
        )
        head_dim = min(cfg.head_dim, out_ch)
        self.spatial_attention = (
            attention.attention_block(
                cfg.attn_type,
                out_ch,
                head_dim,
                opts,
                rngs,
                context_dim=cfg.text_dim or None,
                zero_init=cfg.zero_init,
            )
            if spatial
            else None
        )
        self.temporal_attention = (
            attention.attention_block(
                cfg.attn_type, out_ch, head_dim, opts, rngs, double_self=True, zero_init=True
            )
            if temporal
            else None
        )

    def __call__(self, x: Array, emb: Array, context, rngs) -> Array:
        """x `[B, N, H, W, C]`, emb `[B * N, D]`, context `[B, S, Dc]` or None."""
        b, n, h, w, _ = x.shape
        y = self.resnet(x.reshape((b * n,) + x.shape[2:]), emb, rngs)
        y = y.reshape(b, n, h, w, -1)
        if self.temporal_conv is not None:
            y = self.temporal_conv(y, rngs)
        c = y.shape[-1]
        if self.spatial_attention is not None:
            ctx = None if context is None else jnp.repeat(context, n, axis=0)
            y = self.spatial_attention(y.reshape(b * n, h * w, 1, c), ctx).reshape(y.shape)
        if self.temporal_attention is not None:
            y = self.temporal_attention(y.reshape(b, n, h * w, c)).reshape(y.shape)
        return y


def _frames_apply(fn, x: Array) -> Array:
    """Applies a per-image layer to every frame of `[B, N, H, W, C]`."""
    b, n = x.shape[:2]
    y = fn(x.reshape((b * n,) + x.shape[2:]))
    return y.reshape((b, n) + y.shape[1:])


class UNet3D(nnx.Module):
    """Predicts per-frame noise: `[B, N, H, W, C]`, timesteps `[B]`, condition -> same shape."""

    def __init__(self, cfg: UNet3DConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        opts = cfg.opts()
        chs = [cfg.channels * m for m in cfg.channel_mult]
        emb_dim = 4 * chs[0]
        self.conv_in = layers.conv(cfg.in_channels, chs[0], opts, rngs)
        self.time_embedding = blocks.EmbeddingMLP(chs[0], emb_dim, opts, rngs)
        self.frame_embedding = (
            blocks.EmbeddingMLP(chs[0], emb_dim, opts, rngs) if cfg.frame_embedding else None
        )
        self.class_embedding = blocks.class_embedding(cfg.num_classes, emb_dim, opts, rngs)
        self.input_attention = (
            attention.attention_block(
                cfg.attn_type,
                chs[0],
                min(cfg.head_dim, cfg.temporal_input_dim or chs[0]),
                opts,
                rngs,
                double_self=True,
                inner_dim=cfg.temporal_input_dim,
            )
            if cfg.temporal_input_attention
            else None
        )

        def block(in_ch, out_ch, res):
            return VideoBlock(
                cfg,
                in_ch,
                out_ch,
                emb_dim,
                res in cfg.attn_resolutions,
                res in cfg.temporal_attn_resolutions,
                opts,
                rngs,
            )

        skips = [chs[0]]
        ch = chs[0]
        down, downsamplers = [], []
        for i, out_ch in enumerate(chs):
            res = cfg.image_size // 2**i
            level = []
            for _ in range(cfg.num_res_blocks):
                level.append(block(ch, out_ch, res))
                ch = out_ch
                skips.append(ch)
            down.append(nnx.List(level))
            last = i == len(chs) - 1
            downsamplers.append(None if last else blocks.Downsample(ch, opts, rngs))
            if not last:
                skips.append(ch)
        self.down_blocks = nnx.List(down)
        self.downsamplers = nnx.List(downsamplers)

        # Middle: resnet, temporal conv, spatial and temporal attention; resnet, temporal conv.
        mid = VideoBlock(cfg, ch, ch, emb_dim, cfg.mid_attention, cfg.mid_attention, opts, rngs)
        self.mid_block_1 = mid
        self.mid_block_2 = VideoBlock(cfg, ch, ch, emb_dim, False, False, opts, rngs)

        up, upsamplers = [], []
        for i, out_ch in reversed(list(enumerate(chs))):
            res = cfg.image_size // 2**i
            level = []
            for _ in range(cfg.num_res_blocks + 1):
                level.append(block(ch + skips.pop(), out_ch, res))
                ch = out_ch
            up.append(nnx.List(level))
            upsamplers.append(None if i == 0 else blocks.Upsample(ch, opts, rngs))
        self.up_blocks = nnx.List(up)
        self.upsamplers = nnx.List(upsamplers)

        self.conv_norm_out = layers.GroupNorm(ch, opts, rngs)
        self.conv_out = layers.conv(ch, cfg.out_channels, opts, rngs, zero_init=cfg.zero_init)

    def embed(self, t: Array, num_frames: int, cond: dict | None) -> Array:
        """Per-frame embedding `[B, N, D]`: timestep + frame index + class."""
        dim = self.cfg.channels * self.cfg.channel_mult[0]
        dtype = self.cfg.opts().dtype
        sinus = blocks.timestep_embedding(t, dim, self.cfg.flip_sin_to_cos, self.cfg.freq_shift)
        emb = self.time_embedding(sinus.astype(dtype))[:, None, :]
        if self.frame_embedding is not None:
            frames = blocks.timestep_embedding(
                jnp.arange(num_frames), dim, self.cfg.flip_sin_to_cos
            )
            emb = emb + self.frame_embedding(frames.astype(dtype))[None]
        if self.class_embedding is not None:
            labels = None if cond is None else cond.get("label")
            if labels is None:
                labels = jnp.full(t.shape, self.cfg.num_classes, jnp.int32)
            emb = emb + self.class_embedding(labels).astype(emb.dtype)[:, None, :]
        return jnp.broadcast_to(emb, (t.shape[0], num_frames, emb.shape[-1]))

    def __call__(
        self, x: Array, t: Array, cond: dict | None = None, rngs: nnx.Rngs | None = None
    ) -> Array:
        """Args: x `[B, N, H, W, C]`; t `[B]`; cond {'label': [B], 'text': [B, S, D]} or None; rngs
        for dropout (None: deterministic). Returns float32 `[B, N, H, W, out_channels]`."""
        with jax.named_scope("residual_generator"):
            b, n = x.shape[:2]
            emb = self.embed(t, n, cond).reshape(b * n, -1)
            context = None if cond is None else cond.get("text")
            h = _frames_apply(self.conv_in, x.astype(self.cfg.opts().dtype))
            if self.input_attention is not None:
                c = h.shape[-1]
                h = self.input_attention(h.reshape(b, n, -1, c)).reshape(h.shape)
            skips = [h]
            for level, down in zip(self.down_blocks, self.downsamplers, strict=True):
                for blk in level:
                    h = blk(h, emb, context, rngs)
                    skips.append(h)
                if down is not None:
                    h = _frames_apply(down, h)
                    skips.append(h)
            h = self.mid_block_1(h, emb, context, rngs)
            h = self.mid_block_2(h, emb, context, rngs)
            for level, upsample in zip(self.up_blocks, self.upsamplers, strict=True):
                for blk in level:
                    h = blk(jnp.concatenate([h, skips.pop()], axis=-1), emb, context, rngs)
                if upsample is not None:
                    h = _frames_apply(upsample, h)
            h = _frames_apply(lambda y: self.conv_out(self.conv_norm_out(y, act=True)), h)
            return h.astype(jnp.float32)
