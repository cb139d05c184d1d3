"""The train step and the sampler entry points of `vfjax/steps.py`, value by value.

The generators are stood in for by `Spy`, a model whose losses are closed-form functions of its
parameters and which records every call (`state.model_from` patched to build it): each test runs
in well under a second, with no network to compile, and sees exactly what the step hands the
model (the diffusion constants, keys, condition, frame weights, stop-gradient rule) and what it
makes of the model's answer (gradients, optimizer, EMA, metrics). The networks themselves are
tested in test_models.py, the process in test_diffusion.py and test_method.py, the whole loop in
test_train.py.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import DEFAULT
from vfjax import config as vfc
from vfjax import distributed, steps
from vfjax import sharding as sharding_lib
from vfjax import state as state_lib
from vfjax.data import pixels
from vfjax.diffusion import schedules
from vfjax.diffusion.process import Diffusion

B, N, R, C = 4, 8, 4, 1


class Calls(list):
    """The model's calls, `(method, args, kwargs)`; `setups`: the setup each model was built
    from."""

    setups: list


class Spy:
    """Stands in for the model: losses in closed form of the parameters (a gradient for each),
    every call recorded in `calls` as `(method, args, kwargs)`."""

    def __init__(self, params: dict, calls: list):
        self.params = params
        self.calls = calls

    def _part(self, net: str, x0, scale: float):
        # Depends on the input (its mean) and on every parameter of `net`.
        m = jnp.mean(x0)
        return scale * sum(jnp.sum((p - m) ** 2) for p in jax.tree.leaves(self.params[net]))

    def loss(self, *args, **kw):
        self.calls.append(("loss", args, kw))
        x0 = args[0]
        scales = (("base", 1.0), ("residual", 2.0))
        terms = {n: self._part(n, x0, s) for n, s in scales if n in self.params}
        return sum(terms.values()), {f"{k}_term": v for k, v in terms.items()}

    def image_loss(self, *args, **kw):
        self.calls.append(("image_loss", args, kw))
        value = self._part("base", args[0], 3.0)
        return value, {"image_term": value}

    def sample(self, shape, base_rng, residual_rng, diffusion, **kw):
        self.calls.append(("sample", (shape, base_rng, residual_rng, diffusion), kw))
        level = sum(jnp.mean(p) for p in jax.tree.leaves(self.params))  # Every parameter used.
        return jnp.zeros(shape) + level


@pytest.fixture
def calls(monkeypatch) -> list:
    """The calls the step makes to its model (a `Spy`)."""
    recorded = Calls()
    recorded.setups = []

    def model_from(setup, params):
        recorded.setups.append(setup)
        return Spy(params, recorded)

    monkeypatch.setattr(state_lib, "model_from", model_from)
    return recorded


def config_of(kind: str = "videofusion", **fields):
    """The default config at `B x N x R x R x C`, with `fields` (dotted names) on top."""
    c = vfc.load_config(DEFAULT)
    c.update_from_flattened_dict(
        {
            "model.kind": kind,
            "batch_size": B,
            "data.num_frames": N,
            "data.resolution": R,
            "data.channels": C,
            "optim.weight_decay": 0.01,
            "optim.warmup_steps": 2,
            "total_steps": 10,
            **fields,
        }
    )
    return c


def params_of(kind: str) -> dict:
    rng = np.random.default_rng(0)
    nets = {"videofusion": ("base", "residual"), "vdm": ("residual",), "image": ("base",)}[kind]
    return {
        net: {
            "w": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
        }
        for net in nets
    }


def state_of(config, step: int = 3):
    """A state a few steps into training (non-zero moments, an EMA apart from the parameters)."""
    tx = state_lib.make_optimizer(config.optim, config.total_steps)
    params = params_of(config.model.kind)
    opt_state = tx.init(params)
    for i in range(step):
        grads = jax.tree.map(lambda p, i=i: jnp.cos(p + i), params)
        _, opt_state = tx.update(grads, opt_state, params)
    ema = jax.tree.map(lambda p: p * 0.5 - 0.1, params)
    state = state_lib.TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        opt_state=opt_state,
        ema=ema,
        rng=jax.random.key_data(jax.random.key(7)),
    )
    return state, types.SimpleNamespace(tx=tx)


def batch_of(config, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    batch = {"video": rng.integers(0, 256, (B, N, R, R, C), dtype=np.uint8)}
    if config.data.cond == "class":
        batch["label"] = np.asarray([0, 3, 1, 2], np.int64)
    if config.data.cond == "text":
        batch["text_emb"] = rng.normal(size=(B, 5, 6)).astype(np.float32)
    return batch


def step_keys(state):
    """The step's (loss, condition, dropout) keys, as the step derives them."""
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    return jax.random.split(rng, 3)


def same_key(a, b) -> bool:
    return np.array_equal(jax.random.key_data(a), jax.random.key_data(b))


def assert_tree_close(a, b, **kw):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def assert_same_diffusion(got: Diffusion, want: Diffusion):
    np.testing.assert_array_equal(got.alphas_cumprod, want.alphas_cumprod)
    np.testing.assert_array_equal(got.lambdas, want.lambdas)
    assert (got.key_frame, got.key_input, got.prediction, got.min_snr_gamma) == (
        want.key_frame,
        want.key_input,
        want.prediction,
        want.min_snr_gamma,
    )


# --- diffusion_from_config -------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.3, (0.2, 0.4, 0.6, 0.8, 1.0, 0.7, 0.5, 0.3), [0.1] * 8])
def test_diffusion_from_config_passes_every_field(lam):
    c = config_of(
        **{
            "data.num_frames": 8,
            "diffusion.key_frame": 4,
            "diffusion.schedule": "cosine",
            "diffusion.num_timesteps": 37,
            "diffusion.key_input": "x0",
            "diffusion.prediction": "v",
            "diffusion.min_snr_gamma": 2.5,
            "diffusion.logsnr_shift": 1.5,
        }
    )
    c.diffusion.lam = lam
    got = steps.diffusion_from_config(c)
    want = Diffusion.create(
        "videofusion", 8, tuple(lam) if not isinstance(lam, float) else lam, 4, "cosine", 37,
        "x0", "v", 2.5, 1.5,
    )  # fmt: skip
    assert_same_diffusion(got, want)
    assert got.lambdas[4] == 1.0 and got.num_timesteps == 37
    np.testing.assert_array_equal(got.alphas_cumprod, schedules.make_schedule("cosine", 37, 1.5))


def test_diffusion_from_config_vdm_has_no_base():
    got = steps.diffusion_from_config(config_of("vdm"))
    np.testing.assert_array_equal(got.lambdas, np.zeros(N))


def test_diffusion_from_config_defaults_of_an_older_config():
    """A config saved before `key_input`, `prediction`, `min_snr_gamma` and `logsnr_shift`
    existed gets the paper's process: the latent key input, epsilon, the plain loss, no shift."""
    c = config_of()
    for field in ("key_input", "prediction", "min_snr_gamma", "logsnr_shift"):
        del c.diffusion[field]
    got = steps.diffusion_from_config(c)
    want = Diffusion.create("videofusion", N, c.diffusion.lam, None, "linear", 1000)
    assert_same_diffusion(got, want)
    assert (got.key_input, got.prediction, got.min_snr_gamma) == ("latent", "eps", 0.0)


# --- conditions ------------------------------------------------------------------------------


def test_make_cond_none_class_and_text():
    assert steps.make_cond(config_of(), batch_of(config_of())) is None
    c = config_of(**{"data.cond": "class"})
    cond = steps.make_cond(c, batch_of(c))
    assert set(cond) == {"label"} and cond["label"].dtype == jnp.int32
    np.testing.assert_array_equal(cond["label"], [0, 3, 1, 2])
    t = config_of(**{"data.cond": "text"})
    batch = batch_of(t)
    cond = steps.make_cond(t, batch)
    assert set(cond) == {"text"}
    np.testing.assert_array_equal(cond["text"], batch["text_emb"])


@pytest.mark.parametrize("kind", ["class", "text"])
def test_make_cond_drops_each_example_by_its_own_draw(kind):
    """Without a key, or at rate 0, nothing is dropped; at rate 1 everything; in between exactly
    the examples the key's Bernoulli draw picks, each whole (every position of a text)."""
    c = config_of(**{"data.cond": kind, "diffusion.cond_drop_rate": 0.5})
    batch = batch_of(c)
    full = steps.make_cond(c, batch)
    null = steps.null_cond(c, full)
    assert_tree_close(steps.make_cond(c, batch, None), full)
    (name,) = full
    for seed in range(4):
        key = jax.random.key(seed)
        drop = np.asarray(jax.random.bernoulli(key, 0.5, (B,)))
        got = np.asarray(steps.make_cond(c, batch, key)[name])
        for i in range(B):
            want = np.asarray(null[name] if drop[i] else full[name])[i]
            np.testing.assert_array_equal(got[i], want)
    c.diffusion.cond_drop_rate = 0.0
    assert_tree_close(steps.make_cond(c, batch, jax.random.key(0)), full)
    c.diffusion.cond_drop_rate = 1.0
    assert_tree_close(steps.make_cond(c, batch, jax.random.key(0)), null)


def test_null_cond_is_the_null_class_and_a_zero_text():
    c = config_of(**{"model.num_classes": 7})
    assert steps.null_cond(c, None) is None
    cond = {"label": jnp.asarray([1, 2], jnp.int32), "text": jnp.ones((2, 3, 4))}
    null = steps.null_cond(c, cond)
    assert set(null) == {"label", "text"}
    np.testing.assert_array_equal(null["label"], [7, 7])
    assert null["label"].dtype == jnp.int32
    np.testing.assert_array_equal(null["text"], np.zeros((2, 3, 4)))
    assert set(steps.null_cond(c, {"label": cond["label"]})) == {"label"}
    assert set(steps.null_cond(c, {"text": cond["text"]})) == {"text"}


# --- loss_frame_weights, phase_at ------------------------------------------------------------


def test_loss_frame_weights():
    assert steps.loss_frame_weights(config_of()) is None
    assert steps.loss_frame_weights(config_of("vdm", **{"diffusion.key_frame_weight": 0.3})) is None
    w = steps.loss_frame_weights(config_of(**{"diffusion.key_frame_weight": 0.3}))
    assert w.dtype == jnp.float32
    np.testing.assert_allclose(w, [0.1] * 4 + [0.3] + [0.1] * 3, rtol=1e-6)
    off_centre = config_of(**{"diffusion.key_frame_weight": 0.3, "diffusion.key_frame": 2})
    np.testing.assert_allclose(
        steps.loss_frame_weights(off_centre), [0.1] * 2 + [0.3] + [0.1] * 5, rtol=1e-6
    )
    one = config_of(**{"diffusion.key_frame_weight": 0.4, "data.num_frames": 2})
    np.testing.assert_allclose(steps.loss_frame_weights(one), [0.6, 0.4], rtol=1e-6)


def test_phase_at_counts_pretraining_steps_from_one():
    c = config_of(base_pretrain_steps=3)
    assert [steps.phase_at(c, s) for s in (1, 2, 3, 4, 5)] == ["base_pretrain"] * 3 + ["joint"] * 2
    c.base_pretrain_steps = 0
    assert steps.phase_at(c, 1) == "joint"


# --- train_step ------------------------------------------------------------------------------


def expected_step(config, state, setup, loss_fn, keep=(), zero=()):
    """The step written out: gradients of `loss_fn`, the optimizer (generators in `keep` keep
    their optimizer state, those in `zero` get no update), the EMA, the metrics' norm."""
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
    for net in keep:
        opt_state = state_lib.keep_optimizer(net, opt_state, state.opt_state)
    for net in zero:
        updates = {**updates, net: jax.tree.map(jnp.zeros_like, updates[net])}
    params = optax.apply_updates(state.params, updates)
    decay = min(config.optim.ema_decay, (1.0 + int(state.step)) / (10.0 + int(state.step)))
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema, params)
    return loss, params, opt_state, ema, optax.tree.norm(grads)


def check_step(config, state, setup, new, metrics, loss_fn, keep=(), zero=(), phase="joint"):
    loss, params, opt_state, ema, norm = expected_step(config, state, setup, loss_fn, keep, zero)
    assert int(new.step) == int(state.step) + 1
    assert_tree_close(new.params, params, rtol=1e-6, atol=1e-7)
    assert_tree_close(new.opt_state, opt_state, rtol=1e-6, atol=1e-7)
    assert_tree_close(new.ema, ema, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new.rng, state.rng)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-6)
    rates = state_lib.learning_rates(
        config.optim, config.total_steps, state.opt_state, state.params, phase
    )
    for name, value in rates.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-6)
    assert int(metrics["finite"]) == 1 and metrics["finite"].dtype == jnp.int32


def x0_of(batch):
    return pixels.to_model_input(batch["video"])


def spy_loss(params, x0, scales=(("base", 1.0), ("residual", 2.0))):
    spy = Spy(params, [])
    return sum(spy._part(n, x0, s) for n, s in scales if n in params), {}


def test_train_step_videofusion_hands_the_model_everything(calls):
    c = config_of(**{"diffusion.key_frame_weight": 0.25, "diffusion.base_stop_gradient": False})
    state, setup = state_of(c)
    batch = batch_of(c)
    new, metrics = steps.train_step(state, batch, setup=setup, config=c)

    (method, args, kw), *rest = calls
    assert method == "loss" and not kw and len(args) == 7
    assert not rest or all(m == "loss" for m, _, _ in rest)
    x0, rng, diffusion, cond, dropout, weights, stop = args
    np.testing.assert_array_equal(x0, x0_of(batch))
    assert np.asarray(x0).min() >= -1 and np.asarray(x0).max() <= 1
    loss_key, _, _ = step_keys(state)
    assert same_key(rng, loss_key)
    assert_same_diffusion(diffusion, steps.diffusion_from_config(c))
    assert cond is None and dropout is None
    np.testing.assert_array_equal(weights, steps.loss_frame_weights(c))
    assert stop is False

    check_step(c, state, setup, new, metrics, lambda p: spy_loss(p, x0_of(batch)))
    np.testing.assert_allclose(metrics["base_term"], spy_loss(
        {"base": state.params["base"]}, x0_of(batch))[0], rtol=1e-6)  # fmt: skip
    assert set(metrics) == {
        "loss", "base_term", "residual_term", "grad_norm", "lr", "lr_base", "lr_residual",
        "finite",
    }  # fmt: skip


def test_train_step_passes_the_stop_gradient_rule_and_the_condition(calls):
    c = config_of(**{"data.cond": "class", "diffusion.cond_drop_rate": 0.5})
    state, setup = state_of(c, step=5)
    batch = batch_of(c)
    steps.train_step(state, batch, setup=setup, config=c)
    _, args, _ = calls[0]
    assert args[6] is True and args[5] is None
    _, cond_key, _ = step_keys(state)
    assert_tree_close(args[3], steps.make_cond(c, {**batch, "video": x0_of(batch)}, cond_key))


def test_train_step_vdm_and_image_models(calls):
    for kind in ("vdm", "image"):
        # A frozen base in the baseline (which has none) changes nothing.
        c = config_of(kind, **{"optim.freeze_base": kind == "vdm", "data.cond": "class"})
        c.model.residual.dropout = 0.1
        state, setup = state_of(c)
        batch = batch_of(c)
        calls.clear()
        calls.setups.clear()
        new, metrics = steps.train_step(state, batch, setup=setup, config=c)
        (method, args, kw), *_ = calls
        assert method == "loss" and len(args) == 5 and not kw
        x0, rng, diffusion, cond, dropout = args
        np.testing.assert_array_equal(x0, x0_of(batch))
        loss_key, cond_key, dropout_key = step_keys(state)
        assert same_key(rng, loss_key) and same_key(dropout, dropout_key)
        assert_same_diffusion(diffusion, steps.diffusion_from_config(c))
        assert_tree_close(cond, steps.make_cond(c, batch, cond_key))
        assert calls.setups[0] is setup
        x0 = x0_of(batch)
        check_step(c, state, setup, new, metrics, lambda p, x0=x0: spy_loss(p, x0))
        if kind == "vdm":
            assert "lr_base" not in metrics


@pytest.mark.parametrize("net", ["base", "residual"])
def test_train_step_dropout_key_only_with_dropout(calls, net):
    c = config_of()
    state, setup = state_of(c)
    steps.train_step(state, batch_of(c), setup=setup, config=c)
    assert calls[-1][1][4] is None
    c.model[net].dropout = 0.1
    steps.train_step(state, batch_of(c), setup=setup, config=c)
    assert same_key(calls[-1][1][4], step_keys(state)[2])


def test_train_step_frozen_base_moves_only_the_residual_generator(calls):
    c = config_of(**{"optim.freeze_base": True})
    state, setup = state_of(c)
    batch = batch_of(c)
    new, metrics = steps.train_step(state, batch, setup=setup, config=c)
    assert_tree_close(new.params["base"], state.params["base"], rtol=0, atol=0)

    # The base generator's gradient is stopped: the norm is the residual generator's alone.
    def loss_fn(p):
        return spy_loss({**p, "base": jax.lax.stop_gradient(p["base"])}, x0_of(batch))

    check_step(c, state, setup, new, metrics, loss_fn, ("base",), ("base",))
    assert float(metrics["lr_base"]) == 0.0


def test_train_step_base_pretraining(calls):
    """The image loss of the base generator on every frame; the residual generator's optimizer
    state stays as it was (it joins later with its own warm-up)."""
    for freeze, cond_kind in ((False, "none"), (True, "class")):
        c = config_of(**{"optim.freeze_base": freeze, "data.cond": cond_kind})
        c.model.base.dropout = 0.1 if freeze else 0.0
        state, setup = state_of(c)
        batch = batch_of(c)
        calls.clear()
        calls.setups.clear()
        new, metrics = steps.train_step(state, batch, setup=setup, config=c, phase="base_pretrain")
        ((method, args, kw),) = calls
        assert method == "image_loss" and len(args) == 5 and not kw
        assert calls.setups == [setup]
        x0, rng, diffusion, cond, dropout = args
        np.testing.assert_array_equal(x0, x0_of(batch))
        loss_key, cond_key, dropout_key = step_keys(state)
        assert same_key(rng, loss_key)
        assert_same_diffusion(diffusion, steps.diffusion_from_config(c))
        if freeze:
            assert_tree_close(cond, steps.make_cond(c, batch, cond_key))
            assert same_key(dropout, dropout_key)
        else:
            assert cond is None and dropout is None

        def loss_fn(p, x0=x0):
            return Spy(p, []).image_loss(x0)

        # A frozen base still learns in its pretraining; the residual generator does not move,
        # whatever its optimizer holds.
        check_step(
            c, state, setup, new, metrics, loss_fn, ("residual",), ("residual",), "base_pretrain"
        )
        assert_tree_close(new.params["residual"], state.params["residual"], rtol=0, atol=0)
        assert "image_term" in metrics
        assert not np.allclose(new.params["base"]["w"], state.params["base"]["w"])


def test_train_step_adds_the_base_image_loss_on_every_frame(calls):
    """`diffusion.base_image_weight`: the joint loss plus that weight times the base generator's
    image loss on every frame of the batch, drawn with its own key; both generators move."""
    c = config_of(**{"diffusion.base_image_weight": 0.5, "data.cond": "class"})
    state, setup = state_of(c)
    batch = batch_of(c)
    new, metrics = steps.train_step(state, batch, setup=setup, config=c)
    (m1, args1, _), (m2, args2, kw2) = calls
    assert (m1, m2) == ("loss", "image_loss") and not kw2 and len(args2) == 5
    x0, rng, diffusion, cond, dropout = args2
    np.testing.assert_array_equal(x0, x0_of(batch))
    loss_key, cond_key, _ = step_keys(state)
    assert same_key(args1[1], loss_key) and same_key(rng, jax.random.fold_in(loss_key, 1))
    assert not same_key(rng, loss_key)
    assert_same_diffusion(diffusion, steps.diffusion_from_config(c))
    assert_tree_close(cond, args1[3])
    assert dropout is None

    def loss_fn(p, x0=x0):
        joint, _ = spy_loss(p, x0)
        return joint + 0.5 * Spy(p, []).image_loss(x0)[0], {}

    check_step(c, state, setup, new, metrics, loss_fn)
    np.testing.assert_allclose(
        metrics["loss_base_image"], Spy(state.params, []).image_loss(x0)[0], rtol=1e-6
    )
    # Off (the default): the joint loss alone, no image loss called.
    c.diffusion.base_image_weight = 0.0
    calls.clear()
    _, metrics = steps.train_step(state, batch, setup=setup, config=c)
    assert [m for m, _, _ in calls] == ["loss"] and "loss_base_image" not in metrics


@pytest.mark.parametrize("bad", ["loss", "grads"])
def test_train_step_reports_a_non_finite_step(calls, monkeypatch, bad):
    c = config_of()
    state, setup = state_of(c)
    if bad == "loss":
        monkeypatch.setattr(Spy, "loss", lambda self, *a: (jnp.asarray(jnp.nan), {}))
    else:  # A finite loss (0) with a gradient that is not: sqrt at 0.

        def loss(self, *args):
            return jnp.sqrt(jnp.abs(self.params["base"]["w"][0, 0] * 0)), {}

        monkeypatch.setattr(Spy, "loss", loss)
    _, metrics = steps.train_step(state, batch_of(c), setup=setup, config=c)
    assert int(metrics["finite"]) == 0


# --- compile_train_step ----------------------------------------------------------------------


def split_rows(mesh):
    """A sharding per leaf: the `[2, 3]` matrices (and their moments) split over `data`, the
    rest replicated, so that a program that lost its shardings shows it."""

    def sharding(leaf):
        rows = np.ndim(leaf) == 2 and np.shape(leaf)[0] == 2
        spec = jax.sharding.PartitionSpec("data") if rows else jax.sharding.PartitionSpec()
        return jax.sharding.NamedSharding(mesh, spec)

    return sharding


def spy_setup(config, mesh):
    state, setup = state_of(config)
    shardings = jax.tree.map(split_rows(mesh), state)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings
    )
    return state, types.SimpleNamespace(
        tx=setup.tx, mesh=mesh, shardings=shardings, abstract_state=abstract
    )


def mesh_of(data: int = 2, fsdp: int = 2):
    devices = np.asarray(jax.devices()[: data * fsdp]).reshape(data, fsdp)
    return jax.sharding.Mesh(devices, ("data", "fsdp"))


def test_compile_train_step_reuses_a_program_only_for_the_same_one(calls, monkeypatch):
    monkeypatch.setattr(steps, "_COMPILED", {})
    c = config_of()
    mesh = mesh_of()
    state, setup = spy_setup(c, mesh)
    batch = batch_of(c)
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    names = []
    monkeypatch.setattr(distributed, "barrier", names.append)
    step = steps.compile_train_step(setup, c, spec)
    assert names == ["compiled train step joint"]
    assert steps.compile_train_step(setup, c, spec, "joint") is step
    assert steps.compile_train_step(setup, c.copy_and_resolve_references(), spec) is step
    pretrain = steps.compile_train_step(setup, c, spec, "base_pretrain")
    assert pretrain is not step and names[-1] == "compiled train step base_pretrain"
    assert steps.compile_train_step(setup, c, spec, "base_pretrain") is pretrain
    assert len(names) == 2  # Programs found in the cache are not compiled again.

    # The shardings of the run: the state's own, the batch split over the mesh, metrics
    # replicated; the state donated.
    state_in, batch_in = step.input_shardings[0]
    assert_same_shardings(state_in, setup.shardings)
    assert batch_in["video"].is_equivalent_to(sharding_lib.batch_sharding(mesh), 5)
    state = jax.device_put(state, setup.shardings)
    new, metrics = step(state, batch)
    assert state.params["base"]["w"].is_deleted() and state.ema["residual"]["w"].is_deleted()
    assert int(new.step) == 4 and int(metrics["finite"]) == 1
    assert_same_shardings(jax.tree.map(lambda a: a.sharding, new), setup.shardings)
    for value in metrics.values():
        assert value.sharding.is_equivalent_to(sharding_lib.replicated(mesh), 0)

    others = {
        "phase": (c, spec, "base_pretrain"),
        "model": (config_of(**{"model.residual.channels": 8}), spec, "joint"),
        "diffusion": (config_of(**{"diffusion.lam": 0.25}), spec, "joint"),
        "optim": (config_of(**{"optim.lr": 1e-4}), spec, "joint"),
        "cond": (config_of(**{"data.cond": "class"}), {**spec, "label": jax.ShapeDtypeStruct(
            (B,), jnp.int32)}, "joint"),
        "frames": (config_of(**{"data.num_frames": 4}), spec, "joint"),
        "resolution": (config_of(**{"data.resolution": 8}), spec, "joint"),
        "channels": (config_of(**{"data.channels": 3}), spec, "joint"),
        "cosine length": (config_of(total_steps=20), spec, "joint"),
        "batch dtype": (c, {"video": jax.ShapeDtypeStruct(spec["video"].shape, jnp.float32)},
                        "joint"),
        "batch shape": (c, {"video": jax.ShapeDtypeStruct((8, N, R, R, C), jnp.uint8)}, "joint"),
    }  # fmt: skip
    keys = {steps._program_key(c, mesh, spec, "joint")}
    for name, (config, batch_spec, phase) in others.items():
        key = steps._program_key(config, mesh, batch_spec, phase)
        assert key not in keys, name
        keys.add(key)
    # The mesh: its shape and its devices.
    assert steps._program_key(c, mesh_of(4, 1), spec, "joint") not in keys
    devices = np.asarray(jax.devices()[4:8]).reshape(2, 2)
    other_devices = jax.sharding.Mesh(devices, ("data", "fsdp"))
    assert steps._program_key(c, other_devices, spec, "joint") not in keys
    # What does not shape the program: a constant schedule's run length, the data set's name.
    const = config_of(**{"optim.schedule": "constant"})
    key = steps._program_key(const, mesh, spec, "joint")
    const.total_steps = 99
    const.data.name = "ucf101"
    assert steps._program_key(const, mesh, spec, "joint") == key


def assert_same_shardings(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.is_equivalent_to(w, 2), (g, w)


def test_compiled_base_pretraining_step(calls, monkeypatch):
    monkeypatch.setattr(steps, "_COMPILED", {})
    c = config_of()
    state, setup = spy_setup(c, mesh_of())
    batch = batch_of(c)
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    step = steps.compile_train_step(setup, c, spec, phase="base_pretrain")
    residual = np.asarray(state.params["residual"]["w"])
    new, metrics = step(state, batch)
    assert "image_term" in metrics
    np.testing.assert_array_equal(new.params["residual"]["w"], residual)


# --- sample_videos, make_sampler -------------------------------------------------------------


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("with_known", [False, True])
def test_sample_videos_hands_the_model_the_sampling_config(calls, conditional, with_known):
    c = config_of(**{
        "data.cond": "class" if conditional else "none",
        "model.num_classes": 5,
        "sampling.num_steps": 13,
        "sampling.eta": 0.25,
        "sampling.clip_x0": False,
        "sampling.guidance_scale": 2,
        "sampling.long_guidance": 3,
        "sampling.long_context_guidance": 1.5,
    })  # fmt: skip
    params = params_of("videofusion")
    cond = {"label": jnp.asarray([1, 2, 0], jnp.int32)} if conditional else None
    known = (jnp.ones((3, N, R, R, C)), jnp.asarray([True] + [False] * (N - 1)))
    clips = {"num_clips": 2} if with_known else {}  # One clip unless told.
    out = steps.sample_videos(
        params, jax.random.key(1), jax.random.key(2), cond, known if with_known else None,
        setup=None, config=c, num_videos=3, **clips,
    )  # fmt: skip
    ((method, (shape, base_rng, residual_rng, diffusion), kw),) = calls
    assert calls.setups == [None]
    assert method == "sample" and shape == (3, N, R, R, C)
    assert same_key(base_rng, jax.random.key(1)) and same_key(residual_rng, jax.random.key(2))
    assert_same_diffusion(diffusion, steps.diffusion_from_config(c))
    assert kw.pop("num_steps") == 13 and kw.pop("eta") == 0.25 and kw.pop("clip_x0") is False
    assert kw.pop("num_clips") == (2 if with_known else 1)
    guidance = kw.pop("guidance_scale")
    assert guidance == (2.0 if conditional else 1.0) and type(guidance) is float
    assert_tree_close(kw.pop("cond"), cond)
    assert_tree_close(kw.pop("null_cond"), steps.null_cond(c, cond))
    got_known = kw.pop("known")
    if with_known:
        assert got_known is known
    else:
        assert got_known is None
    known_guidance = kw.pop("known_guidance")
    assert known_guidance == (3.0 if with_known else 0.0) and type(known_guidance) is float
    # A model trained with held frames (the default's) is shown its held frames clean.
    assert steps.shows_held(c)
    assert kw.pop("show_known", False) is with_known
    context = kw.pop("context_guidance", None)
    assert context == (1.5 if with_known else None)
    assert not kw
    level = sum(np.mean(p) for p in jax.tree.leaves(params))
    np.testing.assert_allclose(out, level + np.zeros(shape), rtol=1e-6)


def test_make_sampler_splits_the_videos_when_the_batch_divides(calls):
    c = config_of()
    mesh = mesh_of(2, 2)
    params = params_of("videofusion")
    replicated = sharding_lib.replicated(mesh)
    ema_shardings = jax.tree.map(split_rows(mesh), params)
    setup = types.SimpleNamespace(mesh=mesh, shardings=types.SimpleNamespace(ema=ema_shardings))
    for batch, sharding in ((8, sharding_lib.batch_sharding(mesh)), (6, replicated)):
        calls.clear()
        calls.setups.clear()
        sampler = steps.make_sampler(c, setup, batch, num_clips=3)
        args = (params, jax.random.key(1), jax.random.key(2), None, None)
        videos = sampler(*args)
        assert videos.shape == (batch, N, R, R, C)
        assert videos.sharding == sharding
        assert calls[0][1][0] == (batch, N, R, R, C) and calls[0][2]["num_clips"] == 3
        assert calls.setups[0] is setup
        assert sampler.name == f"sampler {batch}x3"
        # The EMA arrives in the run's shardings (uncommitted host arrays are placed so).
        ema_in = sampler.lower(*args).compile().input_shardings[0][0]
        assert_same_shardings(ema_in, ema_shardings)
    assert steps.make_sampler(c, setup, 4).name == "sampler 4x1"
