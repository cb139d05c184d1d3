"""The decomposed diffusion process and the samplers: statistics, algebra, oracle sampling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vfjax.diffusion import decomposed, sampling, schedules

N = 5
K = N // 2


def test_schedules_are_float32_and_decreasing():
    for name in schedules.SCHEDULES:
        abar = schedules.make_schedule(name, 1000)
        assert abar.dtype == np.float32 and abar.shape == (1000,)
        assert np.all(np.diff(abar) < 0)
        assert 0.99 < abar[0] <= 1.0 and 0.0 <= abar[-1] < 0.01
    assert schedules.make_schedule("cosine", 50).shape == (50,)
    with pytest.raises(ValueError, match="schedule"):
        schedules.make_schedule("quadratic")


def test_logsnr_shift_moves_every_level_by_the_same_amount():
    base = schedules.make_schedule("linear", 1000).astype(np.float64)
    shifted = schedules.make_schedule("linear", 1000, 2.0).astype(np.float64)
    logit = lambda a: np.log(a) - np.log1p(-a)  # noqa: E731
    np.testing.assert_allclose(logit(shifted) - logit(base), 2.0, atol=2e-3)
    assert np.all(np.diff(shifted) < 0) and np.all(shifted > base)


def test_frame_lambdas():
    lam = decomposed.frame_lambdas(N, 0.5)
    np.testing.assert_allclose(lam, [0.5, 0.5, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(
        decomposed.frame_lambdas(4, [0.1, 0.2, 0.3, 0.4], 0), [1, 0.2, 0.3, 0.4]
    )
    np.testing.assert_allclose(decomposed.frame_lambdas(4, 0.3, -1), [0.3, 0.3, 0.3, 1.0])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            decomposed.frame_lambdas(N, bad)
    with pytest.raises(ValueError, match="vector"):
        decomposed.frame_lambdas(N, [0.5, 0.5])
    with pytest.raises(ValueError, match="key_frame"):
        decomposed.frame_lambdas(N, 0.5, key_frame=N)


@pytest.mark.parametrize("lam", [0.5, 0.25, 0.0])
def test_noise_statistics(lam):
    lambdas = decomposed.frame_lambdas(N, lam)
    eps, base, residual = decomposed.sample_noise(jax.random.key(0), (20000, N, 2, 2, 1), lambdas)
    assert eps.shape == (20000, N, 2, 2, 1) and base.shape == (20000, 1, 2, 2, 1)
    samples = np.asarray(eps).transpose(1, 0, 2, 3, 4).reshape(N, -1)  # [N, draws]
    np.testing.assert_allclose(samples.mean(axis=1), 0.0, atol=0.01)
    np.testing.assert_allclose(samples.var(axis=1), 1.0, atol=0.02)
    expected = np.sqrt(np.outer(lambdas, lambdas))
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(np.corrcoef(samples), expected, atol=0.015)
    # The key frame's noise is exactly the base noise.
    np.testing.assert_array_equal(eps[:, K], base[:, 0])


def test_vdm_noise_is_independent():
    lambdas = decomposed.independent_lambdas(N)
    eps, _, residual = decomposed.sample_noise(jax.random.key(1), (20000, N, 1, 1, 1), lambdas)
    np.testing.assert_array_equal(eps, residual)
    corr = np.corrcoef(np.asarray(eps).reshape(20000, N).T)
    np.testing.assert_allclose(corr, np.eye(N), atol=0.03)


@functools.partial(jax.jit, static_argnums=(1,))
def _draw(rng, batch, lambdas):
    k1, k2, k3 = jax.random.split(rng, 3)
    x0 = jax.random.uniform(k1, (batch, N, 4, 4, 3), minval=-1, maxval=1)
    eps, base, residual = decomposed.sample_noise(k2, x0.shape, lambdas)
    t = jax.random.randint(k3, (batch,), 0, 1000)
    return x0, eps, base, residual, t


def _setup(seed=0, batch=3, lam=0.5):
    abar = jnp.asarray(schedules.make_schedule("linear"))
    lambdas = decomposed.frame_lambdas(N, lam)
    return (abar, lambdas) + _draw(jax.random.key(seed), batch, lambdas)


def test_remove_base_then_combine_gives_back_eps():
    abar, lambdas, x0, eps, base, residual, t = _setup()
    z_t = decomposed.q_sample(x0, t, eps, abar)
    zr = decomposed.remove_base(z_t, base, t, lambdas, abar)
    # With the true base removed, what is left is the data plus the residual share of the noise.
    scaled = jnp.sqrt(1 - lambdas)[None, :, None, None, None] * residual
    np.testing.assert_allclose(zr, decomposed.q_sample(x0, t, scaled, abar), atol=1e-5)
    np.testing.assert_allclose(decomposed.combine(base, residual, lambdas), eps, atol=1e-6)


def test_key_input_x0_shows_the_key_frame_and_leaves_the_others():
    abar, lambdas, x0, eps, base, residual, t = _setup()
    z_t = decomposed.q_sample(x0, t, eps, abar)
    latent = decomposed.remove_base(z_t, base, t, lambdas, abar, K, "latent")
    shown = decomposed.remove_base(z_t, base, t, lambdas, abar, K, "x0")
    # With the true base removed the key slot holds sqrt(abar) x0[k] (the paper's input, near zero
    # at high noise); 'x0' shows x0[k] itself (the data lies in [-1, 1], so clipping keeps it).
    a = jnp.sqrt(abar[t])[:, None, None, None]
    np.testing.assert_allclose(latent[:, K], a * x0[:, K], atol=1e-5)
    np.testing.assert_allclose(shown[:, K], x0[:, K], atol=2e-3)
    others = np.arange(N) != K
    np.testing.assert_array_equal(shown[:, others], latent[:, others])
    # A poor base estimate at high noise gives a large x0 estimate: clipped to [-1, 1].
    for offset, bound in ((10.0, -1.0), (-10.0, 1.0)):  # Estimates far below and far above.
        far = decomposed.remove_base(z_t, base + offset, t * 0 + 999, lambdas, abar, K, "x0")
        np.testing.assert_array_equal(far[:, K], bound)
    with pytest.raises(ValueError, match="key_input must be one of"):
        decomposed.remove_base(z_t, base, t, lambdas, abar, K, "pixels")
    with pytest.raises(ValueError, match="needs the key frame index"):
        decomposed.remove_base(z_t, base, t, lambdas, abar, None, "x0")
    with pytest.raises(ValueError, match=r"^key_input='clean' needs the key frame's value"):
        decomposed.remove_base(z_t, base, t, lambdas, abar, K, "clean")
    for as_noise in (decomposed.base_as_noise, decomposed.residual_as_noise):
        args = (lambdas, abar) if as_noise is decomposed.residual_as_noise else (abar,)
        with pytest.raises(ValueError, match="prediction must be one of"):
            as_noise(lambda z, t: z, "score", *args)


def test_key_input_x0_changes_only_the_residual_generators_input():
    abar, lambdas, x0, eps, base, residual, t = _setup()
    z_t = decomposed.q_sample(x0, t, eps, abar)
    seen = {}

    def residual_fn(zr, tt):
        seen["zr"] = zr
        return residual

    out = decomposed.predict_noise(
        lambda z, tt: base[:, 0], residual_fn, z_t, t, lambdas, abar, K, "x0"
    )
    np.testing.assert_allclose(out[0], eps, atol=1e-5)  # The combination is unchanged.
    np.testing.assert_allclose(seen["zr"][:, K], x0[:, K], atol=2e-3)


def test_key_input_clean_shows_the_given_key_frame_in_training_and_sampling():
    abar, lambdas, x0, eps, base, residual, t = _setup()
    z_t = decomposed.q_sample(x0, t, eps, abar)
    latent = decomposed.remove_base(z_t, base, t, lambdas, abar, K, "latent")
    shown = decomposed.remove_base(z_t, base, t, lambdas, abar, K, "clean", x0[:, K] + 0.25)
    np.testing.assert_allclose(shown[:, K], x0[:, K] + 0.25)
    others = np.arange(N) != K
    np.testing.assert_array_equal(shown[:, others], latent[:, others])
    with pytest.raises(ValueError, match="key_value"):
        decomposed.remove_base(z_t, base, t, lambdas, abar, K, "clean")

    # The loss shows the residual generator the real key frame.
    seen = {}

    def residual_fn(zr, tt):
        seen["zr"] = zr
        return jnp.zeros_like(zr)

    decomposed.videofusion_loss(
        lambda z, tt: jnp.zeros_like(z),
        residual_fn,
        x0,
        jax.random.key(3),
        lambdas,
        abar,
        K,
        key_input="clean",
    )
    np.testing.assert_array_equal(seen["zr"][:, K], x0[:, K])


def _six_steps(base_fn, residual_fn, shape, lambdas, abar, **kw):
    """`sampling.sample` with fixed keys, key frame `K` and 6 steps."""
    keys = (jax.random.key(0), jax.random.key(1))
    return sampling.sample(base_fn, residual_fn, shape, *keys, lambdas, abar, K, num_steps=6, **kw)


@pytest.mark.parametrize("guidance_scale", [1.0, 2.0])
def test_key_input_clean_draws_the_key_frame_first_and_unchanged(guidance_scale):
    # The key frame's trajectory does not depend on the other frames, so drawn alone first it ends
    # where the joint sampler ends it, and the residual generator sees that end at every step.
    abar, lambdas, x0, *_ = _setup(seed=4, batch=2)
    seen = []
    cond, null = {"label": jnp.array([1.0, 2.0])}, {"label": jnp.zeros((2,))}

    def base_fn(z, t, c):
        return 0.5 * z + 0.05 * c["label"][:, None, None, None]

    def residual_fn(z, t, c):
        seen.append(z[:, K])
        return 0.5 * z + 0.1 * jnp.sin(z) + 0.2 * z[:, K : K + 1]  # Every frame sees the key.

    def run(key_input, eta):
        seen.clear()
        with jax.disable_jit():  # The loop runs in Python: every step's input is recorded.
            return _six_steps(
                base_fn,
                residual_fn,
                x0.shape,
                lambdas,
                abar,
                eta=eta,
                key_input=key_input,
                cond=cond,
                null_cond=null,
                guidance_scale=guidance_scale,
            )

    for eta in (0.0, 1.0):
        per_step = run("x0", eta)
        first = run("clean", eta)
        shown = list(seen)
        np.testing.assert_allclose(first[:, K], per_step[:, K], atol=1e-6)
        assert not np.allclose(first[:, 0], per_step[:, 0])  # The others saw another key frame.
        # At every step the slot holds the finished key frame, in both branches of guidance.
        key = first[:, K]
        key = jnp.concatenate([key, key]) if guidance_scale != 1.0 else key
        assert len(shown) == 6
        for step_input in shown:
            np.testing.assert_allclose(step_input, key, atol=1e-6)


def test_key_frame_drawn_first_is_shown_within_the_data_range():
    """Without clipping the estimates, the finished key frame can leave [-1, 1]; the residual
    generator is shown it as the video ends, clipped to the data's range."""
    abar, lambdas, x0, *_ = _setup(seed=4, batch=2)
    seen = []

    def base_fn(z, t, c):
        return 0.0 * z  # x0 estimate z / sqrt(abar): far outside [-1, 1] at high noise.

    def residual_fn(z, t, c):
        seen.append(z[:, K])
        return 0.5 * z

    with jax.disable_jit():
        out = _six_steps(
            base_fn, residual_fn, x0.shape, lambdas, abar, eta=0.0, clip_x0=False, key_input="clean"
        )
    assert len(seen) == 6
    key = np.asarray(seen[0])
    assert np.abs(key).max() == 1.0 and (np.abs(key) == 1.0).mean() > 0.1  # It was clipped.
    np.testing.assert_allclose(key, out[:, K], atol=1e-6)


def test_key_frame_drawn_first_is_not_moved_by_reconstruction_guidance():
    # A clip continued with its key frame free: with 'clean', guidance steers the other free
    # frames but not the key frame, which ends as drawn alone (as without guidance).
    abar, lambdas, x0, *_ = _setup(seed=6, batch=2)
    mask = jnp.arange(N) < K  # The frames before the key frame are held.

    def base_fn(z, t, c):
        return 0.5 * z

    def residual_fn(z, t, c):
        return 0.5 * z + 0.2 * jnp.roll(z, 1, axis=1)

    def run(key_input, w):
        return _six_steps(
            base_fn,
            residual_fn,
            x0.shape,
            lambdas,
            abar,
            eta=1.0,
            known=(x0, mask),
            known_guidance=w,
            key_input=key_input,
        )

    plain, guided = run("clean", 0.0), run("clean", 2.0)
    np.testing.assert_allclose(guided[:, K], plain[:, K], atol=1e-6)
    np.testing.assert_allclose(guided[:, :K], x0[:, :K], atol=1e-5)  # Held frames come back.
    assert not np.allclose(guided[:, K + 1 :], plain[:, K + 1 :])  # Guidance moved the others.
    # With 'x0' guidance moves the key frame too (it is one of the free frames there).
    assert not np.allclose(run("x0", 2.0)[:, K], run("x0", 0.0)[:, K])


def test_oracle_ddim_step_recovers_x0():
    abar, lambdas, x0, eps, base, residual, t = _setup()
    z_t = decomposed.q_sample(x0, t, eps, abar)
    eps_hat, _, _ = decomposed.predict_noise(
        lambda z, tt: base[:, 0], lambda zr, tt: residual, z_t, t, lambdas, abar, K
    )
    np.testing.assert_allclose(eps_hat, eps, atol=1e-5)
    abar_t = abar[t][:, None, None, None, None]
    z_s, x0_hat = sampling.ddim_step(z_t, eps_hat, abar_t, 1.0, 0.0, None, clip_x0=False)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-3)
    np.testing.assert_allclose(z_s, x0, atol=2e-3)


def _oracle(x0, lambdas, abar):
    """Perfect denoisers for data concentrated on `x0`, split into base and residual."""
    lam = lambdas[None, :, None, None, None]

    def base_fn(z_key, t, cond):
        a = abar[t][:, None, None, None]
        return (z_key - jnp.sqrt(a) * x0[:, K]) / jnp.sqrt(1 - a)

    def residual_fn(zr, t, cond):
        a = abar[t][:, None, None, None, None]
        r = (zr - jnp.sqrt(a) * x0) / (jnp.sqrt(1 - a) * jnp.sqrt(jnp.maximum(1 - lam, 1e-12)))
        return jnp.where(lam < 1, r, 0.0)

    return base_fn, residual_fn


@pytest.mark.parametrize("eta,steps", [(0.0, 10), (1.0, 25)])
def test_sampler_with_oracle_returns_the_data(eta, steps):
    abar, lambdas, x0, *_ = _setup(seed=3, batch=2)
    base_fn, residual_fn = _oracle(x0, lambdas, abar)
    out = sampling.sample(
        base_fn,
        residual_fn,
        x0.shape,
        jax.random.key(5),
        jax.random.key(6),
        lambdas,
        abar,
        K,
        num_steps=steps,
        eta=eta,
        clip_x0=False,
    )
    np.testing.assert_allclose(out, x0, atol=2e-3)


def _v_oracle(x0, lambdas, abar):
    """The oracle's answers as v (`decomposed.base_as_noise`, `residual_as_noise`)."""
    base_eps, residual_eps = _oracle(x0, lambdas, abar)
    lam = lambdas[None, :, None, None, None]

    def base_fn(z_key, t, cond):
        a = abar[t][:, None, None, None]
        return jnp.sqrt(a) * base_eps(z_key, t, cond) - jnp.sqrt(1 - a) * x0[:, K]

    def residual_fn(zr, t, cond):
        a = abar[t][:, None, None, None, None]
        s = jnp.sqrt(1 - a) * jnp.sqrt(1 - lam)
        rho = jnp.sqrt(a + s**2)
        return (jnp.sqrt(a) * residual_eps(zr, t, cond) - s * x0) / rho

    return base_fn, residual_fn


def _x0_oracle(x0, lambdas, abar):
    """The oracle's answers as the clean frames: the base generator's the key frame, the residual
    generator's every frame (its key frame's answer unused)."""
    return (lambda z, t, c: x0[:, K]), (lambda zr, t, c: x0)


@pytest.mark.parametrize("prediction,oracle", [("v", _v_oracle), ("x0", _x0_oracle)])
@pytest.mark.parametrize("lam", [0.5, 0.0])
def test_sampler_with_a_v_or_x0_oracle_returns_the_data(lam, prediction, oracle):
    abar, lambdas, x0, *_ = _setup(seed=4, batch=2, lam=lam)
    if lam == 0:  # The VDM baseline: no key frame, no base generator.
        lambdas = decomposed.independent_lambdas(N)
    base_fn, residual_fn = oracle(x0, lambdas, abar)
    out = sampling.sample(
        base_fn if lam > 0 else None,
        residual_fn,
        x0.shape,
        jax.random.key(5),
        jax.random.key(6),
        lambdas,
        abar,
        K,
        num_steps=10,
        clip_x0=False,
        prediction=prediction,
    )
    np.testing.assert_allclose(out, x0, atol=2e-3)
    with pytest.raises(ValueError, match="prediction"):
        decomposed.base_as_noise(base_fn, "score", abar)


def test_x0_prediction_recovers_the_noise_and_its_loss_has_finite_gradients():
    """`prediction='x0'`: the exact clean frames give back the exact noise (base and residual;
    the key frame, with no residual noise, gives 0), the loss of a network off the data has
    finite gradients (no NaN from the key frame's zero residual scale), and without min-SNR the
    weights are the x0 loss's, `1 / SNR`."""
    abar, lambdas, x0, eps, base, residual, t = _setup()
    z_t = decomposed.q_sample(x0, t, eps, abar)
    b_hat = decomposed.base_as_noise(lambda z, tt: x0[:, K], "x0", abar)(z_t[:, K], t)
    np.testing.assert_allclose(b_hat, eps[:, K], atol=2e-3)
    zr = decomposed.remove_base(z_t, base, t, lambdas, abar)
    r_hat = decomposed.residual_as_noise(lambda z, tt: x0, "x0", lambdas, abar)(zr, t)
    others = np.arange(N) != K
    np.testing.assert_allclose(r_hat[:, others], residual[:, others], atol=2e-3)
    np.testing.assert_array_equal(r_hat[:, K], 0.0)

    def loss(scale):
        value, _ = decomposed.videofusion_loss(
            lambda z, tt: scale * z,
            lambda z, tt: scale * z,
            x0,
            jax.random.key(3),
            lambdas,
            abar,
            K,
            prediction="x0",
            min_snr_gamma=5.0,
        )
        return value

    value, grad = jax.value_and_grad(loss)(0.7)
    assert np.isfinite(value) and value > 0 and np.isfinite(grad) and grad != 0
    tt = jnp.array([0, 500, 999])
    a = abar[tt]
    np.testing.assert_allclose(decomposed.loss_weights(tt, abar, "x0", 0.0), (1 - a) / a, rtol=1e-5)


def test_loss_weights_min_snr_and_v():
    abar = jnp.asarray(schedules.make_schedule("linear"))
    t = jnp.array([0, 300, 999])
    a = np.asarray(abar)[np.asarray(t)]
    snr = a / (1 - a)
    np.testing.assert_allclose(decomposed.loss_weights(t, abar, "eps", 0.0), 1.0)
    np.testing.assert_allclose(decomposed.loss_weights(t, abar, "v", 0.0), 1 / a, rtol=1e-5)
    for prediction in ("eps", "v"):
        w = decomposed.loss_weights(t, abar, prediction, 5.0)
        np.testing.assert_allclose(w, np.minimum(snr, 5.0) / snr, rtol=1e-5)
    # Low noise (SNR far above 5) is weighted down, high noise (SNR below 5) not at all.
    assert w[0] < 0.01 and w[2] == pytest.approx(1.0)
    # Any positive gamma weights, a small one too.
    w = decomposed.loss_weights(t, abar, "eps", 0.5)
    np.testing.assert_allclose(w, np.minimum(snr, 0.5) / snr, rtol=1e-5)
    # A floor: the clean-frame error keeps weight 1 where SNR < 1 (truncated SNR), the cap stays.
    w = decomposed.loss_weights(t, abar, "v", 5.0, 1.0)
    np.testing.assert_allclose(w, np.clip(snr, 1.0, 5.0) / snr, rtol=1e-5)
    assert snr[2] < 1 < 5 < snr[0]  # Each of the three branches is met.
    assert w[2] == pytest.approx(1 / snr[2], rel=1e-5) and w[2] > 100
    assert w[0] == pytest.approx(5 / snr[0], rel=1e-5)


def test_importance_timesteps_follow_the_floored_weights():
    """With a floor on the min-SNR weight the proposal follows the floored weights: more of the
    draws go to the noisiest levels than without it, and the factors still keep the expectation."""
    abar = jnp.asarray(schedules.make_schedule("linear"))
    num = abar.shape[0]
    keys = jax.random.split(jax.random.key(0), 2000)

    def draw(floor):
        fn = lambda k: decomposed.sample_timesteps(k, 8, abar, "v", 5.0, "importance", 0.1, floor)
        return (np.asarray(x) for x in jax.jit(jax.vmap(fn))(keys))

    t0, _ = draw(0.0)
    t1, factor = draw(1.0)
    assert np.mean(t1 > 500) > np.mean(t0 > 500) + 0.2
    value = np.cos(np.arange(num) / 70.0) + 2.0
    assert np.mean(factor * value[t1]) == pytest.approx(value.mean(), rel=0.02)


def test_importance_timesteps_keep_the_loss_expectation_and_go_where_it_is_large():
    """`t_sampling='importance'`: each batch holds one draw in each of its B quantile strata of
    the proposal, every draw's factor is `1 / (T q(t))`, so the factor-weighted mean of any
    per-timestep value matches its uniform mean; most draws land where the min-SNR weighted loss
    can be large, none of the factors exceeds `1 / uniform_share`."""
    abar = jnp.asarray(schedules.make_schedule("linear"))
    batch, num = 8, abar.shape[0]
    draw = jax.jit(
        jax.vmap(lambda k: decomposed.sample_timesteps(k, batch, abar, "v", 5.0, "importance"))
    )
    t, factor = (np.asarray(x) for x in draw(jax.random.split(jax.random.key(0), 4000)))
    w = np.asarray(decomposed.loss_weights(jnp.arange(num), abar, "v", 5.0))
    snr = np.asarray(abar / (1 - abar))
    bound = w * snr / (1 + snr)
    q = 0.9 * bound / bound.sum() + 0.1 / num
    np.testing.assert_allclose(factor, 1.0 / (num * q[t]), rtol=1e-4)
    assert factor.max() <= 1.0 / 0.1 + 1e-4
    strata = np.searchsorted(np.cumsum(q), np.linspace(0, 1, batch + 1)[1:-1], side="right")
    for row in t:  # Sorted, one draw per stratum.
        assert np.all(np.diff(row) >= 0)
        assert np.all(row[1:] >= strata) and np.all(row[:-1] <= strata)
    value = np.sin(np.arange(num) / 90.0) + 2.0  # Any per-timestep value.
    assert np.mean(factor * value[t]) == pytest.approx(value.mean(), rel=0.02)
    assert np.mean(t < 400) > 0.8  # Uniform draws: 40%.
    t, factor = decomposed.sample_timesteps(jax.random.key(1), 5, abar, "v", 5.0, "uniform")
    assert t.shape == (5,) and np.all(np.asarray(factor) == 1.0)
    with pytest.raises(ValueError, match="t_sampling must be one of"):
        decomposed.sample_timesteps(jax.random.key(1), 5, abar, "v", 5.0, "loss_aware")
    with pytest.raises(ValueError, match="uniform share must lie in"):
        decomposed.sample_timesteps(jax.random.key(1), 5, abar, "v", 5.0, "importance", 0.0)


def test_ddim_eta0_is_deterministic_and_keys_matter():
    abar, lambdas, x0, *_ = _setup(seed=4, batch=2)

    def base_fn(z, t, c):
        return 0.5 * z

    def residual_fn(z, t, c):
        return 0.5 * z + 0.1 * jnp.sin(z)

    @functools.partial(jax.jit, static_argnums=(2,))
    def sample(b, r, eta):
        return sampling.sample(
            base_fn, residual_fn, x0.shape, b, r, lambdas, abar, K, num_steps=8, eta=eta
        )

    def run(base_key, residual_key, eta=0.0):
        return sample(jax.random.key(base_key), jax.random.key(residual_key), eta)

    a, b = run(0, 1), run(0, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, run(0, 2))
    assert not np.allclose(run(0, 1, eta=1.0), a)


def test_sampling_is_one_compiled_loop():
    abar, lambdas, x0, *_ = _setup(batch=1)
    calls = []

    def residual_fn(z, t, c):
        calls.append(1)  # runs at trace time only
        return 0.5 * z

    fn = jax.jit(
        lambda r: sampling.sample(
            None,
            residual_fn,
            x0.shape,
            r,
            r,
            decomposed.independent_lambdas(N),
            abar,
            0,
            num_steps=50,
        )
    )
    hlo = fn.lower(jax.random.key(0)).as_text()
    assert len(calls) == 1 and "while" in hlo


def test_guidance_scale_zero_and_one_reduce_exactly():
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
    t = jnp.array([1, 2, 3])
    cond = {"label": jnp.array([0, 1, 2])}
    null = {"label": jnp.array([9, 9, 9])}

    def fn(z, tt, c):
        return z * (1.0 + c["label"][:, None, None, None]) + tt[:, None, None, None]

    np.testing.assert_array_equal(sampling.guided(fn, x, t, cond, null, 1.0), fn(x, t, cond))
    np.testing.assert_array_equal(sampling.guided(fn, x, t, cond, null, 0.0), fn(x, t, null))
    out = sampling.guided(fn, x, t, cond, null, 3.0)
    np.testing.assert_allclose(
        out, fn(x, t, null) + 3.0 * (fn(x, t, cond) - fn(x, t, null)), rtol=1e-6
    )


def test_long_video_clips_share_the_base_noise():
    abar = jnp.asarray(schedules.make_schedule("linear"))
    lambdas = decomposed.frame_lambdas(N, 0.5)
    noise = sampling.draw_noise(jax.random.key(0), jax.random.key(1), (2, N, 3, 3, 1), lambdas, 4)
    assert noise.shape == (8, N, 3, 3, 1)
    clips = noise.reshape(2, 4, N, 3, 3, 1)
    # Key frames hold the shared base noise; other frames differ between clips.
    np.testing.assert_array_equal(clips[:, 0, K], clips[:, 3, K])
    assert not np.allclose(clips[:, 0, 0], clips[:, 1, 0])
    assert not np.allclose(clips[0, 0, K], clips[1, 0, K])

    def base_fn(z, t, c):
        return 0.3 * z

    def residual_fn(z, t, c):
        return 0.3 * z + 0.2 * jnp.roll(z, 1, axis=1)

    out = sampling.sample(
        base_fn,
        residual_fn,
        (2, N, 3, 3, 1),
        jax.random.key(0),
        jax.random.key(1),
        lambdas,
        abar,
        K,
        num_steps=5,
        num_clips=4,
    )
    assert out.shape == (2, 4 * N, 3, 3, 1)
    key_frames = out[:, K::N]
    np.testing.assert_allclose(key_frames, jnp.broadcast_to(key_frames[:, :1], key_frames.shape))
    assert not np.allclose(out[:, 0], out[:, N])


def _clean_nets():
    """A base and a residual generator in closed form, conditioned on a float label."""

    def base_fn(z, t, c):
        tt = t.astype(jnp.float32)[:, None, None, None]
        return 0.5 * z + 0.05 * c["label"][:, None, None, None] + 0.1 * jnp.cos(tt / 97.0)

    def residual_fn(z, t, c):
        label = c["label"][:, None, None, None, None]
        # Frames meet through the key frame's slot and through their mean: the latter carries
        # the reconstruction guidance's gradient from the held frames to the others.
        mixed = 0.2 * z[:, K : K + 1] + 0.2 * jnp.mean(z, axis=1, keepdims=True)
        return 0.5 * z + 0.1 * jnp.sin(z) + mixed - 0.05 * label

    return base_fn, residual_fn


def _clean_two_passes(
    base_fn,
    residual_fn,
    shape,
    lambdas,
    abar,
    *,
    num_steps,
    eta,
    cond,
    null_cond,
    guidance_scale,
    num_clips=1,
    known=None,
    known_guidance=0.0,
    prediction="eps",
):
    """`key_input='clean'` computed as the sampler did before it kept the key frame's base
    outputs: the key frame drawn alone (a base pass per step), then the clip, whose estimate runs
    the base generator again at every step. Public pieces only (`make_step`, `guided`,
    `predict_noise`), with the keys of `_six_steps`."""
    keys = (jax.random.key(0), jax.random.key(1))
    base_fn = decomposed.base_as_noise(base_fn, prediction, abar)
    residual_fn = decomposed.residual_as_noise(residual_fn, prediction, lambdas, abar)
    b, n, h, w, c = shape
    cond, null_cond = jax.tree.map(lambda x: jnp.repeat(x, num_clips, axis=0), (cond, null_cond))
    one = jnp.ones((1,), jnp.float32)
    key_shape = (b, 1, h, w, c)
    key_known = None if known is None else (known[0][:, K : K + 1], known[1][K : K + 1])

    def key_predict(z, t):
        fn = lambda z, t, c: base_fn(z[:, 0], t, c)[:, None]
        return sampling.guided(fn, z, t, cond, null_cond, guidance_scale)

    body = sampling.make_step(
        key_predict,
        abar,
        num_steps,
        *keys,
        key_shape,
        one,
        eta=eta,
        clip_x0=True,
        num_clips=num_clips,
        known=key_known,
    )
    z = sampling.draw_noise(*keys, key_shape, one, num_clips)
    key_value = jnp.clip(jax.lax.fori_loop(0, num_steps, body, z), -1.0, 1.0)[:, 0]

    def two_stage(z, t, c):
        shown = key_value if key_value.shape[0] == z.shape[0] else jnp.tile(key_value, (2, 1, 1, 1))
        return decomposed.predict_noise(
            lambda z, t: base_fn(z, t, c),
            lambda z, t: residual_fn(z, t, c),
            z,
            t,
            lambdas,
            abar,
            K,
            "clean",
            shown,
        )[0]

    def predict(z, t):
        return sampling.guided(two_stage, z, t, cond, null_cond, guidance_scale)

    body = sampling.make_step(
        predict,
        abar,
        num_steps,
        *keys,
        shape,
        lambdas,
        eta=eta,
        clip_x0=True,
        num_clips=num_clips,
        known=known,
        known_guidance=known_guidance,
        unsteered_frame=K,
    )
    z = sampling.draw_noise(*keys, shape, lambdas, num_clips)
    x0 = jax.lax.fori_loop(0, num_steps, body, z)
    return jnp.clip(x0, -1.0, 1.0).reshape(b, num_clips * n, h, w, c)


_CLEAN_CASES = {
    "ddim": dict(eta=0.0),
    "ddpm": dict(eta=1.0),
    "held_to_the_key_frame": dict(eta=1.0, held=K + 1),
    "reconstruction_guided_ddim": dict(eta=0.0, held=K, known_guidance=2.0),
    "reconstruction_guided_ddpm": dict(eta=1.0, held=K, known_guidance=2.0),
    "clips_v_unconditional": dict(eta=1.0, num_clips=2, prediction="v", guidance_scale=0.0),
}


@pytest.mark.parametrize("case", sorted(_CLEAN_CASES))
def test_key_frame_base_outputs_kept_give_the_two_pass_result(case):
    """`key_input='clean'` reuses the base generator's outputs of the key frame's pass in the
    clip's steps: the videos equal those of the computation that ran it again at every step
    (guided, held frames, reconstruction guidance, several clips, v-prediction)."""
    kw = dict(_CLEAN_CASES[case])
    abar, lambdas, x0, *_ = _setup(seed=7, batch=2)
    held = kw.pop("held", None)
    if held is not None:
        kw["known"] = (x0, jnp.arange(N) < held)
    kw.setdefault("guidance_scale", 2.5)
    cond, null = {"label": jnp.array([1.0, 2.0])}, {"label": jnp.zeros((2,))}
    base_fn, residual_fn = _clean_nets()
    reference = jax.jit(
        lambda: _clean_two_passes(
            base_fn,
            residual_fn,
            x0.shape,
            lambdas,
            abar,
            num_steps=6,
            cond=cond,
            null_cond=null,
            **kw,
        )
    )()

    def clean(**kw):
        return jax.jit(
            lambda: _six_steps(
                base_fn,
                residual_fn,
                x0.shape,
                lambdas,
                abar,
                key_input="clean",
                cond=cond,
                null_cond=null,
                **kw,
            )
        )()

    out = clean(**kw)
    assert not np.allclose(out[:, K], out[:, 0], atol=0.05)  # The frames differ: a real test.
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
    if kw.get("known_guidance"):  # The guidance moves the frames it steers: a real test of it.
        unguided = clean(**{**kw, "known_guidance": 0.0})
        moved = np.abs(np.asarray(out) - np.asarray(unguided)).max(axis=(0, 2, 3, 4))
        # The frames after the held ones and the key frame move; the key frame (drawn first) not.
        assert moved[K + 1 :].min() > 1e-3 and moved[K] == 0.0, moved


@pytest.mark.parametrize("known_guidance", [0.0, 2.0])
def test_key_input_clean_runs_the_base_generator_once_per_step(known_guidance):
    """In the traced program the base generator appears once, in the key frame's loop (run once
    per step); the two-pass computation had it twice (and reconstruction guidance a backward
    pass through it)."""
    abar, lambdas, x0, *_ = _setup(seed=7, batch=2)
    cond, null = {"label": jnp.array([1.0, 2.0])}, {"label": jnp.zeros((2,))}
    base_fn, residual_fn = _clean_nets()
    traced = []

    def counted(z, t, c):
        traced.append(z.shape)  # Runs at trace time only: once per call in the program.
        return base_fn(z, t, c)

    kw = dict(eta=1.0, cond=cond, null_cond=null, guidance_scale=2.5)
    kw.update(known=(x0, jnp.arange(N) < K), known_guidance=known_guidance)
    jaxpr = jax.make_jaxpr(
        lambda: _six_steps(counted, residual_fn, x0.shape, lambdas, abar, key_input="clean", **kw)
    )()
    assert traced == [(4, 4, 4, 3)]  # Both conditions of the 2 videos as one batch.
    assert [e.primitive.name for e in jaxpr.eqns].count("scan") == 2  # Key frame, then the clip.
    traced.clear()
    jax.make_jaxpr(
        lambda: _clean_two_passes(counted, residual_fn, x0.shape, lambdas, abar, num_steps=6, **kw)
    )()
    assert len(traced) == 2


def test_cosine_schedule_is_the_closed_form():
    """Improved DDPM's alpha-bar, `f(t) / f(0)` with `f(u) = cos((u + s) / (1 + s) pi / 2)^2`,
    wherever no beta is clipped (all but the last steps), and betas clipped at 0.999."""
    steps, s = 200, 0.008
    f = np.cos((np.arange(steps + 1) / steps + s) / (1 + s) * np.pi / 2) ** 2
    abar = schedules.make_schedule("cosine", steps)
    np.testing.assert_allclose(abar[: steps - 5], (f[1:] / f[0])[: steps - 5], rtol=1e-5)
    betas = schedules.cosine_betas(steps)
    assert betas.dtype == np.float64 and betas.max() == pytest.approx(0.999)


@pytest.mark.parametrize("prediction,gamma", [("eps", 0.0), ("v", 0.0), ("v", 5.0), ("eps", 5.0)])
def test_image_loss_against_numpy(prediction, gamma):
    """The base generator's image loss, written out in NumPy for a known network."""
    abar = schedules.make_schedule("linear", 100)
    x0 = np.asarray(jax.random.uniform(jax.random.key(1), (6, 4, 4, 2), minval=-1, maxval=1))
    rng = jax.random.key(2)

    def net(z, t):
        return 0.3 * z + 0.01 * t[:, None, None, None]

    loss, terms = decomposed.image_loss(
        net, jnp.asarray(x0), rng, jnp.asarray(abar), prediction, gamma
    )
    # The draws the function documents: timesteps from the first half of the key, noise from the
    # second.
    t_rng, noise_rng = jax.random.split(rng)
    t = np.asarray(jax.random.randint(t_rng, (6,), 0, 100))
    eps = np.asarray(jax.random.normal(noise_rng, x0.shape, jnp.float32), np.float64)
    a = abar[t].astype(np.float64)[:, None, None, None]
    z = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
    out = 0.3 * z + 0.01 * t[:, None, None, None]
    eps_hat = out if prediction == "eps" else np.sqrt(a) * out + np.sqrt(1 - a) * z
    snr = a / (1 - a)
    if gamma:
        w = np.minimum(snr, gamma) / snr
    else:
        w = 1 / a if prediction == "v" else np.ones_like(a)
    expected = np.mean(w * (eps - eps_hat) ** 2)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert float(terms["loss_key"]) == float(loss)


def test_diffusion_create_passes_every_argument():
    from vfjax.diffusion.process import Diffusion

    d = Diffusion.create(
        "videofusion",
        6,
        0.3,
        key_frame=1,
        schedule="cosine",
        num_timesteps=50,
        key_input="clean",
        prediction="v",
        min_snr_gamma=5,
        logsnr_shift=1.0,
    )
    assert d.key_frame == 1 and d.num_timesteps == 50
    np.testing.assert_array_equal(d.lambdas, decomposed.frame_lambdas(6, 0.3, 1))
    np.testing.assert_array_equal(d.alphas_cumprod, schedules.make_schedule("cosine", 50, 1.0))
    assert (d.key_input, d.prediction) == ("clean", "v")
    assert d.min_snr_gamma == 5.0 and isinstance(d.min_snr_gamma, float)
    # Defaults: the paper's process (linear, 1000 steps, the latent key input, eps, no weights).
    d = Diffusion.create("videofusion", 4)
    assert d.key_frame == 2 and d.num_timesteps == 1000
    np.testing.assert_array_equal(d.alphas_cumprod, schedules.make_schedule("linear", 1000))
    np.testing.assert_array_equal(d.lambdas, [0.5, 0.5, 1.0, 0.5])
    assert (d.key_input, d.prediction, d.min_snr_gamma) == ("latent", "eps", 0.0)
    # VDM: independent noise (zeros, float32 like VideoFusion's shares), still a key frame index.
    d = Diffusion.create("vdm", 6, 0.3, key_frame=1)
    assert d.lambdas.dtype == np.float32 and d.key_frame == 1
    np.testing.assert_array_equal(d.lambdas, np.zeros(6))
    assert decomposed.independent_lambdas(3).dtype == np.float32
    for kwargs, message in (
        (dict(key_input="noisy"), "key_input must be one of"),
        (dict(prediction="score"), "prediction must be one of"),
        (dict(min_snr_gamma=-1.0), "min_snr_gamma must be >= 0"),
        (dict(snr_floor=1.0), "snr_floor must lie in"),
        (dict(min_snr_gamma=5.0, snr_floor=6.0), "snr_floor must lie in"),
    ):
        with pytest.raises(ValueError, match=message):
            Diffusion.create("videofusion", 4, **kwargs)


def test_make_step_holds_known_frames_by_replacement_alone_by_default():
    """`make_step` without `known_guidance` is replacement alone (`known_guidance=0`), and a
    guidance weight given to it reaches the update."""
    abar, lambdas, x0, *_ = _setup(seed=3, batch=2)
    known = (x0, jnp.arange(N) < 2)

    def predict(z, t):  # Frames meet through their mean, so guidance has a gradient to follow.
        return 0.5 * z + 0.3 * jnp.mean(z, axis=1, keepdims=True)

    keys = (jax.random.key(0), jax.random.key(1))

    def step(**kw):
        body = sampling.make_step(
            predict, abar, 4, *keys, x0.shape, lambdas, eta=0.0, clip_x0=True, known=known, **kw
        )
        z = sampling.draw_noise(*keys, x0.shape, lambdas)
        return np.asarray(jax.jit(body)(1, z))

    default = step()
    np.testing.assert_array_equal(default, step(known_guidance=0.0))
    assert np.abs(default - step(known_guidance=1.0))[:, 2:].max() > 1e-3


def test_sample_defaults_are_deterministic_ddim_with_50_steps_and_no_guidance():
    abar, lambdas, x0, *_ = _setup(seed=2, batch=2)
    cond, null = {"label": jnp.array([1.0, 2.0])}, {"label": jnp.zeros((2,))}

    def base_fn(z, t, c):
        return 0.5 * z + 0.05 * c["label"][:, None, None, None]

    def residual_fn(z, t, c):
        return 0.5 * z + 0.2 * z[:, K : K + 1] - 0.05 * c["label"][:, None, None, None, None]

    keys = (jax.random.key(0), jax.random.key(1))
    args = (base_fn, residual_fn, x0.shape, *keys, lambdas, abar, K)
    common = dict(cond=cond, null_cond=null)
    default = sampling.sample(*args, **common)
    explicit = sampling.sample(*args, num_steps=50, eta=0.0, guidance_scale=1.0, **common)
    np.testing.assert_array_equal(default, explicit)


def test_clips_of_a_video_share_its_condition_whatever_its_rank():
    """Several clips per video: each video's condition (a label `[B]`, text `[B, S]`) reaches
    its own clips and no other video's."""
    abar, lambdas, x0, *_ = _setup(seed=2, batch=2)

    def base_fn(z, t, c):
        return 0.5 * z + 0.05 * c["text"].mean(axis=1)[:, None, None, None]

    def residual_fn(z, t, c):
        shift = c["text"].mean(axis=1) + c["label"]
        return 0.5 * z - 0.05 * shift[:, None, None, None, None]

    def run(text):
        cond = {"label": jnp.array([1.0, 2.0]), "text": text}
        return np.asarray(
            sampling.sample(
                base_fn,
                residual_fn,
                x0.shape,
                jax.random.key(0),
                jax.random.key(1),
                lambdas,
                abar,
                K,
                num_steps=4,
                num_clips=2,
                cond=cond,
            )
        )

    text = jnp.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    out, changed = run(text), run(text.at[1].set(-3.0))
    assert out.shape == (2, 2 * N) + x0.shape[2:]
    np.testing.assert_array_equal(changed[0], out[0])  # Video 0's clips: untouched.
    assert np.abs(changed[1] - out[1]).reshape(2, N, -1).max(axis=(1, 2)).min() > 1e-3


def test_ddim_timesteps_span_the_process():
    np.testing.assert_array_equal(sampling.ddim_timesteps(10, 10), np.arange(9, -1, -1))
    np.testing.assert_array_equal(sampling.ddim_timesteps(10, 1), [9])
    np.testing.assert_array_equal(sampling.ddim_timesteps(1000, 4), [999, 666, 333, 0])
    for bad in (0, 11):
        with pytest.raises(ValueError, match=r"sampling steps must be in \[1, 10\], got"):
            sampling.ddim_timesteps(10, bad)


def test_reconstruction_guidance_without_known_frames_changes_nothing():
    abar, lambdas, x0, *_ = _setup(seed=2, batch=2)

    def base_fn(z, t, c):
        return 0.5 * z

    def residual_fn(z, t, c):
        return 0.5 * z + 0.3 * jnp.mean(z, axis=1, keepdims=True)

    def run(w):
        return _six_steps(base_fn, residual_fn, x0.shape, lambdas, abar, eta=1.0, known_guidance=w)

    np.testing.assert_array_equal(run(2.0), run(0.0))


def test_schedule_and_frame_defaults_and_edges():
    """Defaults (DDPM's linear schedule of 1000 steps, no shift) and the edges of the ranges."""
    np.testing.assert_array_equal(
        schedules.make_schedule(), schedules.make_schedule("linear", 1000, 0.0)
    )
    assert schedules.make_schedule().shape == (1000,)
    assert schedules.make_schedule("linear", 1).shape == (1,)  # One step is a process too.
    with pytest.raises(ValueError, match="num_timesteps must be >= 1, got 0"):
        schedules.make_schedule("linear", 0)
    # DDPM's betas 1e-4 .. 0.02 at 1000 steps; other step counts keep the shape (scaled by 1000/T).
    betas = schedules.linear_betas()
    assert betas.shape == (1000,) and betas[0] == pytest.approx(1e-4) and betas[-1] == 0.02
    np.testing.assert_allclose(schedules.linear_betas(500)[[0, -1]], [2e-4, 0.04])
    assert schedules.cosine_betas().shape == (1000,)
    # Key frames: one frame is a clip; every index from -N to N - 1 names a frame.
    assert decomposed.key_frame_index(1) == 0 and decomposed.key_frame_index(4, -4) == 0
    with pytest.raises(ValueError, match="num_frames must be >= 1, got 0"):
        decomposed.key_frame_index(0)
    # Base shares: float32 whatever is given; a matrix is refused.
    assert decomposed.frame_lambdas(4, 0.5).dtype == np.float32
    assert decomposed.frame_lambdas(3, [0.1, 0.2, 0.3]).dtype == np.float32
    with pytest.raises(ValueError, match="vector"):
        decomposed.frame_lambdas(4, [[0.5, 0.5, 0.5, 0.5]])


def test_image_loss_defaults_are_epsilon_and_no_weighting():
    abar = jnp.asarray(schedules.make_schedule("linear", 100))
    x0 = jax.random.uniform(jax.random.key(1), (4, 4, 4, 1), minval=-1, maxval=1)

    def net(z, t):
        return 0.3 * z

    default = decomposed.image_loss(net, x0, jax.random.key(2), abar)[0]
    explicit = decomposed.image_loss(net, x0, jax.random.key(2), abar, "eps", 0.0)[0]
    assert float(default) == float(explicit)


def test_reconstruction_guidance_step_against_numpy():
    """One DDIM step with reconstruction guidance, written out: for a linear estimate
    `eps(z) = 0.5 z + 0.3 mean_frames(z)` the gradient of `||x_a - x0_a(z)||^2` is exact,
    `x0_b <- x0_b - (w sqrt(abar_t) / 2) grad_b` on the steered frames, the held frames replaced."""
    abar, lambdas, x0, *_ = _setup(seed=3, batch=2)
    mask = np.arange(N) < 2
    w, num_steps, i = 1.5, 4, 1
    keys = (jax.random.key(0), jax.random.key(1))

    def predict(z, t):
        return 0.5 * z + 0.3 * jnp.mean(z, axis=1, keepdims=True)

    body = sampling.make_step(
        predict,
        abar,
        num_steps,
        *keys,
        x0.shape,
        lambdas,
        eta=0.0,
        clip_x0=False,
        known=(x0, jnp.asarray(mask)),
        known_guidance=w,
    )
    z = sampling.draw_noise(*keys, x0.shape, lambdas)
    out = np.asarray(jax.jit(body)(i, z), np.float64)

    steps = sampling.ddim_timesteps(1000, num_steps)
    a_t, a_s = float(abar[steps[i]]), float(abar[steps[i + 1]])
    zz, values = np.asarray(z, np.float64), np.asarray(x0, np.float64)
    held = mask[None, :, None, None, None]

    def eps_of(v):
        return 0.5 * v + 0.3 * v.mean(axis=1, keepdims=True)

    x0_hat = (zz - np.sqrt(1 - a_t) * eps_of(zz)) / np.sqrt(a_t)
    # d x0 / d z = (I - sqrt(1 - a) (0.5 I + 0.3 M)) / sqrt(a), M the (symmetric) frame mean.
    g = -2.0 * held * (values - x0_hat)
    grad = (g - np.sqrt(1 - a_t) * eps_of(g)) / np.sqrt(a_t)
    x0_hat = x0_hat - (w * np.sqrt(a_t) / 2.0) * (~held) * grad
    x0_hat = np.where(held, values, x0_hat)
    eps_hat = (zz - np.sqrt(a_t) * x0_hat) / np.sqrt(1 - a_t)
    expected = np.sqrt(a_s) * x0_hat + np.sqrt(1 - a_s) * eps_hat
    assert np.abs(x0_hat - (zz - np.sqrt(1 - a_t) * eps_of(zz)) / np.sqrt(a_t))[:, 2:].max() > 1e-2
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
