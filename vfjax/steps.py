"""Pure steps: the train step and the sampling step (no I/O). Both are jitted by their callers
with explicit shardings; the train step donates the state.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from vfjax import distributed
from vfjax import sharding as sharding_lib
from vfjax import state as state_lib
from vfjax.data import pixels
from vfjax.diffusion.process import Diffusion

Array = jax.Array


def diffusion_from_config(config) -> Diffusion:
    return Diffusion.create(
        config.model.kind,
        config.data.num_frames,
        config.diffusion.lam,
        config.diffusion.key_frame,
        config.diffusion.schedule,
        config.diffusion.num_timesteps,
        config.diffusion.get("key_input", "latent"),
        config.diffusion.get("prediction", "eps"),
        config.diffusion.get("min_snr_gamma", 0.0),
        config.diffusion.get("logsnr_shift", 0.0),
        config.diffusion.get("t_sampling", "uniform"),
        config.diffusion.get("t_uniform_share", 0.1),
        config.diffusion.get("snr_floor", 0.0),
        config.diffusion.get("context_rate", 0.0),
    )


def make_cond(config, batch: dict, rng: Array | None = None) -> dict | None:
    """The condition of a batch, with each example's condition dropped (replaced by the null
    condition) with probability `diffusion.cond_drop_rate` when `rng` is given."""
    kind = config.data.cond
    if kind == "none":
        return None
    if kind == "class":
        cond = {"label": batch["label"].astype(jnp.int32)}
    else:
        cond = {"text": batch["text_emb"]}
    if rng is None or config.diffusion.cond_drop_rate == 0:
        return cond
    drop = jax.random.bernoulli(rng, config.diffusion.cond_drop_rate, (batch["video"].shape[0],))
    return jax.tree.map(
        lambda c, n: jnp.where(drop.reshape((-1,) + (1,) * (c.ndim - 1)), n, c),
        cond,
        null_cond(config, cond),
    )


def null_cond(config, cond: dict | None) -> dict | None:
    """The dropped condition: the null class (index `num_classes`) or a zero text embedding; a
    long video's `key_reference` and held frames' flags (`vfjax.models.unet3d.UNet3D`) are kept."""
    if cond is None:
        return None
    out = {k: cond[k] for k in ("key_reference", "held") if k in cond}
    if "label" in cond:
        out["label"] = jnp.full_like(cond["label"], config.model.num_classes)
    if "text" in cond:
        out["text"] = jnp.zeros_like(cond["text"])
    return out


PHASES = ("joint", "base_pretrain")


def loss_frame_weights(config) -> jax.Array | None:
    """Per-frame weights of the loss: None (uniform, `1 / N`) unless `diffusion.key_frame_weight`
    gives the key frame's share (the other frames share the rest equally)."""
    w = config.diffusion.key_frame_weight
    if w is None or config.model.kind != "videofusion":
        return None
    n = config.data.num_frames
    k = diffusion_from_config(config).key_frame
    weights = jnp.full((n,), (1.0 - w) / max(n - 1, 1), jnp.float32)
    return weights.at[k].set(w)


def phase_at(config, step: int) -> str:
    """The training phase of (1-based) `step`: the first `base_pretrain_steps` train the base
    generator alone, as an image model on every frame; then both generators jointly."""
    return "base_pretrain" if step <= config.base_pretrain_steps else "joint"


def train_step(
    state: state_lib.TrainState,
    batch: dict,
    *,
    setup: state_lib.Setup,
    config,
    phase: str = "joint",
) -> tuple[state_lib.TrainState, dict]:
    """One optimisation step on a global batch: of both generators (`phase='joint'`), or of the
    base generator alone on every frame of the batch as images (`'base_pretrain'`).

    A step whose loss or gradients are not finite reports `finite = 0`; the training loop
    stops on it before it saves anything, so the last checkpoint stays good.
    """
    batch = {**batch, "video": pixels.to_model_input(batch["video"])}  # uint8: on the devices.
    diffusion = diffusion_from_config(config)
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    loss_rng, cond_rng, dropout_rng = jax.random.split(rng, 3)
    cond = make_cond(config, batch, cond_rng)
    uses_dropout = any(config.model[net].dropout > 0 for net in ("base", "residual"))
    # A frozen base generator is frozen in the joint phase: after its pretraining, if any.
    frozen_base = config.optim.freeze_base and phase == "joint" and "base" in state.params

    def loss_fn(params):
        if frozen_base:
            params = {**params, "base": jax.lax.stop_gradient(params["base"])}
        model = state_lib.model_from(setup, params)
        dropout = dropout_rng if uses_dropout else None
        if phase == "base_pretrain":
            return model.image_loss(batch["video"], loss_rng, diffusion, cond, dropout)
        if config.model.kind == "videofusion":
            loss, terms = model.loss(
                batch["video"],
                loss_rng,
                diffusion,
                cond,
                dropout,
                loss_frame_weights(config),
                config.diffusion.base_stop_gradient,
            )
            weight = config.diffusion.get("base_image_weight", 0.0)
            if weight > 0:
                # The base generator also learns as an image model from every frame (each with
                # its own noise and timestep): B * N images a step instead of the B key frames.
                image_rng = jax.random.fold_in(loss_rng, 1)
                image, _ = model.image_loss(batch["video"], image_rng, diffusion, cond, dropout)
                loss = loss + weight * image
                terms = {**terms, "loss_base_image": image}
            return loss, terms
        return model.loss(batch["video"], loss_rng, diffusion, cond, dropout)

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
    # A generator that sits out this step neither moves nor changes its optimizer state (moments,
    # step count, schedule): zero gradients alone would still move it, by Adam's moments and
    # weight decay. In base pretraining that is the residual generator, which so starts the
    # joint phase as a fresh AdamW, warm-up included; a frozen base sits out the joint phase.
    idle = ("residual",) if phase == "base_pretrain" else ("base",) if frozen_base else ()
    for net in idle:
        updates = {**updates, net: jax.tree.map(jnp.zeros_like, updates[net])}
        opt_state = state_lib.keep_optimizer(net, opt_state, state.opt_state)
    params = optax.apply_updates(state.params, updates)
    ema = state_lib.ema_update(state.ema, params, state.step, config.optim.ema_decay)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema)

    # A non-finite step is reported, not undone: the loop checks `finite` before every save and
    # every log, and stops there, so such a state is never saved.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    metrics = {
        "loss": loss,
        **terms,
        "grad_norm": grad_norm,
        **state_lib.learning_rates(
            config.optim, config.total_steps, state.opt_state, state.params, phase
        ),
        "finite": finite.astype(jnp.int32),
    }
    return new, metrics


# Compiled train steps of this process, by everything that shapes the program: a second run in
# the same process (a sweep in a notebook, a resumed run in a test) skips tracing and compiling.
_COMPILED: dict = {}


def _program_key(config, mesh, batch_spec: dict, phase: str) -> tuple:
    """The config fields, mesh, batch layout and phase that determine the compiled train step."""
    fields = {
        "model": config.model.to_dict(),
        "diffusion": config.diffusion.to_dict(),
        "optim": config.optim.to_dict(),
        "data": {k: config.data[k] for k in ("cond", "num_frames", "resolution", "channels")},
        # Only a cosine schedule depends on the run length.
        "total_steps": config.total_steps if config.optim.schedule == "cosine" else None,
    }
    batch = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(batch_spec.items()))
    devices = tuple(d.id for d in mesh.devices.flat)
    return repr(fields), tuple(mesh.shape.items()), devices, batch, phase


def _jitted_train_step(setup: state_lib.Setup, config, phase: str):
    """The train step jitted with the run's shardings: state per `setup` (donated), batch over
    the mesh, metrics replicated."""
    return jax.jit(
        functools.partial(train_step, setup=setup, config=config, phase=phase),
        in_shardings=(setup.shardings, sharding_lib.batch_sharding(setup.mesh)),
        out_shardings=(setup.shardings, sharding_lib.replicated(setup.mesh)),
        donate_argnums=(0,),
    )


def _abstract_batch(batch_spec: dict) -> dict:
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch_spec.items()}


def lower_train_step(setup: state_lib.Setup, config, batch_spec: dict, phase: str = "joint"):
    """The train step of `compile_train_step`, lowered and not compiled (seconds where the
    compile takes minutes): its text identifies the program (`bench.tpu.program_id`)."""
    step = _jitted_train_step(setup, config, phase)
    return step.lower(setup.abstract_state, _abstract_batch(batch_spec))


def compile_train_step(setup: state_lib.Setup, config, batch_spec: dict, phase: str = "joint"):
    """Ahead-of-time compiled train step: state sharded per `setup`, batch over the mesh,
    state donated. Reused when this process compiled the same program before."""
    key = _program_key(config, setup.mesh, batch_spec, phase)
    if key in _COMPILED:
        return _COMPILED[key]
    compiled = distributed.compile_aligned(
        _jitted_train_step(setup, config, phase),
        setup.abstract_state,
        _abstract_batch(batch_spec),
        name=f"train step {phase}",
    )
    _COMPILED[key] = compiled
    return compiled


def sample_videos(
    params: dict,
    base_rng: Array,
    residual_rng: Array,
    cond: dict | None,
    known: tuple[Array, Array] | None = None,
    *,
    setup: state_lib.Setup,
    config,
    num_videos: int,
    num_clips: int = 1,
) -> Array:
    """Videos `[num_videos, num_clips * N, H, W, C]` in [-1, 1] from `params` (use the EMA);
    `known = (values [num_videos, N, H, W, C], mask [N])` holds frames (`sampling.sample`)."""
    data = config.data
    shape = (num_videos, data.num_frames, data.resolution, data.resolution, data.channels)
    model = state_lib.model_from(setup, params)
    s = config.sampling
    conditioned = cond is not None and ("label" in cond or "text" in cond)
    guidance = float(s.guidance_scale) if conditioned else 1.0
    return model.sample(
        shape,
        base_rng,
        residual_rng,
        diffusion_from_config(config),
        num_steps=s.num_steps,
        eta=s.eta,
        clip_x0=s.clip_x0,
        cond=cond,
        null_cond=null_cond(config, cond),
        guidance_scale=guidance,
        num_clips=num_clips,
        known=known,
        known_guidance=float(s.long_guidance) if known is not None else 0.0,
        # A model trained with held frames sees its held frames as it was trained to.
        **(
            {"show_known": True, "context_guidance": float(s.get("long_context_guidance", 1.0))}
            if known is not None and shows_held(config)
            else {}
        ),
    )


def shows_held(config) -> bool:
    """Whether the model reads held frames clean and flagged (`model.residual.held_frames`,
    trained with `diffusion.context_rate`; VideoFusion and VDM)."""
    return config.model.kind != "image" and bool(config.model.residual.get("held_frames", False))


def make_sampler(config, setup: state_lib.Setup, batch: int, num_clips: int = 1):
    """The one sampler of training previews, the sample mode, evaluation and the benchmark:
    `(ema, base_rng, residual_rng, cond[, known]) -> videos [batch, num_clips * N, H, W, C]`,
    jitted with the EMA's shardings and the videos split over the devices when `batch`
    divides (one program with `known` frames held, one without)."""
    mesh = setup.mesh
    out = (
        sharding_lib.batch_sharding(mesh)
        if batch % mesh.size == 0
        else sharding_lib.replicated(mesh)
    )
    fn = functools.partial(
        sample_videos, setup=setup, config=config, num_videos=batch, num_clips=num_clips
    )
    jitted = jax.jit(
        fn, in_shardings=(setup.shardings.ema, None, None, None, None), out_shardings=out
    )
    return distributed.AlignedJit(jitted, f"sampler {batch}x{num_clips}")
