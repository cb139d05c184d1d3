"""The base generator: a 2D image UNet (DDPM / ADM / diffusers-UNet2DModel family).

Its layout follows diffusers' `UNet2DModel` (down levels of residual blocks with optional
attention and a downsampler, a middle block, up levels with one extra residual block fed by the
skip connections), so public image-diffusion checkpoints convert onto it by renaming.
"""

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from vfjax.models import attention, blocks, layers
from vfjax.models.architecture import UNet2DConfig

Array = jax.Array


def _attention(cfg, channels: int, opts, rngs, context_dim: int | None) -> nnx.Module:
    if cfg.num_heads and channels % cfg.num_heads:
        raise ValueError(f"{channels} attention channels do not split into {cfg.num_heads} heads.")
    head_dim = channels // cfg.num_heads if cfg.num_heads else min(cfg.head_dim, channels)
    return attention.attention_block(
        cfg.attn_type,
        channels,
        head_dim,
        opts,
        rngs,
        context_dim=context_dim,
        zero_init=cfg.zero_init,
    )


def _resampler(cfg, direction: str, channels: int, emb_dim: int, opts, rngs) -> nnx.Module:
    """A strided / nearest-neighbour convolution, or a resampling residual block."""
    if cfg.resblock_updown:
        return blocks.ResBlock.from_config(
            cfg, channels, channels, emb_dim, opts, rngs, resample=direction
        )
    if direction == "down":
        return blocks.Downsample(channels, opts, rngs, padding=cfg.downsample_padding)
    return blocks.Upsample(channels, opts, rngs)


class Level(nnx.Module):
    """One resolution of the UNet: residual blocks, optional attention, optional resampler."""

    def __init__(self, cfg, in_chs: list[int], out_ch: int, emb_dim, attn, resample, opts, rngs):
        self.resnets = nnx.List(
            [blocks.ResBlock.from_config(cfg, c, out_ch, emb_dim, opts, rngs) for c in in_chs]
        )
        context = cfg.text_dim or None
        self.attentions = (
            nnx.List([_attention(cfg, out_ch, opts, rngs, context) for _ in in_chs])
            if attn
            else None
        )
        self.resample = resample

    def apply_resample(self, x: Array, emb: Array, rngs) -> Array:
        if isinstance(self.resample, blocks.ResBlock):
            return self.resample(x, emb, rngs)
        return self.resample(x)

    def block(self, j: int, x: Array, emb: Array, context, rngs) -> Array:
        x = self.resnets[j](x, emb, rngs)
        if self.attentions is not None:
            tokens = einops.rearrange(x, "m h w c -> m (h w) 1 c")
            x = self.attentions[j](tokens, context).reshape(x.shape)
        return x


class UNet2D(nnx.Module):
    """Predicts the noise of images `[B, H, W, C]` from timesteps `[B]` and a condition."""

    def __init__(self, cfg: UNet2DConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        opts = layers.layer_opts(cfg)
        self.dtype = opts.dtype
        chs = [int(cfg.channels * m) for m in cfg.channel_mult]
        if any(c != cfg.channels * m for c, m in zip(chs, cfg.channel_mult, strict=True)):
            raise ValueError(
                f"channels {cfg.channels} x channel_mult {cfg.channel_mult} must be whole."
            )
        emb_dim = 4 * cfg.channels
        grid = blocks.patch_grid(cfg.image_size, cfg.patch_size)
        self.conv_in = layers.conv(cfg.in_channels * cfg.patch_size**2, chs[0], opts, rngs)
        self.time_embedding = blocks.EmbeddingMLP(cfg.channels, emb_dim, opts, rngs)
        self.class_embedding = blocks.class_embedding(cfg.num_classes, emb_dim, opts, rngs)

        skips = [chs[0]]
        down = []
        ch = chs[0]
        for i, out_ch in enumerate(chs):
            last = i == len(chs) - 1
            res = grid // 2**i
            resample = None if last else _resampler(cfg, "down", out_ch, emb_dim, opts, rngs)
            in_chs = [ch] + [out_ch] * (cfg.num_res_blocks - 1)
            down.append(
                Level(
                    cfg, in_chs, out_ch, emb_dim, res in cfg.attn_resolutions, resample, opts, rngs
                )
            )
            ch = out_ch
            skips += [out_ch] * cfg.num_res_blocks + ([] if last else [out_ch])
        self.down_blocks = nnx.List(down)

        # Dropout in the middle too, as in ADM and diffusers' UNetMidBlock2D.
        self.mid_resnet_1 = blocks.ResBlock.from_config(cfg, ch, ch, emb_dim, opts, rngs)
        self.mid_attention = (
            _attention(cfg, ch, opts, rngs, cfg.text_dim or None) if cfg.mid_attention else None
        )
        self.mid_resnet_2 = blocks.ResBlock.from_config(cfg, ch, ch, emb_dim, opts, rngs)

        up = []
        for i, out_ch in reversed(list(enumerate(chs))):
            res = grid // 2**i
            in_chs = []
            for _ in range(cfg.num_res_blocks + 1):
                in_chs.append(ch + skips.pop())
                ch = out_ch
            resample = None if i == 0 else _resampler(cfg, "up", out_ch, emb_dim, opts, rngs)
            up.append(
                Level(
                    cfg, in_chs, out_ch, emb_dim, res in cfg.attn_resolutions, resample, opts, rngs
                )
            )
        self.up_blocks = nnx.List(up)

        self.conv_norm_out = layers.GroupNorm(ch, opts, rngs)
        self.conv_out = layers.conv(
            ch, cfg.out_channels * cfg.patch_size**2, opts, rngs, zero_init=cfg.zero_init
        )

    def embed(self, t: Array, cond: dict | None) -> Array:
        """Timestep embedding plus the class embedding, `[B, D]`."""
        if self.cfg.timestep_scale != 1.0:
            t = t * self.cfg.timestep_scale
        emb = blocks.timestep_embedding(
            t, self.cfg.channels, self.cfg.flip_sin_to_cos, self.cfg.freq_shift
        )
        emb = self.time_embedding(emb.astype(self.dtype))
        if self.class_embedding is not None:
            labels = cond.get("label") if cond is not None else None
            if labels is None:
                labels = jnp.full(t.shape, self.cfg.num_classes, jnp.int32)
            emb = emb + self.class_embedding(labels).astype(emb.dtype)
        return emb

    def __call__(
        self, x: Array, t: Array, cond: dict | None = None, rngs: nnx.Rngs | None = None
    ) -> Array:
        """Args: x `[B, H, W, C]`; t `[B]`; cond {'label': [B], 'text': [B, S, D]} or None; rngs
        for dropout (None: deterministic). Returns float32 `[B, H, W, out_channels]`."""
        with jax.named_scope("base_generator"):
            emb = self.embed(t, cond)
            context = None if cond is None else cond.get("text")
            h = self.conv_in(blocks.to_patches(x.astype(self.dtype), self.cfg.patch_size))
            skips = [h]
            run = _rematerialised if self.cfg.remat else _direct
            for level in self.down_blocks:
                for j in range(len(level.resnets)):
                    h = run(level, j, h, emb, context, rngs)
                    skips.append(h)
                if level.resample is not None:
                    h = level.apply_resample(h, emb, rngs)
                    skips.append(h)
            h = self.mid_resnet_1(h, emb, rngs)
            if self.mid_attention is not None:
                tokens = einops.rearrange(h, "m h w c -> m (h w) 1 c")
                h = self.mid_attention(tokens, context).reshape(h.shape)
            h = self.mid_resnet_2(h, emb, rngs)
            for level in self.up_blocks:
                for j in range(len(level.resnets)):
                    h = run(
                        level, j, jnp.concatenate([h, skips.pop()], axis=-1), emb, context, rngs
                    )
                if level.resample is not None:
                    h = level.apply_resample(h, emb, rngs)
            h = self.conv_out(self.conv_norm_out(h, act=True))
            return blocks.from_patches(h, self.cfg.patch_size).astype(jnp.float32)


def _direct(level, j: int, x, emb, context, rngs):
    return level.block(j, x, emb, context, rngs)


# The same call, its activations recomputed in the backward pass (`UNet2DConfig.remat`).
_rematerialised = nnx.remat(_direct, static_argnums=(1,))
