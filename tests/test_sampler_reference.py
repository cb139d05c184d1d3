"""The sampler's values pinned against the DDIM/DDPM recursions written out in NumPy.

The networks are known, non-oracle functions of their inputs (so every step's update reaches the
output, unlike an oracle that returns the exact noise whatever it is given); the noises are drawn
with the sampler's own keys (`make_step`: the start noise from the keys, step `i`'s fresh noise
from the keys folded with `i + 1`). Each case runs several steps: a wrong coefficient anywhere in
the update, or guidance composed the wrong way round, changes the result.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vfjax.diffusion import decomposed, sampling, schedules

B, N, H, W, C = 2, 5, 3, 4, 1
K = N // 2
STEPS = 6


def _base(z, t, c):
    """A base generator: affine in its input, its timestep and the condition."""
    return 0.35 * z + 0.2 * np.cos(t / 97.0)[:, None, None, None] + 0.15 * c[:, None, None, None]


def _residual(z, t, c):
    """A residual generator that mixes frames (so the residual's frames depend on each other)."""
    mixed = 0.5 * z + 0.25 * np.roll(z, 1, axis=1)
    return (
        -0.3 * mixed
        + 0.1 * np.sin(t / 53.0)[:, None, None, None, None]
        - 0.1 * c[:, None, None, None, None]
    )


def _jax_nets():
    def base(z, t, c):
        tt = t.astype(jnp.float32)
        return (
            0.35 * z
            + 0.2 * jnp.cos(tt / 97.0)[:, None, None, None]
            + 0.15 * c[:, None, None, None].astype(jnp.float32)
        )

    def residual(z, t, c):
        tt = t.astype(jnp.float32)
        mixed = 0.5 * z + 0.25 * jnp.roll(z, 1, axis=1)
        return (
            -0.3 * mixed
            + 0.1 * jnp.sin(tt / 53.0)[:, None, None, None, None]
            - 0.1 * c[:, None, None, None, None].astype(jnp.float32)
        )

    return base, residual


def _noise(base_key, residual_key, frames, lam):
    base = np.asarray(jax.random.normal(base_key, (B, 1, H, W, C)), np.float64)
    residual = np.asarray(jax.random.normal(residual_key, (B, frames, H, W, C)), np.float64)
    lam = lam.reshape(1, -1, 1, 1, 1)
    return np.sqrt(lam) * base + np.sqrt(1 - lam) * residual


def _reference(
    abar,
    lam,
    keys,
    *,
    eta,
    clip,
    cond,
    null,
    scale,
    known=None,
    key_value=None,
    key_only=False,
):
    """The recursion, step by step, in float64 NumPy. `key_only`: the key frame alone (lam 1)."""
    base_key, residual_key = keys
    frames = 1 if key_only else N
    lam = np.ones(1) if key_only else lam
    ts = np.round(np.linspace(len(abar) - 1, 0, STEPS)).astype(int)
    nxt = list(ts[1:]) + [-1]
    z = _noise(base_key, residual_key, frames, lam)
    lam5 = lam.reshape(1, -1, 1, 1, 1)

    def eps_under(z, t, c):
        tt = np.full(B, t, np.float64)
        b_hat = _base(z[:, K if not key_only else 0], tt, c)[:, None]
        if key_only:
            return b_hat
        a = abar[t]
        zr = z - np.sqrt(lam5) * np.sqrt(1 - a) * b_hat
        if key_value is not None:
            zr[:, K] = key_value
        return np.sqrt(lam5) * b_hat + np.sqrt(1 - lam5) * _residual(zr, tt, c)

    for i, (t, s) in enumerate(zip(ts, nxt, strict=True)):
        a_t = abar[t]
        a_s = abar[s] if s >= 0 else 1.0
        eps = eps_under(z, t, cond)
        if scale != 1.0:
            eps_u = eps_under(z, t, null)
            eps = eps_u + scale * (eps - eps_u)
        x0 = (z - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        if clip:
            x0 = np.clip(x0, -1, 1)
        if known is not None:
            values, mask = known
            if key_only:
                values, mask = values[:, K : K + 1], mask[K : K + 1]
            x0 = np.where(mask.reshape(1, -1, 1, 1, 1), values, x0)
        if clip or known is not None:
            eps = (z - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
        sigma = eta * np.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        z = np.sqrt(a_s) * x0 + np.sqrt(max(1 - a_s - sigma**2, 0.0)) * eps
        if eta > 0:
            fresh = _noise(
                jax.random.fold_in(base_key, i + 1),
                jax.random.fold_in(residual_key, i + 1),
                frames,
                lam,
            )
            z = z + sigma * fresh
    return np.clip(z, -1, 1)


CASES = {
    "ddim": dict(eta=0.0, scale=1.0),
    "ddpm": dict(eta=1.0, scale=1.0),
    "ddim_guided": dict(eta=0.0, scale=2.5),
    "ddpm_guided": dict(eta=1.0, scale=2.5),
}


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("held", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_matches_the_numpy_recursion(case, held, clip):
    eta, scale = CASES[case]["eta"], CASES[case]["scale"]
    abar = schedules.make_schedule("linear", 1000)
    lam = decomposed.frame_lambdas(N, 0.5)
    keys = (jax.random.key(11), jax.random.key(12))
    cond, null = np.array([0.7, -0.4]), np.array([0.0, 0.0])
    known = None
    if held:
        values = np.asarray(jax.random.uniform(jax.random.key(3), (B, N, H, W, C)), np.float64)
        known = (2 * values - 1, np.array([True, False, False, False, True]))
    base, residual = _jax_nets()
    out = sampling.sample(
        base,
        residual,
        (B, N, H, W, C),
        *keys,
        jnp.asarray(lam),
        jnp.asarray(abar),
        K,
        num_steps=STEPS,
        eta=eta,
        clip_x0=clip,
        cond=jnp.asarray(cond, jnp.float32),
        null_cond=jnp.asarray(null, jnp.float32),
        guidance_scale=scale,
        known=None if known is None else tuple(jnp.asarray(x) for x in known),
    )
    expected = _reference(
        abar.astype(np.float64),
        lam,
        keys,
        eta=eta,
        clip=clip,
        cond=cond,
        null=null,
        scale=scale,
        known=known,
    )
    np.testing.assert_allclose(np.asarray(out), expected, atol=2e-4)
    # Not a vacuous match: the recursion moved the noise a long way.
    assert np.abs(expected - _noise(*keys, N, lam)).mean() > 0.1


@pytest.mark.parametrize("case", sorted(CASES))
def test_key_frame_drawn_first_matches_the_numpy_recursion(case):
    """`key_input='clean'`: the key frame drawn alone to its end, then shown finished to the
    residual generator at every step of the clip."""
    eta, scale = CASES[case]["eta"], CASES[case]["scale"]
    abar = schedules.make_schedule("linear", 1000).astype(np.float64)
    lam = decomposed.frame_lambdas(N, 0.5)
    keys = (jax.random.key(21), jax.random.key(22))
    cond, null = np.array([0.5, 0.9]), np.array([0.0, 0.0])
    common = dict(eta=eta, clip=True, cond=cond, null=null, scale=scale)
    key_frame = _reference(abar, lam, keys, key_only=True, **common)[:, 0]
    expected = _reference(abar, lam, keys, key_value=key_frame, **common)
    base, residual = _jax_nets()
    out = sampling.sample(
        base,
        residual,
        (B, N, H, W, C),
        *keys,
        jnp.asarray(lam),
        jnp.asarray(abar, jnp.float32),
        K,
        num_steps=STEPS,
        eta=eta,
        clip_x0=True,
        cond=jnp.asarray(cond, jnp.float32),
        null_cond=jnp.asarray(null, jnp.float32),
        guidance_scale=scale,
        key_input="clean",
    )
    np.testing.assert_allclose(np.asarray(out), expected, atol=2e-4)
    np.testing.assert_allclose(np.asarray(out)[:, K], key_frame, atol=2e-4)
