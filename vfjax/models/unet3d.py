"""The residual generator: a video UNet factorised in space and time.

Activations stay `[B, N, H, W, C]`. Spatial layers (3x3 convolutions, spatial attention,
resampling) see `[B * N, H, W, C]`; temporal convolutions see `[B, N, H * W, C]` with a `(3, 1)`
kernel; temporal attention sees tokens `[B, N, H * W, C]` with the positions folded into the
attention heads. All of these are reshapes of the same buffer, never transposes (the einops
patterns below group neighbouring axes and never reorder them).

The frame index enters through a sinusoidal embedding added, per frame, to the timestep
embedding that every residual block receives.
"""

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from vfjax.models import attention, blocks, layers
from vfjax.models.architecture import UNet3DConfig

Array = jax.Array


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
        y = einops.rearrange(x, "b n h w c -> b n (h w) c")
        for i, (norm, conv) in enumerate(zip(self.norms, self.convs, strict=True)):
            y = norm(y, act=True)
            if i > 0:
                y = self.dropout(y, deterministic=rngs is None, rngs=rngs)
            y = conv(y)
        return x + y.reshape(x.shape).astype(x.dtype)


class KeyFrameAttention(nnx.Module):
    """Every frame's positions attend to all positions of the key frame (frame N // 2, as
    `UNet3DConfig.key_frame_input`): GroupNorm per frame, attention with queries from each frame
    and keys and values from the key frame, output projection zero-initialised, residual."""

    def __init__(self, channels: int, head_dim: int, opts, rngs: nnx.Rngs):
        self.norm = layers.GroupNorm(channels, opts, rngs)
        self.attn = attention.Attention(channels, head_dim, opts, rngs, zero_init=True)

    def __call__(self, x: Array, referenced: bool = False) -> Array:
        """x `[B, N, H, W, C]` -> the same shape. `referenced`: the batch is two halves, the
        clips and their reference clips (`UNet3D`'s `key_reference`), and both halves attend to
        the key frame of the second."""
        b, n = x.shape[:2]
        h = self.norm(einops.rearrange(x, "b n h w c -> (b n) (h w) 1 c"))
        h = einops.rearrange(h, "(b n) l 1 c -> b n l 1 c", b=b)
        # The queries of all frames of a video at once against its key frame's positions: the
        # key frame's keys and values are projected once per video, not once per frame.
        queries = einops.rearrange(h, "b n l 1 c -> b (n l) 1 c")
        keys = h[:, n // 2]
        if referenced:
            keys = jnp.concatenate([keys[b // 2 :]] * 2)
        out = self.attn(queries, keys)
        return x + out.reshape(x.shape).astype(x.dtype)


class VideoBlock(nnx.Module):
    """Residual block, temporal convolution, spatial attention, temporal attention (over the
    frames at each position, or with `spacetime` over all positions of all frames), and with
    `key_frame` attention from every frame to the key frame."""

    def __init__(
        self,
        cfg,
        in_ch,
        out_ch,
        emb_dim,
        spatial,
        temporal,
        opts,
        rngs,
        spacetime=False,
        key_frame=False,
    ):
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
        self.spacetime = spacetime
        self.temporal_attention = (
            attention.attention_block(
                cfg.attn_type, out_ch, head_dim, opts, rngs, double_self=True, zero_init=True
            )
            if temporal or spacetime
            else None
        )
        self.key_frame_attention = (
            KeyFrameAttention(out_ch, head_dim, opts, rngs) if key_frame else None
        )

    def __call__(self, x: Array, emb: Array, context, rngs, referenced: bool = False) -> Array:
        """x `[B, N, H, W, C]`, emb `[B * N, D]`, context `[B, S, Dc]` or None; `referenced` as
        `KeyFrameAttention`'s."""
        y = _frames_apply(lambda frames: self.resnet(frames, emb, rngs), x)
        if self.temporal_conv is not None:
            y = self.temporal_conv(y, rngs)
        if self.spatial_attention is not None:
            ctx = None if context is None else jnp.repeat(context, x.shape[1], axis=0)
            tokens = einops.rearrange(y, "b n h w c -> (b n) (h w) 1 c")
            y = self.spatial_attention(tokens, ctx).reshape(y.shape)
        if self.temporal_attention is not None:
            pattern = "b n h w c -> b (n h w) 1 c" if self.spacetime else "b n h w c -> b n (h w) c"
            y = self.temporal_attention(einops.rearrange(y, pattern)).reshape(y.shape)
        if self.key_frame_attention is not None:
            y = self.key_frame_attention(y, referenced)
        return y


def _direct(block, x, emb, context, rngs, referenced=False):
    return block(x, emb, context, rngs, referenced)


# The same call, its activations recomputed in the backward pass (`UNet3DConfig.remat`).
_rematerialised = nnx.remat(_direct, static_argnums=5)


def _frames_apply(fn, x: Array) -> Array:
    """Applies a per-image layer to every frame of `[B, N, H, W, C]`."""
    y = fn(einops.rearrange(x, "b n h w c -> (b n) h w c"))
    return einops.rearrange(y, "(b n) h w c -> b n h w c", b=x.shape[0])


class UNet3D(nnx.Module):
    """Predicts per-frame noise: `[B, N, H, W, C]`, timesteps `[B]`, condition -> same shape."""

    def __init__(self, cfg: UNet3DConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        opts = layers.layer_opts(cfg)
        self.dtype = opts.dtype
        chs = [cfg.channels * m for m in cfg.channel_mult]
        emb_dim = 4 * chs[0]
        in_channels = cfg.in_channels * (2 if cfg.key_frame_input else 1) * cfg.patch_size**2
        grid = blocks.patch_grid(cfg.image_size, cfg.patch_size)
        self.conv_in = layers.conv(in_channels, chs[0], opts, rngs)
        self.time_embedding = blocks.EmbeddingMLP(chs[0], emb_dim, opts, rngs)
        self.frame_embedding = (
            blocks.EmbeddingMLP(chs[0], emb_dim, opts, rngs) if cfg.frame_embedding else None
        )
        self.class_embedding = blocks.class_embedding(cfg.num_classes, emb_dim, opts, rngs)
        # Rows 0 (generated) and 1 (held); a table of one class per frame's role.
        self.held_embedding = (
            blocks.class_embedding(1, emb_dim, opts, rngs) if cfg.held_frames else None
        )
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
                spacetime=res in cfg.spacetime_attn_resolutions,
                key_frame=res in cfg.key_frame_attn_resolutions,
            )

        skips = [chs[0]]
        ch = chs[0]
        down, downsamplers = [], []
        for i, out_ch in enumerate(chs):
            res = grid // 2**i
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
        mid_res = grid // 2 ** (len(chs) - 1)
        mid_spacetime = cfg.mid_attention and mid_res in cfg.spacetime_attn_resolutions
        mid = VideoBlock(
            cfg, ch, ch, emb_dim, cfg.mid_attention, cfg.mid_attention, opts, rngs, mid_spacetime
        )
        self.mid_block_1 = mid
        self.mid_block_2 = VideoBlock(cfg, ch, ch, emb_dim, False, False, opts, rngs)

        up, upsamplers = [], []
        for i, out_ch in reversed(list(enumerate(chs))):
            res = grid // 2**i
            level = []
            for _ in range(cfg.num_res_blocks + 1):
                level.append(block(ch + skips.pop(), out_ch, res))
                ch = out_ch
            up.append(nnx.List(level))
            upsamplers.append(None if i == 0 else blocks.Upsample(ch, opts, rngs))
        self.up_blocks = nnx.List(up)
        self.upsamplers = nnx.List(upsamplers)

        self.conv_norm_out = layers.GroupNorm(ch, opts, rngs)
        self.conv_out = layers.conv(
            ch, cfg.out_channels * cfg.patch_size**2, opts, rngs, zero_init=cfg.zero_init
        )

    @property
    def has_key_frame_attention(self) -> bool:
        """Whether a block attends to the key frame (a listed resolution that a level has)."""
        blocks_ = [blk for level in self.down_blocks for blk in level]
        blocks_ += [blk for level in self.up_blocks for blk in level]
        blocks_ += [self.mid_block_1, self.mid_block_2]
        return any(getattr(blk, "key_frame_attention", None) is not None for blk in blocks_)

    def embed(self, t: Array, num_frames: int, cond: dict | None) -> Array:
        """Per-frame embedding `[B, N, D]`: timestep + frame index + class + whether the frame
        is held (`cond['held']`, `[B, N]` bool; absent: none is)."""
        dim = self.cfg.channels * self.cfg.channel_mult[0]
        sinus = blocks.timestep_embedding(t, dim, self.cfg.flip_sin_to_cos, self.cfg.freq_shift)
        emb = self.time_embedding(sinus.astype(self.dtype))[:, None, :]
        if self.frame_embedding is not None:
            frames = blocks.timestep_embedding(
                jnp.arange(num_frames), dim, self.cfg.flip_sin_to_cos
            )
            emb = emb + self.frame_embedding(frames.astype(self.dtype))[None]
        if self.class_embedding is not None:
            labels = None if cond is None else cond.get("label")
            if labels is None:
                labels = jnp.full(t.shape, self.cfg.num_classes, jnp.int32)
            emb = emb + self.class_embedding(labels).astype(emb.dtype)[:, None, :]
        if self.held_embedding is not None:
            held = None if cond is None else cond.get("held")
            roles = (
                jnp.zeros((1, num_frames), jnp.int32) if held is None else held.astype(jnp.int32)
            )
            emb = emb + self.held_embedding(roles).astype(emb.dtype)  # [B or 1, N, D]
        return jnp.broadcast_to(emb, (t.shape[0], num_frames, emb.shape[-1]))

    def __call__(
        self, x: Array, t: Array, cond: dict | None = None, rngs: nnx.Rngs | None = None
    ) -> Array:
        """Args: x `[B, N, H, W, C]`; t `[B]`; cond {'label': [B], 'text': [B, S, D],
        'key_reference': [B, H, W, C], 'held': [B, N] bool} or None; rngs for dropout (None:
        deterministic). Returns float32 `[B, N, H, W, out_channels]`.

        `key_reference`, a frame in the key frame's place for the attention to the key frame
        (`key_frame_attn_resolutions`): each clip is run a second time with that frame in its
        key frame's slot (twice the batch), and the attention to the key frame of both copies
        reads the second's, while the clip's own key frame stays what its frames follow in place
        and time. A long video's later clips hold the first clip's key frame this way
        (`vfjax.long_video`, `sampling.long_anchor`) so that what its object looks like does not
        drift from clip to clip."""
        with jax.named_scope("residual_generator"):
            b = x.shape[0]
            reference = None if cond is None else cond.get("key_reference")
            if reference is not None:
                if not self.has_key_frame_attention:
                    raise ValueError(
                        "A key_reference needs attention to the key frame (no level of the "
                        "residual generator has a resolution in key_frame_attn_resolutions)."
                    )
                k = x.shape[1] // 2  # KeyFrameAttention's key frame.
                x = jnp.concatenate([x, x.at[:, k].set(reference.astype(x.dtype))])
                t = jnp.concatenate([t, t])
                cond = jax.tree.map(lambda c: jnp.concatenate([c, c]), cond)
            emb = einops.rearrange(self.embed(t, x.shape[1], cond), "b n d -> (b n) d")
            context = None if cond is None else cond.get("text")
            referenced = reference is not None
            if self.cfg.key_frame_input:
                k = x.shape[1] // 2  # decomposed.key_frame_index's default; config.validate checks
                x = jnp.concatenate([x, jnp.broadcast_to(x[:, k : k + 1], x.shape)], axis=-1)
            p = self.cfg.patch_size
            h = _frames_apply(lambda y: self.conv_in(blocks.to_patches(y, p)), x.astype(self.dtype))
            if self.input_attention is not None:
                tokens = einops.rearrange(h, "b n h w c -> b n (h w) c")
                h = self.input_attention(tokens).reshape(h.shape)
            skips = [h]
            remat = _rematerialised if self.cfg.remat else _direct

            def run(blk, h, emb, context, rngs):
                return remat(blk, h, emb, context, rngs, referenced)

            for level, down in zip(self.down_blocks, self.downsamplers, strict=True):
                for blk in level:
                    h = run(blk, h, emb, context, rngs)
                    skips.append(h)
                if down is not None:
                    h = _frames_apply(down, h)
                    skips.append(h)
            h = run(self.mid_block_1, h, emb, context, rngs)
            h = run(self.mid_block_2, h, emb, context, rngs)
            for level, upsample in zip(self.up_blocks, self.upsamplers, strict=True):
                for blk in level:
                    h = run(blk, jnp.concatenate([h, skips.pop()], axis=-1), emb, context, rngs)
                if upsample is not None:
                    h = _frames_apply(upsample, h)
            h = _frames_apply(
                lambda y: blocks.from_patches(self.conv_out(self.conv_norm_out(y, act=True)), p), h
            )
            return h[:b].astype(jnp.float32)
