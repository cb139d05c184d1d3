"""The decomposed diffusion process of VideoFusion (docs/design.md, section 1), as pure functions.

Videos are `[B, N, H, W, C]`. Each frame's noise is split into a base noise `b` shared by all
frames and a residual noise `r[i]` of its own:

    eps[i] = sqrt(lam[i]) * b + sqrt(1 - lam[i]) * r[i]

with `lam[k] = 1` at the key frame `k`. `lam = 0` everywhere (no key frame, no base generator)
is the standard video diffusion baseline (VDM), which runs through the same functions.

Networks enter as plain callables, so this module knows nothing of Flax:
  base_fn(z_key [B, H, W, C], t [B]) -> b_hat [B, H, W, C]
  residual_fn(zr [B, N, H, W, C], t [B]) -> r_hat [B, N, H, W, C]
Conditioning (class, text, dropout for guidance) is closed over by the caller.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
BaseFn = Callable[[Array, Array], Array]
ResidualFn = Callable[[Array, Array], Array]


def _bcast(v: Array, ndim: int) -> Array:
    """Reshapes a per-example vector `[B]` to broadcast against a `[B, ...]` array."""
    return v.reshape(v.shape[:1] + (1,) * (ndim - 1))


def _frames(lambdas: Array, ndim: int) -> Array:
    """Reshapes per-frame `[N]` to broadcast against `[B, N, H, W, C]`."""
    return lambdas.reshape((1, -1) + (1,) * (ndim - 2))


def key_frame_index(num_frames: int, key_frame: int | None = None) -> int:
    """The key frame: `N // 2` unless given; negative indices count from the end."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
    k = num_frames // 2 if key_frame is None else key_frame
    if not -num_frames <= k < num_frames:
        raise ValueError(f"key_frame {key_frame} is outside a clip of {num_frames} frames.")
    return k % num_frames


def frame_lambdas(
    num_frames: int, lam: float | Sequence[float], key_frame: int | None = None
) -> np.ndarray:
    """Per-frame base shares `[N]`: `lam` for every frame, 1 for the key frame.

    Args:
      num_frames: N, the frames per clip.
      lam: the base share of the non-key frames, a scalar, or a full per-frame vector of length N.
      key_frame: index of the key frame (default `N // 2`); its share is always 1.

    Returns:
      float32 `[N]`.
    """
    k = key_frame_index(num_frames, key_frame)
    lam_arr = np.asarray(lam, np.float32)
    if lam_arr.ndim > 1 or lam_arr.size not in (1, num_frames):
        raise ValueError(f"lam must be a scalar or a vector of {num_frames} values, got {lam!r}.")
    if np.any((lam_arr < 0) | (lam_arr > 1)) or not np.all(np.isfinite(lam_arr)):
        raise ValueError(f"lam must lie in [0, 1], got {lam!r}.")
    lam_vec = np.broadcast_to(lam_arr.reshape(-1), (num_frames,)).copy()
    lam_vec[k] = 1.0
    return lam_vec


def independent_lambdas(num_frames: int) -> np.ndarray:
    """Base shares of the VDM baseline: zeros, i.e. independent noise per frame."""
    return np.zeros((num_frames,), np.float32)


def combine(base_hat: Array, residual_hat: Array, lambdas: Array) -> Array:
    """`sqrt(lam[i]) * base + sqrt(1 - lam[i]) * residual[i]`.

    The same formula builds noise from its parts (sampling) and the combined estimate `eps_hat`
    from the networks' estimates.

    Args:
      base_hat: `[B, 1, H, W, C]` (shared by all frames) or `[B, N, H, W, C]`.
      residual_hat: `[B, N, H, W, C]`.
      lambdas: `[N]`.
    """
    lam = _frames(lambdas, residual_hat.ndim)
    return jnp.sqrt(lam) * base_hat + jnp.sqrt(1.0 - lam) * residual_hat


def sample_noise(rng: Array, shape: Sequence[int], lambdas: Array) -> tuple[Array, Array, Array]:
    """Draws decomposed noise.

    Args:
      rng: PRNG key.
      shape: `[B, N, H, W, C]`.
      lambdas: `[N]` base shares.

    Returns:
      `(eps, base, residual)`: eps `[B, N, H, W, C]`, base `[B, 1, H, W, C]`, residual like eps.
    """
    base_rng, residual_rng = jax.random.split(rng)
    b, n, *rest = shape
    base = jax.random.normal(base_rng, (b, 1, *rest), jnp.float32)
    residual = jax.random.normal(residual_rng, tuple(shape), jnp.float32)
    return combine(base, residual, lambdas), base, residual


def q_sample(x0: Array, t: Array, eps: Array, alphas_cumprod: Array) -> Array:
    """Forward process `z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`, one `t [B]` per example."""
    abar = _bcast(alphas_cumprod[t], x0.ndim)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * eps


PREDICTIONS = ("eps", "v", "x0")


def base_as_noise(base_fn, prediction: str, alphas_cumprod: Array):
    """The base generator as a noise estimator: `b_hat = sqrt(abar) o + sqrt(1 - abar) z` when it
    outputs `o = v` (Salimans & Ho 2022: `v = sqrt(abar) eps - sqrt(1 - abar) x0`),
    `b_hat = (z - sqrt(abar) o) / sqrt(1 - abar)` when it outputs the clean key frame `o = x0`,
    itself when it outputs the noise. Extra arguments (a condition) pass through; None stays
    None."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}.")
    if prediction == "eps" or base_fn is None:
        return base_fn

    def noise(z, t, *args):
        abar = _bcast(alphas_cumprod[t], z.ndim)
        out = base_fn(z, t, *args).astype(jnp.float32)
        if prediction == "x0":
            return (z - jnp.sqrt(abar) * out) / jnp.sqrt(1.0 - abar)
        return jnp.sqrt(abar) * out + jnp.sqrt(1.0 - abar) * z

    return noise


def residual_as_noise(residual_fn, prediction: str, lambdas: Array, alphas_cumprod: Array):
    """The residual generator as a residual-noise estimator.

    Its input `zr[i] = a x[i] + s[i] r[i]` (base removed) is an image diffusion of `x[i]` with
    signal scale `a = sqrt(abar)` and noise scale `s[i] = sqrt(1 - abar) sqrt(1 - lam[i])`. With
    `prediction='v'` the network outputs that diffusion's `v = (a r - s x) / rho`,
    `rho = sqrt(a^2 + s^2)`, and `r_hat = (a o + s zr / rho) / rho`; for `lam = 0` (VDM) this is
    the usual v. With `prediction='x0'` it outputs the clean frames, `r_hat = (zr - a o) / s`
    (0 at the key frame, where `s = 0`). At the key frame the output has weight 0 in `eps_hat`
    either way.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}.")
    if prediction == "eps":
        return residual_fn

    def noise(zr, t, *args):
        a = jnp.sqrt(_bcast(alphas_cumprod[t], zr.ndim))
        s = jnp.sqrt(1.0 - jnp.square(a)) * jnp.sqrt(1.0 - _frames(lambdas, zr.ndim))
        out = residual_fn(zr, t, *args).astype(jnp.float32)
        if prediction == "x0":
            # The key frame has no residual noise (s = 0): a safe divisor there, so that neither
            # the value nor its gradient is NaN (jnp.where alone passes NaN gradients through).
            held = s > 0
            return jnp.where(held, (zr - a * out) / jnp.where(held, s, 1.0), 0.0)
        rho = jnp.sqrt(jnp.square(a) + jnp.square(s))
        return (a * out + s * zr / rho) / rho

    return noise


def loss_weights(
    t: Array, alphas_cumprod: Array, prediction: str, min_snr_gamma: float, snr_floor: float = 0.0
) -> Array:
    """Per-example weights `[B]` of the noise-prediction loss `||eps - eps_hat||^2`.

    `min_snr_gamma > 0`: min-SNR-gamma (Hang et al. 2023), `min(SNR, gamma) / SNR`, whatever the
    network outputs (the same weighting of the denoising error in every parametrisation); with
    `snr_floor > 0`, `max(min(SNR, gamma), snr_floor) / SNR`: the clean-frame error
    (`||eps - eps_hat||^2 = SNR ||x0 - x0_hat||^2`) keeps at least the weight `snr_floor` at the
    noisiest levels, where min-SNR alone weights it by `SNR` (near 0); `snr_floor=1` is Salimans
    and Ho's (2022) truncated-SNR weighting `max(SNR, 1)` capped at `gamma`. 0: the target's own
    loss, uniform for `eps`, `1 / abar = (SNR + 1) / SNR` for `v` (the v loss `||v - v_hat||^2`
    written on the noise), `1 / SNR` for `x0` (`||x0 - x0_hat||^2`).
    """
    abar = alphas_cumprod[t]
    snr = abar / (1.0 - abar)
    if min_snr_gamma > 0:
        return jnp.maximum(jnp.minimum(snr, min_snr_gamma), snr_floor) / snr
    if prediction == "v":
        return 1.0 / abar
    if prediction == "x0":
        return 1.0 / snr
    return jnp.ones_like(abar)


KEY_INPUTS = ("latent", "x0", "clean")
T_SAMPLINGS = ("uniform", "importance")


def sample_timesteps(
    rng: Array,
    batch: int,
    alphas_cumprod: Array,
    prediction: str,
    min_snr_gamma: float,
    method: str = "uniform",
    uniform_share: float = 0.1,
    snr_floor: float = 0.0,
) -> tuple[Array, Array]:
    """Timesteps `[B]` of a training batch and the factor `[B]` that keeps the loss's expectation
    the uniform draw's.

    'uniform': `t ~ U{0..T-1}`, factor 1. 'importance': `t` from the proposal
    `q(t) ∝ w(t) SNR / (1 + SNR)` mixed with `uniform_share` of the uniform (which bounds every
    factor by `1 / uniform_share`, at the noisiest levels, where the proposal is near zero), factor
    `1 / (T q(t))`, where `w` is `loss_weights` and `SNR / (1 + SNR)` bounds the noise error
    `E||eps - eps_hat||^2 = SNR E||x0 - x0_hat||^2` of unit-variance data: the examples go where the
    weighted loss can be large (with the linear schedule and min-SNR 5, 90% of the proposal lies
    below t = 400, where the uniform draw puts 40%), so a batch holds more examples that teach
    and the loss keeps its expectation. The draws are stratified over the batch (one offset `u`,
    quantiles `(i + u) / B`: the low-discrepancy sampler of Kingma et al., "Variational Diffusion
    Models", 2021), which lowers the variance further.
    """
    num = alphas_cumprod.shape[0]
    if method == "uniform":
        return jax.random.randint(rng, (batch,), 0, num), jnp.ones((batch,), jnp.float32)
    if method != "importance":
        raise ValueError(f"t_sampling must be one of {T_SAMPLINGS}, got {method!r}.")
    if not 0.0 < uniform_share <= 1.0:
        raise ValueError(f"the uniform share must lie in (0, 1], got {uniform_share}.")
    steps = jnp.arange(num)
    abar = alphas_cumprod
    snr = abar / (1.0 - abar)
    weight = loss_weights(steps, alphas_cumprod, prediction, min_snr_gamma, snr_floor)
    bound = weight * snr / (1.0 + snr)
    q = (1.0 - uniform_share) * bound / jnp.sum(bound) + uniform_share / num
    u = (jnp.arange(batch) + jax.random.uniform(rng)) / batch
    t = jnp.minimum(jnp.searchsorted(jnp.cumsum(q), u, side="right"), num - 1)
    return t, 1.0 / (num * q[t])


def remove_base(
    z_t: Array,
    base_hat: Array,
    t: Array,
    lambdas: Array,
    alphas_cumprod: Array,
    key_frame: int | None = None,
    key_input: str = "latent",
    key_value: Array | None = None,
) -> Array:
    """The residual generator's input `zr[i] = z_t[i] - sqrt(lam[i]) sqrt(1 - abar_t) b_hat`.

    At the key frame (`lam = 1`) this is `sqrt(abar_t) x0_hat[k]`, the base generator's estimate
    of the key frame scaled by the signal level: near zero at high noise. `key_input='x0'` puts
    `x0_hat[k] = zr[k] / sqrt(abar_t)`, clipped to [-1, 1], in that slot instead, so the residual
    generator sees the key frame the others must follow at every noise level. The residual
    generator's output at the key frame has weight `sqrt(1 - 1) = 0`, so only what the other
    frames see changes. `key_input='clean'` puts `key_value`, a finished key frame, there: the
    real key frame in training, and in sampling the key frame drawn to its end first
    (`sampling.sample`), so the other frames follow the key frame they end up beside instead of
    each step's estimate of it. 'latent' (the default) is the paper's input.

    Args:
      z_t: `[B, N, H, W, C]` latents.
      base_hat: `[B, 1, H, W, C]` estimated base noise.
      t: `[B]` integer timesteps.
      lambdas: `[N]`.
      alphas_cumprod: `[T]`.
      key_frame: the key frame index (needed for `key_input='x0'` and 'clean').
      key_input: 'latent', 'x0' or 'clean'.
      key_value: `[B, H, W, C]`, the key frame shown with `key_input='clean'`.
    """
    if key_input not in KEY_INPUTS:
        raise ValueError(f"key_input must be one of {KEY_INPUTS}, got {key_input!r}.")
    abar = _bcast(alphas_cumprod[t], z_t.ndim)
    zr = z_t - jnp.sqrt(_frames(lambdas, z_t.ndim)) * jnp.sqrt(1.0 - abar) * base_hat
    if key_input == "latent":
        return zr
    if key_frame is None:
        raise ValueError(f"key_input={key_input!r} needs the key frame index.")
    if key_input == "clean":
        if key_value is None:
            raise ValueError("key_input='clean' needs the key frame's value (key_value).")
        return zr.at[:, key_frame].set(key_value.astype(zr.dtype))
    x0_key = jnp.clip(zr[:, key_frame] / jnp.sqrt(abar[:, 0]), -1.0, 1.0)
    return zr.at[:, key_frame].set(x0_key.astype(zr.dtype))


def predict_noise(
    base_fn: BaseFn | None,
    residual_fn: ResidualFn,
    z_t: Array,
    t: Array,
    lambdas: Array,
    alphas_cumprod: Array,
    key_frame: int,
    key_input: str = "latent",
    key_value: Array | None = None,
    held: tuple[Array, Array] | None = None,
) -> tuple[Array, Array, Array]:
    """The two-stage estimate: base from the key frame, then the residual of every frame.

    Returns `(eps_hat, base_hat, residual_hat)`; with `base_fn=None` (VDM baseline) `base_hat`
    is zero and `eps_hat = residual_hat`. `key_input` and `key_value` as `remove_base`.
    `held = (values [B, N, H, W, C], mask [N] or [B, N])`: frames the residual generator sees
    clean, as a model trained with `context_rate` saw them (`show_held`).
    """
    if base_fn is None:
        base_hat = jnp.zeros_like(z_t[:, :1])
    else:
        base_hat = base_fn(z_t[:, key_frame], t)[:, None]  # [B, 1, H, W, C]
    if base_fn is None:
        key_input = "latent"  # No base generator, no key frame to show.
    zr = remove_base(z_t, base_hat, t, lambdas, alphas_cumprod, key_frame, key_input, key_value)
    if held is not None:
        zr = show_held(zr, *held)
    residual_hat = residual_fn(zr, t)
    return combine(base_hat, residual_hat, lambdas), base_hat, residual_hat


def show_held(zr: Array, values: Array, mask: Array) -> Array:
    """The residual generator's input with the held frames (`mask`, `[N]` or `[B, N]` bool) set
    to their clean `values` `[B, N, H, W, C]`, as the key frame is with `key_input='clean'`."""
    mask = jnp.broadcast_to(mask, zr.shape[:2]).reshape(zr.shape[:2] + (1,) * (zr.ndim - 2))
    return jnp.where(mask, values.astype(zr.dtype), zr)


def held_frames(rng: Array, batch: int, num_frames: int, rate: float) -> Array:
    """`[B, N]` bool: in a share `rate` of the clips, the first `m` frames, `m` uniform in
    `[1, N - 1]` (a long video's next clip holds a prefix of it); no frame in the others."""
    use_rng, count_rng = jax.random.split(rng)
    used = jax.random.bernoulli(use_rng, rate, (batch,))
    counts = jnp.where(used, jax.random.randint(count_rng, (batch,), 1, num_frames), 0)
    return jnp.arange(num_frames)[None] < counts[:, None]


def videofusion_loss(
    base_fn: BaseFn | None,
    residual_fn: ResidualFn,
    x0: Array,
    rng: Array,
    lambdas: Array,
    alphas_cumprod: Array,
    key_frame: int,
    frame_weights: Array | None = None,
    base_stop_gradient: bool = True,
    key_input: str = "latent",
    prediction: str = "eps",
    min_snr_gamma: float = 0.0,
    t_sampling: str = "uniform",
    t_uniform_share: float = 0.1,
    snr_floor: float = 0.0,
    context_rate: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """The VideoFusion noise-prediction loss with its stop-gradient rule.

    `mean_i w[i] ||eps[i] - eps_hat[i]||^2`, where `b_hat` enters every non-key frame (its
    `eps_hat[i]` and its `zr[i]`) through `stop_gradient`: the base generator learns only from the
    key frame's term (an image-diffusion loss, since `eps[k] = b`), the residual generator only from
    the others (its output enters the key frame with weight `sqrt(1 - 1) = 0`).
    `base_stop_gradient=False` drops the rule (the paper's ablation of it): the base generator
    then also learns from every other frame, through its share of their noise and through the
    residual generator's input.

    Args:
      base_fn: the base generator, or None for the VDM baseline (then `lambdas` must be zero).
      residual_fn: the residual generator.
      x0: clean videos `[B, N, H, W, C]` in [-1, 1].
      rng: PRNG key for timesteps and noise.
      lambdas: `[N]` base shares.
      alphas_cumprod: `[T]`.
      key_frame: the key frame index.
      frame_weights: `[N]` weights of the per-frame terms; default uniform `1 / N`.
      base_stop_gradient: apply the stop-gradient rule (the method's default).
      key_input: what the residual generator sees at the key frame (`remove_base`).
      prediction: what the networks output, 'eps' (the noise) or 'v' (`base_as_noise`,
        `residual_as_noise`); the loss is on the noise they imply either way.
      min_snr_gamma, snr_floor: the per-example weighting (`loss_weights`).
      t_sampling, t_uniform_share: how the timesteps are drawn (`sample_timesteps`).
      context_rate: the share of clips whose first frames are held (`held_frames`): the
        residual generator sees them clean (`show_held`) and is told which they are
        (`residual_fn(zr, t, held)`, `held [B, N]` bool), and their terms leave the loss (the
        key frame's, the base generator's, stays). 0: every frame generated, and
        `residual_fn(zr, t)` as before.

    Returns:
      `(loss, terms)`; terms hold `loss_key` (the key frame's weighted MSE) and `loss_residual`
      (the other frames' mean weighted MSE), each a scalar.
    """
    base_fn = base_as_noise(base_fn, prediction, alphas_cumprod)
    residual_fn = residual_as_noise(residual_fn, prediction, lambdas, alphas_cumprod)
    batch, num_frames = x0.shape[:2]
    t_rng, noise_rng = jax.random.split(rng)
    t, t_factor = sample_timesteps(
        t_rng,
        batch,
        alphas_cumprod,
        prediction,
        min_snr_gamma,
        t_sampling,
        t_uniform_share,
        snr_floor,
    )
    eps, _, _ = sample_noise(noise_rng, x0.shape, lambdas)
    z_t = q_sample(x0, t, eps, alphas_cumprod)

    if base_fn is None:
        base_mix = jnp.zeros_like(z_t[:, :1])
        base_sg = base_mix
    elif base_stop_gradient:
        base_hat = base_fn(z_t[:, key_frame], t)[:, None]  # [B, 1, H, W, C]
        base_sg = jax.lax.stop_gradient(base_hat)
        # Numerically b_hat on every frame; its gradient flows through the key frame only.
        is_key = _frames(jnp.arange(num_frames) == key_frame, x0.ndim)
        base_mix = jnp.where(is_key, base_hat, base_sg)  # [B, N, H, W, C]
    else:
        base_mix = base_sg = base_fn(z_t[:, key_frame], t)[:, None]
    if base_fn is None:
        key_input = "latent"
    # 'clean' shows the residual generator the real key frame (sampling: the finished one).
    key_value = x0[:, key_frame] if key_input == "clean" else None
    zr = remove_base(z_t, base_sg, t, lambdas, alphas_cumprod, key_frame, key_input, key_value)
    if context_rate > 0:
        # Its own key, folded from `rng`: the timesteps and noise are those of a run without.
        held = held_frames(jax.random.fold_in(rng, 2), batch, num_frames, context_rate)
        residual_hat = residual_fn(show_held(zr, x0, held), t, held)
    else:
        held = None
        residual_hat = residual_fn(zr, t)
    eps_hat = combine(base_mix, residual_hat, lambdas)

    weights = loss_weights(t, alphas_cumprod, prediction, min_snr_gamma, snr_floor) * t_factor
    squared = _bcast(weights, x0.ndim) * jnp.square(eps - eps_hat.astype(jnp.float32))
    if held is not None:
        generated = ~held  # [B, N]
        if base_fn is not None:  # The key frame's term trains the base generator: kept.
            generated = generated | (jnp.arange(num_frames) == key_frame)[None]
        squared = squared * generated.reshape(generated.shape + (1,) * (x0.ndim - 2))
    per_frame = jnp.mean(squared, axis=(0, 2, 3, 4))  # [N]
    if frame_weights is None:
        frame_weights = jnp.full((num_frames,), 1.0 / num_frames, jnp.float32)
    loss = jnp.sum(frame_weights * per_frame)
    others = jnp.arange(num_frames) != key_frame
    terms = {
        "loss_key": per_frame[key_frame],
        "loss_residual": jnp.sum(jnp.where(others, per_frame, 0.0)) / max(num_frames - 1, 1),
    }
    return loss, terms


def image_loss(
    base_fn: BaseFn,
    x0: Array,
    rng: Array,
    alphas_cumprod: Array,
    prediction: str = "eps",
    min_snr_gamma: float = 0.0,
    t_sampling: str = "uniform",
    t_uniform_share: float = 0.1,
    snr_floor: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """Plain image-diffusion loss of the base generator alone on images `[B, H, W, C]`.

    This is the key frame's term of `videofusion_loss` (with the same `prediction` and
    weighting), so a base generator pretrained with it continues where it left off inside a
    VideoFusion run.
    """
    base_fn = base_as_noise(base_fn, prediction, alphas_cumprod)
    t_rng, noise_rng = jax.random.split(rng)
    t, t_factor = sample_timesteps(
        t_rng,
        x0.shape[0],
        alphas_cumprod,
        prediction,
        min_snr_gamma,
        t_sampling,
        t_uniform_share,
        snr_floor,
    )
    eps = jax.random.normal(noise_rng, x0.shape, jnp.float32)
    eps_hat = base_fn(q_sample(x0, t, eps, alphas_cumprod), t)
    weights = loss_weights(t, alphas_cumprod, prediction, min_snr_gamma, snr_floor) * t_factor
    loss = jnp.mean(_bcast(weights, x0.ndim) * jnp.square(eps - eps_hat.astype(jnp.float32)))
    return loss, {"loss_key": loss}
