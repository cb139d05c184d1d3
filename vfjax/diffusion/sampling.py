"""DDIM / DDPM sampling with the two-stage estimate, guidance and long videos.

One sampler serves training previews, the sample command and evaluation. The whole loop is a
`lax.scan`, so a caller that jits `sample` gets one compiled program for all steps.

Networks enter as callables with a condition argument (None when unconditional):
  base_fn(z_key [B, H, W, C], t [B], cond) -> b_hat [B, H, W, C]
  residual_fn(zr [B, N, H, W, C], t [B], cond) -> r_hat [B, N, H, W, C]
`base_fn=None` is the VDM baseline.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vfjax.diffusion import decomposed

Array = jax.Array
CondBaseFn = Callable[[Array, Array, Any], Array]
CondResidualFn = Callable[[Array, Array, Any], Array]


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """Evenly spaced timesteps from `T - 1` down to 0: `num_steps` network evaluations."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"sampling steps must be in [1, {num_timesteps}], got {num_steps}.")
    return np.round(np.linspace(num_timesteps - 1, 0, num_steps)).astype(np.int32)


def ddim_sigma(abar_t: Array, abar_s: Array, eta: float) -> Array:
    """DDIM's noise scale; `eta = 1` is DDPM's posterior standard deviation."""
    return eta * jnp.sqrt((1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s))


def ddim_step(
    z_t: Array,
    eps_hat: Array,
    abar_t: Array,
    abar_s: Array,
    sigma: Array,
    noise: Array | None,
    clip_x0: bool,
    known: tuple[Array, Array] | None = None,
    x0_correction: Array | None = None,
) -> tuple[Array, Array]:
    """One step `t -> s`. Returns `(z_s, x0_hat)`.

    `x0_hat = (z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)` (plus `x0_correction`, the
    reconstruction guidance of `make_step`, when given), optionally clipped to [-1, 1],
    its known frames replaced by their values (`known = (x0 [B, N, H, W, C], mask [N])`: the
    frames held while the others are generated), `eps_hat` recomputed from that `x0_hat` so the
    step stays consistent, and
    `z_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma * noise`.
    The known frames' latents thus follow the forward process of their values, with the noise
    their latents already carry, and come out unchanged at the last step.
    """
    x0_hat = (z_t - jnp.sqrt(1.0 - abar_t) * eps_hat) / jnp.sqrt(abar_t)
    if x0_correction is not None:
        x0_hat = x0_hat + x0_correction
    if clip_x0:
        x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
    if known is not None:
        values, mask = known
        x0_hat = jnp.where(mask.reshape((1, -1) + (1,) * (z_t.ndim - 2)), values, x0_hat)
    if clip_x0 or known is not None or x0_correction is not None:
        eps_hat = (z_t - jnp.sqrt(abar_t) * x0_hat) / jnp.sqrt(1.0 - abar_t)
    z_s = jnp.sqrt(abar_s) * x0_hat + jnp.sqrt(jnp.maximum(1.0 - abar_s - sigma**2, 0.0)) * eps_hat
    if noise is not None:
        z_s = z_s + sigma * noise
    return z_s, x0_hat


def guided(fn: Callable, x: Array, t: Array, cond: Any, null_cond: Any, scale: float) -> Array:
    """Classifier-free guidance `out_u + w (out_c - out_u)` in one batched call.

    `scale = 1` is the plain conditional prediction (one call, no null condition needed);
    `scale = 0` the unconditional one (one call with the null condition). Both are exact.
    """
    return _guidance_mix(fn(*_guidance_batch(x, t, cond, null_cond, scale)), null_cond, scale)


def _guidance_batch(x: Array, t: Array, cond: Any, null_cond: Any, scale: float) -> tuple:
    """The arguments of `guided`'s one call: both conditions as one batch (conditional first),
    or the one condition that `scale` needs."""
    if scale == 1.0 or null_cond is None:
        return x, t, cond
    if scale == 0.0:
        return x, t, null_cond
    both = jax.tree.map(lambda c, u: jnp.concatenate([c, u]), cond, null_cond)
    return jnp.concatenate([x, x]), jnp.concatenate([t, t]), both


def _guidance_mix(out: Array, null_cond: Any, scale: float) -> Array:
    """`guided`'s estimate from the output of the call on `_guidance_batch`."""
    if scale in (0.0, 1.0) or null_cond is None:
        return out
    out_c, out_u = jnp.split(out, 2)
    return out_u + scale * (out_c - out_u)


def draw_noise(
    base_rng: Array, residual_rng: Array, shape, lambdas: Array, num_clips: int = 1
) -> Array:
    """Decomposed noise for `num_clips` clips per video that share one base noise.

    Returns `[B * num_clips, N, H, W, C]`, clips of a video adjacent. With `num_clips = 1` this is
    `decomposed.sample_noise` with the base and residual drawn from separate keys.
    """
    b, n, *rest = shape
    base = jax.random.normal(base_rng, (b, 1, *rest), jnp.float32)
    base = jnp.repeat(base, num_clips, axis=0)
    residual = jax.random.normal(residual_rng, (b * num_clips, n, *rest), jnp.float32)
    return decomposed.combine(base, residual, lambdas)


def sample(
    base_fn: CondBaseFn | None,
    residual_fn: CondResidualFn,
    shape,
    base_rng: Array,
    residual_rng: Array,
    lambdas: Array,
    alphas_cumprod: Array,
    key_frame: int,
    *,
    num_steps: int = 50,
    eta: float = 0.0,
    clip_x0: bool = True,
    cond: Any = None,
    null_cond: Any = None,
    guidance_scale: float = 1.0,
    num_clips: int = 1,
    known: tuple[Array, Array] | None = None,
    known_guidance: float = 0.0,
    show_known: bool = False,
    context_guidance: float = 1.0,
    key_input: str = "latent",
    prediction: str = "eps",
) -> Array:
    """Samples videos by DDIM (`eta = 0`), DDPM (`eta = 1`, `num_steps = T`) or in between.

    Each step estimates the base noise from the key frame, removes it, estimates the residuals,
    combines both and moves `t -> s`; the start noise and every fresh noise are decomposed noise
    with the same `lambdas`. The base noise comes from `base_rng` alone, so clips that share it
    share content while `residual_rng` varies their motion.

    Args:
      base_fn: base generator (None for the VDM baseline).
      residual_fn: residual generator.
      shape: `[B, N, H, W, C]` of one clip per video.
      base_rng: key of the base noise.
      residual_rng: key of the residual noise.
      lambdas: `[N]` base shares.
      alphas_cumprod: `[T]` float32.
      key_frame: key frame index.
      num_steps: network evaluations.
      eta: 0 deterministic DDIM, 1 DDPM-like.
      clip_x0: clip the `x0` estimate to [-1, 1] at every step.
      cond: condition pytree with leading dim B (labels, text embeddings) or None.
      null_cond: the dropped condition of the same structure, for guidance.
      guidance_scale: `w` in `eps_hat = eps_u + w (eps_c - eps_u)`, where `eps_c` and `eps_u`
        are the two-stage estimates under the condition and the null condition.
      num_clips: clips per video sharing the base noise (long videos); the clips of a video are
        concatenated along time, giving `[B, num_clips * N, H, W, C]`.
      known: `(x0 [B * num_clips, N, H, W, C], mask [N] bool)`: frames whose values are held
        (the continuation of a long video); the others are generated around them.
      known_guidance: the weight `w_r` of reconstruction guidance towards the known frames
        (`make_step`); 0 holds them by replacement alone.
      show_known: the residual generator also sees the known frames clean and flagged
        (`cond['held']`), as a model trained with `diffusion.context_rate` saw its held frames
        (`decomposed.videofusion_loss`); False: it sees their noisy latents only.
      context_guidance: with `show_known`, classifier-free guidance on the known frames, `w_c`
        in `eps_hat = eps_n + w_c (eps_s - eps_n)`, where `eps_s` is the estimate with the known
        frames shown and `eps_n` without (their noisy latents alone, no flag: the clips a model
        trained with `context_rate < 1` saw without held frames); 1 shows them, no guidance.
        Stable Video Diffusion (Blattmann et al., 2023) guides on its conditioning frame so.
      key_input: what the residual generator sees at the key frame (`decomposed.remove_base`);
        'clean' first draws the key frame alone to its end (`_draw_key_frame`, a pass of the
        base generator only) and shows that at every step; the base generator's outputs of
        that pass serve the clip's steps too (one base pass per step, not two).
      prediction: what the networks output, 'eps', 'v' or 'x0' (`decomposed.base_as_noise`,
        `decomposed.residual_as_noise`); the sampler works on the noise they imply.

    Returns:
      float32 videos `[B, num_clips * N, H, W, C]`, clipped to [-1, 1].
    """
    b, n, h, w, c = shape
    base_fn = decomposed.base_as_noise(base_fn, prediction, alphas_cumprod)
    residual_fn = decomposed.residual_as_noise(residual_fn, prediction, lambdas, alphas_cumprod)
    if num_clips > 1:
        cond, null_cond = jax.tree.map(
            lambda x: jnp.repeat(x, num_clips, axis=0), (cond, null_cond)
        )
    if context_guidance != 1.0 and not (show_known and known is not None):
        raise ValueError("context_guidance needs known frames shown (show_known=True).")
    held = None
    if show_known and known is not None:
        held = known
        flags = jnp.broadcast_to(known[1][None], (b * num_clips, n))
        cond = {**(cond or {}), "held": flags}
        null_cond = None if null_cond is None else {**null_cond, "held": flags}

    key_value, base_steps = None, None
    if key_input == "clean" and base_fn is not None:
        key_value, base_steps = _draw_key_frame(
            base_fn,
            (b, 1, h, w, c),
            base_rng,
            residual_rng,
            alphas_cumprod,
            key_frame,
            num_steps=num_steps,
            eta=eta,
            clip_x0=clip_x0,
            cond=cond,
            null_cond=null_cond,
            guidance_scale=guidance_scale,
            num_clips=num_clips,
            known=known,
        )

    def two_stage(z, t, c, base_out):
        """The combined estimate under condition `c`: base, base removed, residual. `base_out`,
        when given, is the base generator's output at this step, kept from the key frame's pass."""
        # `guided` runs both conditions as one batch (twice, with context guidance too): what is
        # kept or shown is tiled to it; the held flags, of `c`, say where each branch shows them.
        tile = lambda x: jnp.concatenate([x] * (z.shape[0] // x.shape[0]))  # noqa: E731
        if base_fn is None:
            base = None
        elif base_out is None:
            base = lambda z, t: base_fn(z, t, c)
        else:
            base = lambda z, t: tile(base_out)
        shown = None if key_value is None else tile(key_value)
        held_shown = None if held is None else (tile(held[0]), c["held"])
        return decomposed.predict_noise(
            base,
            lambda z, t: residual_fn(z, t, c),
            z,
            t,
            lambdas,
            alphas_cumprod,
            key_frame,
            key_input,
            shown,
            held_shown,
        )[0]

    def in_context(z, t, c, base_out):
        """`two_stage`, guided on the known frames (`context_guidance`): shown against not."""
        if held is None or context_guidance == 1.0:
            return two_stage(z, t, c, base_out)
        unshown = {**c, "held": jnp.zeros_like(c["held"])}
        branches = lambda z, t, c: two_stage(z, t, c, base_out)
        return guided(branches, z, t, c, unshown, context_guidance)

    def predict(z, t, base_out):
        # Guidance on the combined estimate (docs/design.md, 2.2): each branch removes its own base.
        branches = lambda z, t, c: in_context(z, t, c, base_out)
        return guided(branches, z, t, cond, null_cond, guidance_scale), None

    update = _make_update(
        alphas_cumprod,
        num_steps,
        base_rng,
        residual_rng,
        shape,
        lambdas,
        eta=eta,
        clip_x0=clip_x0,
        num_clips=num_clips,
        known=known,
        known_guidance=known_guidance,
        # A key frame drawn first must end as drawn: guidance does not steer it here.
        unsteered_frame=key_frame if key_value is not None else None,
    )

    def body(z, step):
        i, base_out = step
        return update(i, z, lambda z, t: predict(z, t, base_out))[0], None

    z = draw_noise(base_rng, residual_rng, shape, lambdas, num_clips)
    x0, _ = jax.lax.scan(body, z, (jnp.arange(num_steps), base_steps))
    return jnp.clip(x0, -1.0, 1.0).reshape(b, num_clips * n, h, w, c)


def _draw_key_frame(
    base_fn: CondBaseFn,
    key_shape,
    base_rng: Array,
    residual_rng: Array,
    alphas_cumprod: Array,
    key_frame: int,
    *,
    num_steps: int,
    eta: float,
    clip_x0: bool,
    cond: Any,
    null_cond: Any,
    guidance_scale: float,
    num_clips: int,
    known: tuple[Array, Array] | None,
) -> tuple[Array, Array]:
    """The key frame alone, drawn to its end, and the base generator's output at every step.

    Returns `(key [B * num_clips, H, W, C], base_steps [num_steps, G * B * num_clips, H, W, C])`,
    `G = 2` where guidance runs both conditions as one batch (`_guidance_batch`), else 1.

    The key frame's noise is the base noise alone (`lam[k] = 1`) and its estimate the base
    generator's, so its trajectory in `sample` does not depend on the other frames: run alone with
    the same keys it ends where it would end beside them (`draw_noise` of one frame with share 1
    is the base noise itself, and held frames are held alike). `key_input='clean'` draws it first
    and shows it to the residual generator at every step of the clip; and since the key frame's
    latent passes through the same values there, the base generator's outputs kept here are
    its outputs there: `sample` runs the base generator once per step, not twice.
    Reconstruction guidance changes nothing of this: its gradient reaches the base generator
    only through the key frame's latent, and with 'clean' the key frame is never steered.
    """

    def predict(z, t):
        x, tt, c = _guidance_batch(z[:, 0], t, cond, null_cond, guidance_scale)
        out = base_fn(x, tt, c)  # [G * B * num_clips, H, W, C]
        return _guidance_mix(out, null_cond, guidance_scale)[:, None], out

    one = jnp.ones((1,), jnp.float32)
    if known is not None:
        values, mask = known
        known = (values[:, key_frame : key_frame + 1], mask[key_frame : key_frame + 1])
    update = _make_update(
        alphas_cumprod,
        num_steps,
        base_rng,
        residual_rng,
        key_shape,
        one,
        eta=eta,
        clip_x0=clip_x0,
        num_clips=num_clips,
        known=known,
        known_guidance=0.0,  # One frame: no other frame for reconstruction guidance to steer.
        unsteered_frame=None,
    )
    z = draw_noise(base_rng, residual_rng, key_shape, one, num_clips)
    z, base_steps = jax.lax.scan(lambda z, i: update(i, z, predict), z, jnp.arange(num_steps))
    return jnp.clip(z, -1.0, 1.0)[:, 0], base_steps


def make_step(
    predict: Callable[[Array, Array], Array],
    alphas_cumprod: Array,
    num_steps: int,
    base_rng: Array,
    residual_rng: Array,
    shape,
    lambdas: Array,
    *,
    eta: float,
    clip_x0: bool,
    num_clips: int = 1,
    known: tuple[Array, Array] | None = None,
    known_guidance: float = 0.0,
    unsteered_frame: int | None = None,
) -> Callable[[int, Array], Array]:
    """The sampler's update as `body(i, z_t) -> z_s`, step `i` of `num_steps` (`t -> s`).

    `predict(z, t) -> eps_hat` is the combined estimate. The fresh noise of step `i` is
    decomposed noise with `lambdas`, its base and residual parts drawn from `base_rng` and
    `residual_rng` folded with `i + 1` (the start noise uses the keys themselves), scaled by
    DDIM's `sigma(t, s, eta)`. `known` frames are held (`ddim_step`).

    With `known_guidance = w_r > 0`, the other frames' estimate also follows the gradient of how
    well the model reconstructs the known frames from the whole noisy clip: the reconstruction
    guidance of Ho et al., "Video Diffusion Models" (2022), eq. 7,
    `x0_b <- x0_b - (w_r sqrt(abar_t) / 2) grad_{z_b} ||x_a - x0_a(z_t)||^2`, which conditions
    them on the values of the known frames `x_a` rather than on their noisy latents alone (what
    replacement does). It costs a backward pass of the networks per step. `unsteered_frame`, when
    given, is left out of that correction as the known frames are.
    """
    update = _make_update(
        alphas_cumprod,
        num_steps,
        base_rng,
        residual_rng,
        shape,
        lambdas,
        eta=eta,
        clip_x0=clip_x0,
        num_clips=num_clips,
        known=known,
        known_guidance=known_guidance,
        unsteered_frame=unsteered_frame,
    )
    return lambda i, z: update(i, z, lambda z, t: (predict(z, t), None))[0]


def _make_update(
    alphas_cumprod: Array,
    num_steps: int,
    base_rng: Array,
    residual_rng: Array,
    shape,
    lambdas: Array,
    *,
    eta: float,
    clip_x0: bool,
    num_clips: int,
    known: tuple[Array, Array] | None,
    known_guidance: float,
    unsteered_frame: int | None,
) -> Callable[[Array, Array, Callable], tuple[Array, Any]]:
    """`make_step`'s update with the estimate given at each call: `update(i, z_t, predict) ->
    (z_s, aux)`, where `predict(z, t) -> (eps_hat, aux)` may also return what a loop keeps of
    each step (the key frame's pass keeps the base generator's outputs) or take what it kept."""
    steps = jnp.asarray(ddim_timesteps(alphas_cumprod.shape[0], num_steps))
    steps_next = jnp.concatenate([steps[1:], jnp.array([-1], jnp.int32)])
    batch = shape[0] * num_clips

    guide = known is not None and known_guidance > 0

    def update(i, z, predict):
        t = jnp.full((batch,), steps[i], jnp.int32)
        s = steps_next[i]
        abar_t = alphas_cumprod[steps[i]]
        abar_s = jnp.where(s >= 0, alphas_cumprod[jnp.maximum(s, 0)], 1.0)
        correction = None
        if guide:
            values, mask = known
            frames = (1, -1) + (1,) * (z.ndim - 2)
            held = mask.reshape(frames).astype(jnp.float32)
            steered = ~mask
            if unsteered_frame is not None:
                steered = steered.at[unsteered_frame].set(False)
            steered = steered.reshape(frames).astype(jnp.float32)

            def reconstruction_error(z):
                eps, aux = predict(z, t)
                eps = eps.astype(jnp.float32)
                x0 = (z - jnp.sqrt(1.0 - abar_t) * eps) / jnp.sqrt(abar_t)
                return jnp.sum(held * jnp.square(values - x0)), (eps, aux)

            grad, (eps_hat, aux) = jax.grad(reconstruction_error, has_aux=True)(z)
            correction = -(known_guidance * jnp.sqrt(abar_t) / 2.0) * steered * grad
        else:
            eps_hat, aux = predict(z, t)
        noise = None
        sigma = jnp.float32(0.0)
        if eta > 0:
            sigma = ddim_sigma(abar_t, abar_s, eta)
            noise = draw_noise(
                jax.random.fold_in(base_rng, i + 1),
                jax.random.fold_in(residual_rng, i + 1),
                shape,
                lambdas,
                num_clips,
            )
        eps_hat = eps_hat.astype(jnp.float32)
        z_s, _ = ddim_step(z, eps_hat, abar_t, abar_s, sigma, noise, clip_x0, known, correction)
        return z_s, aux

    return update
