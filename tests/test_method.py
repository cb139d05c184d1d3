"""The method against the paper's equations and docs/design.md, computed by hand: the loss with its
stop-gradient rule, the sampler's fresh noise, guidance composed with base removal, bf16
compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vfjax.diffusion import decomposed, sampling, schedules
from vfjax.diffusion.process import Diffusion
from vfjax.models import videofusion

N, K = 5, 2
SHAPE = (3, N, 4, 4, 2)


class Recorder:
    """A network that records its inputs and answers with a fixed affine map of them."""

    def __init__(self, scale: float, shift: float):
        self.scale, self.shift, self.inputs = scale, shift, []

    def __call__(self, z, t):
        self.inputs.append((np.asarray(z), np.asarray(t)))
        return self.scale * z + self.shift * jnp.cos(t.astype(jnp.float32))[:, None, None, None]


def _residual(scale: float, shift: float):
    base = Recorder(scale, shift)

    def fn(z, t):
        base.inputs.append((np.asarray(z), np.asarray(t)))
        return scale * z + shift * jnp.cos(t.astype(jnp.float32))[:, None, None, None, None]

    return base, fn


@pytest.mark.parametrize(
    "weights,prediction,gamma",
    [
        (None, "eps", 0.0),
        ((0.1, 0.1, 0.6, 0.1, 0.1), "eps", 0.0),
        (None, "v", 0.0),
        (None, "v", 5.0),
        (None, "eps", 5.0),
    ],
)
def test_loss_equals_the_hand_computed_value(weights, prediction, gamma):
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    lambdas = decomposed.frame_lambdas(N, 0.5, K)
    x0 = jax.random.uniform(jax.random.key(1), SHAPE, minval=-1, maxval=1)
    rng = jax.random.key(7)
    base = Recorder(0.3, 0.2)
    residual, residual_fn = _residual(-0.4, 0.1)
    w = None if weights is None else jnp.asarray(weights, jnp.float32)
    loss, terms = decomposed.videofusion_loss(
        base, residual_fn, x0, rng, lambdas, abar, K, w, prediction=prediction, min_snr_gamma=gamma
    )

    # The same draws, by hand: the timestep and the decomposed noise from the same key.
    t_rng, noise_rng = jax.random.split(rng)
    t = np.asarray(jax.random.randint(t_rng, (SHAPE[0],), 0, 1000))
    b_rng, r_rng = jax.random.split(noise_rng)
    b = np.asarray(jax.random.normal(b_rng, (SHAPE[0], 1) + SHAPE[2:]))
    r = np.asarray(jax.random.normal(r_rng, SHAPE))
    lam = np.asarray(lambdas)[None, :, None, None, None]
    eps = np.sqrt(lam) * b + np.sqrt(1 - lam) * r
    a = np.asarray(abar)[t][:, None, None, None, None]
    z_t = np.sqrt(a) * np.asarray(x0) + np.sqrt(1 - a) * eps

    # The base network sees the noised key frame, and only it.
    ((z_key, t_key),) = base.inputs
    np.testing.assert_allclose(z_key, z_t[:, K], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(t_key, t)
    b_out = (0.3 * z_t[:, K] + 0.2 * np.cos(t)[:, None, None, None])[:, None]
    # A v output is turned into noise: b = sqrt(abar) v + sqrt(1 - abar) z.
    b_hat = (
        b_out if prediction == "eps" else np.sqrt(a) * b_out + np.sqrt(1 - a) * z_t[:, K : K + 1]
    )
    # The residual network sees every frame with sqrt(lam) sqrt(1 - abar_t) b_hat removed.
    ((z_res, _),) = residual.inputs
    expected_zr = z_t - np.sqrt(lam) * np.sqrt(1 - a) * b_hat
    np.testing.assert_allclose(z_res, expected_zr, rtol=1e-5, atol=1e-5)
    r_out = -0.4 * expected_zr + 0.1 * np.cos(t)[:, None, None, None, None]
    if prediction == "eps":
        r_hat = r_out
    else:  # zr = sqrt(abar) x + s r with s = sqrt(1 - abar) sqrt(1 - lam): its own v.
        s = np.sqrt(1 - a) * np.sqrt(1 - lam)
        rho = np.sqrt(a + s**2)
        r_hat = (np.sqrt(a) * r_out + s * expected_zr / rho) / rho
    eps_hat = np.sqrt(lam) * b_hat + np.sqrt(1 - lam) * r_hat
    snr = a / (1 - a)
    if gamma > 0:
        example_w = np.minimum(snr, gamma) / snr
    else:
        example_w = 1 / a if prediction == "v" else np.ones_like(a)
    per_frame = (example_w * (eps - eps_hat) ** 2).mean(axis=(0, 2, 3, 4))
    frame_w = np.full(N, 1 / N) if weights is None else np.asarray(weights)
    np.testing.assert_allclose(float(loss), float((frame_w * per_frame).sum()), rtol=2e-5)
    np.testing.assert_allclose(float(terms["loss_key"]), per_frame[K], rtol=2e-5)
    others = np.delete(per_frame, K).mean()
    np.testing.assert_allclose(float(terms["loss_residual"]), others, rtol=2e-5)


def _affine_nets(p=0.3):
    """A base network with one parameter `p` and a residual network, both using `t`."""

    def base(z, t):
        return p * z + 0.2 * jnp.cos(t.astype(jnp.float32))[:, None, None, None]

    def residual(z, t):
        return -0.4 * z + 0.1 * jnp.cos(t.astype(jnp.float32))[:, None, None, None, None]

    return base, residual


def test_loss_defaults_are_the_papers_and_the_rule_changes_gradients_not_values():
    """Called with defaults, the loss is the paper's (uniform frame weights, the stop-gradient
    rule, the latent key input, epsilon, no weighting); without the rule it has the same value
    and other gradients."""
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    lambdas = decomposed.frame_lambdas(N, 0.5, K)
    x0 = jax.random.uniform(jax.random.key(1), SHAPE, minval=-1, maxval=1)
    rng = jax.random.key(7)

    def loss(p, *args, **kw):
        base, residual = _affine_nets(p)
        return decomposed.videofusion_loss(base, residual, x0, rng, lambdas, abar, K, *args, **kw)[
            0
        ]

    explicit = (None, True, "latent", "eps", 0.0)
    assert float(loss(0.3)) == float(loss(0.3, *explicit))
    grad_default, grad_rule = jax.grad(loss)(0.3), jax.grad(loss)(0.3, *explicit)
    grad_no_rule = jax.grad(loss)(0.3, None, False)
    assert float(grad_default) == float(grad_rule)
    assert abs(float(grad_no_rule) - float(grad_rule)) > 1e-4
    np.testing.assert_allclose(float(loss(0.3, None, False)), float(loss(0.3)), rtol=1e-6)


@pytest.mark.parametrize("key_input", ["latent", "clean"])
def test_vdm_loss_is_plain_noise_prediction(key_input):
    """No base generator: independent noise, the residual network on the latents as they are
    (whatever key input is asked for: there is no key frame to show), a uniform mean."""
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    lambdas = decomposed.independent_lambdas(N)
    x0 = jax.random.uniform(jax.random.key(1), SHAPE, minval=-1, maxval=1)
    rng = jax.random.key(7)
    _, residual = _affine_nets()
    loss, terms = decomposed.videofusion_loss(
        None, residual, x0, rng, lambdas, abar, K, key_input=key_input
    )
    t_rng, noise_rng = jax.random.split(rng)
    t = np.asarray(jax.random.randint(t_rng, (SHAPE[0],), 0, 1000))
    _, r_rng = jax.random.split(noise_rng)
    eps = np.asarray(jax.random.normal(r_rng, SHAPE), np.float64)
    a = np.asarray(abar, np.float64)[t][:, None, None, None, None]
    z_t = np.sqrt(a) * np.asarray(x0) + np.sqrt(1 - a) * eps
    eps_hat = -0.4 * z_t + 0.1 * np.cos(t)[:, None, None, None, None]
    per_frame = ((eps - eps_hat) ** 2).mean(axis=(0, 2, 3, 4))
    np.testing.assert_allclose(float(loss), per_frame.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss_key"]), per_frame[K], rtol=1e-5)


def test_loss_terms_of_a_two_frame_clip():
    """Two frames: `loss_residual` is the one non-key frame's term, `loss_key` the other's."""
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    lambdas = decomposed.frame_lambdas(2, 0.5)
    x0 = jax.random.uniform(jax.random.key(1), (3, 2, 4, 4, 2), minval=-1, maxval=1)
    base, residual = _affine_nets()
    weights = jnp.asarray([1.0, 0.0])  # The loss is then the non-key frame's term alone.
    loss, terms = decomposed.videofusion_loss(
        base, residual, x0, jax.random.key(7), lambdas, abar, 1, weights
    )
    np.testing.assert_allclose(float(terms["loss_residual"]), float(loss), rtol=1e-6)
    assert float(terms["loss_key"]) != float(terms["loss_residual"])


def _grads_by_frame(stop_gradient: bool) -> np.ndarray:
    """|d loss_i / d base parameter| for each frame i, with a base network of one parameter."""
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    lambdas = decomposed.frame_lambdas(N, 0.5, K)
    x0 = jax.random.uniform(jax.random.key(2), SHAPE, minval=-1, maxval=1)

    def loss_of_frame(theta, i):
        weights = jnp.zeros((N,)).at[i].set(1.0)
        return decomposed.videofusion_loss(
            lambda z, t: theta * z,
            lambda z, t: 0.5 * z,
            x0,
            jax.random.key(3),
            lambdas,
            abar,
            K,
            weights,
            base_stop_gradient=stop_gradient,
        )[0]

    return np.array([abs(float(jax.grad(loss_of_frame)(0.2, i))) for i in range(N)])


def test_base_stop_gradient_switch():
    """With the rule the base learns from the key frame alone; without it (the ablation) from
    every frame. The loss value is the same either way."""
    with_rule, without = _grads_by_frame(True), _grads_by_frame(False)
    assert with_rule[K] > 0 and np.all(np.delete(with_rule, K) == 0)
    assert np.all(without > 0)
    np.testing.assert_allclose(without[K], with_rule[K], rtol=1e-6)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_sampler_fresh_noise_has_the_ddim_variance_and_decomposed_correlation(eta):
    """One step `t -> s` from a fixed latent with a fixed estimate: what varies with the keys is
    the fresh noise alone, of variance sigma^2 = eta^2 (1 - abar_s)/(1 - abar_t)
    (1 - abar_t / abar_s), correlated across frames as sqrt(lam_i lam_j)."""
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    lambdas = decomposed.frame_lambdas(N, [0.3, 0.6, 1.0, 0.45, 0.8], K)
    draws, step = 4000, 3
    shape = (draws, N, 1, 1, 1)
    z = jnp.full(shape, 0.25)

    def predict(z, t):
        return jnp.full_like(z, 0.1)

    body = sampling.make_step(
        predict,
        abar,
        10,
        jax.random.key(11),
        jax.random.key(12),
        shape,
        lambdas,
        eta=eta,
        clip_x0=False,
    )
    z_s = np.asarray(body(step, z)).reshape(draws, N)
    timesteps = sampling.ddim_timesteps(1000, 10)
    abar_t, abar_s = float(abar[timesteps[step]]), float(abar[timesteps[step + 1]])
    sigma2 = eta**2 * (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
    if eta == 0:
        assert np.all(z_s == z_s[0])  # No fresh noise: every draw is the same.
        return
    np.testing.assert_allclose(z_s.var(axis=0), sigma2, rtol=0.08)
    lam = np.asarray(lambdas)
    expected = np.sqrt(np.outer(lam, lam))
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(np.corrcoef(z_s.T), expected, atol=0.05)


def test_guidance_is_on_the_combined_estimate():
    """`eps_hat = eps_u + w (eps_c - eps_u)` (docs/design.md, section 2.2), where each of
    `eps_c` and `eps_u` is the two-stage estimate under its condition: its own base estimate,
    removed, then its own residual estimate. Checked through the sampler with one DDIM step."""
    # A short schedule whose last alpha-bar (0.9) leaves most of x0_hat inside [-1, 1].
    abar = jnp.linspace(0.99, 0.9, 10)
    lambdas = decomposed.frame_lambdas(N, 0.5, K)
    cond, null = {"c": jnp.ones((3,))}, {"c": jnp.zeros((3,))}
    w = 2.5

    def base_fn(z, t, cond):
        return 0.3 * z + 0.7 * cond["c"][:, None, None, None]

    def residual_fn(z, t, cond):
        return jnp.tanh(z) * (1 + cond["c"][:, None, None, None, None])

    def run(scale):
        return sampling.sample(
            base_fn,
            residual_fn,
            SHAPE,
            jax.random.key(5),
            jax.random.key(6),
            lambdas,
            abar,
            K,
            num_steps=1,
            clip_x0=False,
            cond=cond,
            null_cond=null,
            guidance_scale=scale,
        )

    # One step from t = T - 1 to the end: the output is x0_hat = (z_T - sqrt(1 - abar) eps_hat)
    # / sqrt(abar), with z_T the start noise of the same keys.
    z = sampling.draw_noise(jax.random.key(5), jax.random.key(6), SHAPE, lambdas)
    t = jnp.full((3,), 9)
    a = float(abar[9])

    def eps_under(c):
        b = base_fn(z[:, K], t, c)[:, None]
        lam = np.asarray(lambdas)[None, :, None, None, None]
        zr = z - np.sqrt(lam) * np.sqrt(1 - a) * b
        return np.sqrt(lam) * b + np.sqrt(1 - lam) * residual_fn(zr, t, c)

    eps_c, eps_u = eps_under(cond), eps_under(null)
    guided = eps_u + w * (eps_c - eps_u)
    for scale, eps in ((w, guided), (1.0, eps_c), (0.0, eps_u)):
        expected = np.clip((z - np.sqrt(1 - a) * eps) / np.sqrt(a), -1, 1)
        assert np.mean(np.abs(expected) < 1) > 0.5  # Mostly not clipped: the values count.
        np.testing.assert_allclose(run(scale), expected, rtol=1e-4, atol=1e-4, err_msg=str(scale))
    # Guiding each generator in turn instead (the base guided, removed, the residual guided on
    # that input) gives another answer: the test tells the two apart.
    b_g = (lambda bu, bc: bu + w * (bc - bu))(base_fn(z[:, K], t, null), base_fn(z[:, K], t, cond))
    lam = np.asarray(lambdas)[None, :, None, None, None]
    zr = z - np.sqrt(lam) * np.sqrt(1 - a) * b_g[:, None]
    r_u, r_c = residual_fn(zr, t, null), residual_fn(zr, t, cond)
    in_turn = np.sqrt(lam) * b_g[:, None] + np.sqrt(1 - lam) * (r_u + w * (r_c - r_u))
    assert np.abs(in_turn - guided).max() > 0.05


def test_bf16_compute_runs_in_bf16():
    """Every convolution and matrix product of the forward pass takes bf16 operands (fp32
    parameters cast), so the MXU / tensor cores do the work in bf16."""
    from vfjax import config as vfc

    c = vfc.load_config("configs/default.py", "runlocal")
    c.model.dtype = "bfloat16"
    model = videofusion.build_model(c.model, 16, 1, rngs=nnx.Rngs(0))
    x = jnp.zeros((2, 4, 16, 16, 1), jnp.float32)
    diffusion = Diffusion.create("videofusion", 4)

    def loss(x):
        return model.loss(x, jax.random.key(0), diffusion)[0]

    jaxpr = jax.make_jaxpr(loss)(x)
    found = {"conv_general_dilated": 0, "dot_general": 0}

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in found:
                found[eqn.primitive.name] += 1
                dtypes = {str(v.aval.dtype) for v in eqn.invars}
                assert dtypes == {"bfloat16"}, (eqn.primitive.name, dtypes)
            for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
                walk(sub)
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", None)
                if inner is not None:
                    walk(getattr(inner, "jaxpr", inner))

    walk(jaxpr.jaxpr)
    assert found["conv_general_dilated"] > 10 and found["dot_general"] > 5, found


def _sample_clip(base_fn, residual_fn, lambdas, abar, **kw):
    """`sampling.sample` of `SHAPE` clips with key frame `K`, the tests' base and residual keys
    (1, 2) and DDPM-like steps (`eta = 1`); `kw` the rest (steps, known frames, ...)."""
    return sampling.sample(
        base_fn,
        residual_fn,
        SHAPE,
        jax.random.key(1),
        jax.random.key(2),
        lambdas,
        abar,
        K,
        eta=1.0,
        **kw,
    )


def test_known_frames_come_back_unchanged_and_steer_the_others():
    """Frames held as known (a long video's continuation) come out as they went in; the others
    are generated around them, and differ from a clip made without them."""
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    lambdas = decomposed.frame_lambdas(N, 0.5, K)
    values = jax.random.uniform(jax.random.key(8), SHAPE, minval=-1, maxval=1)
    mask = np.arange(N) <= K  # The frames up to the key frame are held.

    def base_fn(z, t, cond):
        return 0.5 * z

    def residual_fn(z, t, cond):
        # Each frame's estimate depends on its neighbours: held frames steer the others.
        return 0.3 * z + 0.2 * jnp.roll(z, 1, axis=1)

    def run(known):
        return _sample_clip(base_fn, residual_fn, lambdas, abar, num_steps=20, known=known)

    held = run((values, mask))
    np.testing.assert_allclose(held[:, mask], values[:, mask], atol=1e-5)
    free = run(None)
    assert np.abs(held[:, ~mask] - free[:, ~mask]).mean() > 1e-3


def test_reconstruction_guidance_conditions_on_the_held_values():
    """With the exact denoiser of videos whose frames are all one image (x ~ N(0, 0.04) per pixel,
    independent noise per frame), the free frames of a clip that holds some frames should come
    out as the held image. Replacement alone leaves them off by the noise its held latents carry;
    reconstruction guidance (Ho et al. 2022) brings them much closer; the held frames come back
    unchanged either way."""
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    var = 0.04

    def residual_fn(z, t, cond):
        # E[eps | z] for z_i = a x + s e_i, x ~ N(0, var): the posterior of the shared x.
        a = jnp.sqrt(abar[t]).reshape(-1, 1, 1, 1, 1)
        s = jnp.sqrt(1.0 - abar[t]).reshape(-1, 1, 1, 1, 1)
        mean = (a / s**2) * z.sum(axis=1, keepdims=True) / (1.0 / var + N * a**2 / s**2)
        return (z - a * mean) / s

    image = np.sqrt(var) * jax.random.normal(jax.random.key(3), (SHAPE[0], 1, *SHAPE[2:]))
    values = jnp.repeat(image, N, axis=1)
    mask = np.arange(N) <= K

    def free_frame_error(weight):
        out = _sample_clip(
            None,
            residual_fn,
            jnp.zeros((N,)),
            abar,
            num_steps=50,
            known=(values, mask),
            known_guidance=weight,
        )
        np.testing.assert_allclose(out[:, mask], values[:, mask], atol=1e-5)
        return float(np.abs(out[:, ~mask] - values[:, ~mask]).mean())

    replaced, guided = free_frame_error(0.0), free_frame_error(2.0)
    print(f"free frames' error: replacement {replaced:.4f}, guidance 2: {guided:.4f}")
    assert guided < 0.25 * replaced, (guided, replaced)


def test_held_frames_are_a_prefix_in_the_given_share_of_clips():
    """`decomposed.held_frames`: in about `rate` of the clips a prefix of 1 to N - 1 frames, every
    count drawn; no frame elsewhere; never the whole clip."""
    held = np.asarray(decomposed.held_frames(jax.random.key(0), 4000, N, 0.5))
    counts = held.sum(axis=1)
    np.testing.assert_array_equal(held, np.arange(N)[None] < counts[:, None])  # Prefixes.
    assert 0.47 < np.mean(counts > 0) < 0.53
    assert set(np.unique(counts[counts > 0])) == set(range(1, N))
    assert not np.asarray(decomposed.held_frames(jax.random.key(0), 64, N, 0.0)).any()


@pytest.mark.parametrize("vdm", [False, True])
def test_context_rate_shows_held_frames_clean_and_leaves_them_out_of_the_loss(vdm):
    """With `context_rate`, the residual generator gets the held frames' clean values and their
    flags, and what it answers there does not change the loss (the key frame's term, the base
    generator's, stays in it); the timesteps and noise of the other frames are those of a run
    without held frames."""
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    lambdas = (
        jnp.asarray(decomposed.independent_lambdas(N))
        if vdm
        else jnp.asarray(decomposed.frame_lambdas(N, 0.5, K))
    )
    x0 = jax.random.uniform(jax.random.key(3), SHAPE, minval=-1, maxval=1)
    base = None if vdm else (lambda z, t: 0.5 * z)
    seen = []

    def residual(garbage):
        def fn(z, t, held=None):
            seen.append((np.asarray(z), None if held is None else np.asarray(held)))
            out = 0.3 * z
            if held is not None:
                out = jnp.where(held[:, :, None, None, None], garbage, out)
            return out

        return fn

    def loss(fn, rate):
        return decomposed.videofusion_loss(
            base, fn, x0, jax.random.key(4), lambdas, abar, K, context_rate=rate
        )

    plain, _ = loss(residual(0.0), 0.0)
    assert seen[-1][1] is None  # No flags without held frames: the call is as before.
    with_held, terms = loss(residual(0.0), 0.9)
    zr, held = seen[-1]
    assert held.shape == SHAPE[:2] and held.any()
    np.testing.assert_array_equal(zr[held], np.asarray(x0)[held])  # Shown clean.
    assert np.all(np.abs(zr[~held] - np.asarray(x0)[~held]) > 0)  # The others are noisy.
    assert loss(residual(100.0), 0.9)[0] == pytest.approx(float(with_held), rel=1e-6)
    # Frames not held keep their noise and timesteps: with none held, the two losses agree.
    none_held, _ = decomposed.videofusion_loss(
        base, residual(0.0), x0, jax.random.key(4), lambdas, abar, K, context_rate=1e-9
    )
    assert not seen[-1][1].any()
    assert float(none_held) == pytest.approx(float(plain), rel=1e-6)
    if not vdm:
        assert float(terms["loss_key"]) > 0


def test_context_guidance_mixes_the_shown_and_unshown_estimates():
    """`context_guidance = w_c`: 1 is `show_known` as it was, 0 the estimate with the known
    frames not shown (their noisy latents, no flag: `show_known=False`'s clip), and in one
    unclipped step the clip moves linearly in `w_c` (`eps_n + w_c (eps_s - eps_n)`), both
    branches in one call of the residual generator; it needs shown known frames."""
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    lambdas = decomposed.frame_lambdas(N, 0.5, K)
    values = jax.random.uniform(jax.random.key(8), SHAPE, minval=-1, maxval=1)
    mask = np.arange(N) <= K
    batches = []

    def residual_fn(z, t, cond):
        batches.append(z.shape[0])
        flags = 0.0 if cond is None else cond["held"].astype(z.dtype)[..., None, None, None]
        return 0.3 * z + 0.2 * jnp.roll(z, 1, axis=1) + 0.1 * flags

    def run(num_steps=4, abar=abar, **kw):
        batches.clear()
        known = (values, mask)
        base_fn = lambda z, t, cond: 0.5 * z  # noqa: E731
        out = _sample_clip(
            base_fn, residual_fn, lambdas, abar, num_steps=num_steps, known=known, **kw
        )
        return np.asarray(out)[:, ~mask]

    shown, unshown = run(show_known=True), run(show_known=False)
    np.testing.assert_allclose(run(show_known=True, context_guidance=1.0), shown, atol=1e-6)
    np.testing.assert_allclose(run(show_known=True, context_guidance=0.0), unshown, atol=1e-5)
    assert np.abs(shown - unshown).mean() > 1e-3
    guided = run(show_known=True, context_guidance=3.0)
    assert batches == [2 * SHAPE[0]]  # Both branches in one call.
    assert np.abs(guided - shown).mean() > 1e-3
    # One step, at a noise level where the estimate of x0 stays near the start noise, whose
    # values mostly lie in [-1, 1], where the sampler's output is not clipped: compare there.
    one = {"num_steps": 1, "clip_x0": False, "show_known": True, "abar": jnp.full((1000,), 0.99)}
    by_w = {w: run(context_guidance=w, **one) for w in (0.0, 1.0, 3.0)}
    inside = np.all([np.abs(v) < 0.999 for v in by_w.values()], axis=0)
    assert inside.mean() > 0.3
    expected = by_w[0.0] + 3.0 * (by_w[1.0] - by_w[0.0])
    np.testing.assert_allclose(by_w[3.0][inside], expected[inside], atol=1e-4)
    with pytest.raises(ValueError, match="context_guidance needs known frames shown"):
        run(show_known=False, context_guidance=2.0)


def test_show_known_gives_the_residual_generator_the_held_values_and_flags():
    """`sampling.sample(show_known=True)`: at every step the residual generator's input holds
    the known frames' clean values and its condition their flags; the held frames still come out
    as they went in."""
    abar = jnp.asarray(schedules.make_schedule("linear", 1000))
    lambdas = decomposed.frame_lambdas(N, 0.5, K)
    values = jax.random.uniform(jax.random.key(8), SHAPE, minval=-1, maxval=1)
    mask = np.arange(N) <= K
    seen, inputs = [], []

    def residual_fn(z, t, cond):
        seen.append(cond)
        # What the held slots hold at each step (the sampler's scan traces this once).
        jax.debug.callback(lambda a: inputs.append(np.asarray(a)), z[:, mask])
        return 0.3 * z + 0.2 * jnp.roll(z, 1, axis=1)

    def run(show):
        seen.clear()
        inputs.clear()
        out = _sample_clip(
            lambda z, t, cond: 0.5 * z,
            residual_fn,
            lambdas,
            abar,
            num_steps=4,
            known=(values, mask),
            show_known=show,
        )
        return out, list(seen), list(inputs)

    shown, conds, steps = run(True)
    np.testing.assert_allclose(shown[:, mask], values[:, mask], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(conds[-1]["held"]), np.broadcast_to(mask, SHAPE[:2]))
    assert len(steps) == 4
    for held_input in steps:
        np.testing.assert_allclose(held_input, np.asarray(values[:, mask]), atol=1e-6)
    hidden, conds, steps = run(False)
    assert conds[-1] is None
    assert np.abs(steps[0] - np.asarray(values[:, mask])).mean() > 0.1  # Noisy latents.
    assert np.abs(np.asarray(shown[:, ~mask]) - np.asarray(hidden[:, ~mask])).mean() > 1e-3
