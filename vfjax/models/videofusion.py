"""The models that training and sampling call: VideoFusion (base + residual generator), the VDM
baseline (the residual architecture alone, independent noise), and the base generator alone as
an image diffusion model (for pretraining it).

Each model exposes `loss(...)` and `sample(...)` over the pure diffusion functions, with the
noise schedule, the per-frame base shares and the key frame held in a `Diffusion` value
(`vfjax.diffusion.process`).
"""

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vfjax.diffusion import decomposed, sampling
from vfjax.diffusion.process import Diffusion
from vfjax.models.architecture import MODEL_KINDS, UNet2DConfig, UNet3DConfig
from vfjax.models.unet2d import UNet2D
from vfjax.models.unet3d import UNet3D

Array = jax.Array


def _dropout_rngs(rng: Array | None) -> nnx.Rngs | None:
    return None if rng is None else nnx.Rngs(dropout=rng)


def _frames_as_images_loss(base, x0, rng, diffusion, cond, dropout_rng):
    """The image-diffusion loss of `base` with every frame of `x0 [B, N, H, W, C]` as an image
    (each with its own noise): how the base generator is trained alone."""
    rngs = _dropout_rngs(dropout_rng)
    n = x0.shape[1]
    images = einops.rearrange(x0, "b n h w c -> (b n) h w c")
    if cond is not None:
        cond = jax.tree.map(lambda c: jnp.repeat(c, n, axis=0), cond)
    return decomposed.image_loss(
        lambda z, t: base(z, t, cond, rngs),
        images,
        rng,
        jnp.asarray(diffusion.alphas_cumprod),
        diffusion.prediction,
        diffusion.min_snr_gamma,
        diffusion.t_sampling,
        diffusion.t_uniform_share,
        diffusion.snr_floor,
    )


def _constants(diffusion: Diffusion) -> tuple:
    """`(lambdas, alphas_cumprod, key_frame)`: the process arguments of the pure functions."""
    return (
        jnp.asarray(diffusion.lambdas),
        jnp.asarray(diffusion.alphas_cumprod),
        diffusion.key_frame,
    )


def _with_held(cond: dict | None, held: Array | None) -> dict | None:
    """`cond` with the held frames' flags `[B, N]` (`decomposed.videofusion_loss`'s
    `context_rate`) that the residual generator reads (`UNet3D.embed`)."""
    return cond if held is None else {**(cond or {}), "held": held}


def _process_loss(base_fn, residual_fn, x0, rng, diffusion: Diffusion, frame_weights, stop=True):
    """`decomposed.videofusion_loss` under `diffusion` (base_fn None: the VDM baseline)."""
    consts = _constants(diffusion)
    return decomposed.videofusion_loss(
        base_fn,
        residual_fn,
        x0,
        rng,
        *consts,
        frame_weights,
        stop,
        diffusion.key_input,
        diffusion.prediction,
        diffusion.min_snr_gamma,
        diffusion.t_sampling,
        diffusion.t_uniform_share,
        diffusion.snr_floor,
        diffusion.context_rate,
    )


def _process_sample(base_fn, residual_fn, shape, base_rng, residual_rng, diffusion, **kw):
    """`sampling.sample` under `diffusion` (base_fn None: the VDM baseline)."""
    rngs = (base_rng, residual_rng)
    return sampling.sample(
        base_fn,
        residual_fn,
        shape,
        *rngs,
        *_constants(diffusion),
        key_input=diffusion.key_input,
        prediction=diffusion.prediction,
        **kw,
    )


class VideoFusion(nnx.Module):
    """The base generator (2D UNet on the key frame) and residual generator (video UNet)."""

    def __init__(self, base: UNet2DConfig, residual: UNet3DConfig, *, rngs: nnx.Rngs):
        self.base = UNet2D(base, rngs=rngs)
        self.residual = UNet3D(residual, rngs=rngs)

    def _fns(self, cond, dropout_rng):
        rngs = _dropout_rngs(dropout_rng)

        def base_fn(z, t):
            return self.base(z, t, cond, rngs)

        def residual_fn(z, t, held=None):
            return self.residual(z, t, _with_held(cond, held), rngs)

        return base_fn, residual_fn

    def loss(
        self,
        x0: Array,
        rng: Array,
        diffusion: Diffusion,
        cond: dict | None = None,
        dropout_rng: Array | None = None,
        frame_weights: Array | None = None,
        base_stop_gradient: bool = True,
    ) -> tuple[Array, dict[str, Array]]:
        """The loss on clean videos `[B, N, H, W, C]` (see `decomposed.videofusion_loss`)."""
        base_fn, residual_fn = self._fns(cond, dropout_rng)
        return _process_loss(
            base_fn, residual_fn, x0, rng, diffusion, frame_weights, base_stop_gradient
        )

    def image_loss(self, x0, rng, diffusion, cond=None, dropout_rng=None):
        """The base generator's loss with every frame as an image (its pretraining phase)."""
        return _frames_as_images_loss(self.base, x0, rng, diffusion, cond, dropout_rng)

    def sample(self, shape, base_rng: Array, residual_rng: Array, diffusion: Diffusion, **kw):
        """Videos `[B, num_clips * N, H, W, C]`; keywords as `sampling.sample`."""
        # The networks take `(z, t, cond)`, the samplers' callable form.
        return _process_sample(
            self.base, self.residual, shape, base_rng, residual_rng, diffusion, **kw
        )


class VDM(nnx.Module):
    """The standard video diffusion baseline: independent noise per frame, one video UNet."""

    def __init__(self, residual: UNet3DConfig, *, rngs: nnx.Rngs):
        self.residual = UNet3D(residual, rngs=rngs)

    def loss(self, x0, rng, diffusion, cond=None, dropout_rng=None, frame_weights=None):
        """The epsilon loss with independent noise; no key-frame or residual terms (there is no
        base generator to split them by)."""
        rngs = _dropout_rngs(dropout_rng)
        loss, _ = _process_loss(
            None,
            lambda z, t, held=None: self.residual(z, t, _with_held(cond, held), rngs),
            x0,
            rng,
            diffusion,
            frame_weights,
        )
        return loss, {}

    def sample(self, shape, base_rng, residual_rng, diffusion, **kw):
        return _process_sample(None, self.residual, shape, base_rng, residual_rng, diffusion, **kw)


class ImageDiffusion(nnx.Module):
    """The base generator alone, trained as an image diffusion model on video frames."""

    def __init__(self, base: UNet2DConfig, *, rngs: nnx.Rngs):
        self.base = UNet2D(base, rngs=rngs)

    def loss(self, x0, rng, diffusion, cond=None, dropout_rng=None, frame_weights=None):
        """Every frame of `x0 [B, N, H, W, C]` is a training image."""
        del frame_weights
        return _frames_as_images_loss(self.base, x0, rng, diffusion, cond, dropout_rng)

    def sample(self, shape, base_rng, residual_rng, diffusion, **kw):
        """Independent images shown as a clip: every frame uses lambda 1 on its own base noise."""
        b, n = shape[:2]
        image_shape = (b * n, 1) + tuple(shape[2:])
        cond = kw.pop("cond", None)
        null = kw.pop("null_cond", None)
        cond, null = jax.tree.map(lambda c: jnp.repeat(c, n, axis=0), (cond, null))
        kw.pop("num_clips", None)
        out = sampling.sample(
            lambda z, t, c: self.base(z, t, c),
            lambda z, t, c: jnp.zeros_like(z),
            image_shape,
            base_rng,
            residual_rng,
            jnp.ones((1,), jnp.float32),
            jnp.asarray(diffusion.alphas_cumprod),
            0,
            cond=cond,
            null_cond=null,
            prediction=diffusion.prediction,
            **kw,
        )
        return out.reshape(tuple(shape))


def build_model(model_config, image_size: int, channels: int, *, rngs: nnx.Rngs) -> nnx.Module:
    """Builds the model of `model_config.kind` from the config's `base` and `residual` fields."""
    kind = model_config.kind
    if kind not in MODEL_KINDS:
        raise ValueError(f"Unknown model.kind {kind!r}; choose one of {MODEL_KINDS}.")
    common = dict(
        image_size=image_size,
        in_channels=channels,
        out_channels=channels,
        num_classes=model_config.get("num_classes", 0),
        text_dim=model_config.get("text_dim", 0),
        dtype=model_config.get("dtype", "bfloat16"),
        param_dtype=model_config.get("param_dtype", "float32"),
        attention_impl=model_config.get("attention_impl", None),
        conv_impl=model_config.get("conv_impl", "auto"),
    )

    def make(cls, fields):
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(fields).items()}
        return cls(**{**values, **common})

    if kind == "videofusion":
        return VideoFusion(
            make(UNet2DConfig, model_config.base),
            make(UNet3DConfig, model_config.residual),
            rngs=rngs,
        )
    if kind == "vdm":
        return VDM(make(UNet3DConfig, model_config.residual), rngs=rngs)
    return ImageDiffusion(make(UNet2DConfig, model_config.base), rngs=rngs)


def count_params(params: dict) -> dict[str, int]:
    """Parameter counts per generator and in total, from a `{'base': ..., 'residual': ...}`
    tree of arrays or ShapeDtypeStructs."""
    counts = {
        name: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
        for name, tree in params.items()
    }
    counts["total"] = sum(counts.values())
    return counts


def param_counts(model: nnx.Module) -> dict[str, int]:
    """Parameter counts per generator and in total."""
    return count_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
