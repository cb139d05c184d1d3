"""The training state and its optimizer, created directly in its shardings.

`TrainState` is a plain pytree (parameters as nested dicts) so Orbax saves it as is and
restores it into any mesh. Parameters are split by generator: `params['base']` and
`params['residual']` (either may be absent: the VDM baseline has no base generator, the image
model no residual generator).
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vfjax import sharding as sharding_lib
from vfjax.models import init as init_lib
from vfjax.models import videofusion

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    step: Array  # int32 []
    params: dict  # {'base': ..., 'residual': ...}
    opt_state: optax.OptState
    ema: dict  # Exponential moving average of `params`.
    rng: Array  # uint32 key data of the run's root key; step keys are folded from it.


def lr_schedule(optim, total_steps: int) -> optax.Schedule:
    """Linear warm-up to `optim.lr`, then constant or cosine decay to 0 at `total_steps`."""
    warmup = max(int(optim.warmup_steps), 0)
    if optim.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, optim.lr, max(warmup, 1), max(total_steps, warmup + 1), end_value=0.0
        )
    return optax.warmup_constant_schedule(0.0, optim.lr, max(warmup, 1))


def make_optimizer(optim, total_steps: int) -> optax.GradientTransformation:
    """AdamW with global-norm clipping and a learning-rate multiplier per generator.

    Weight decay skips vectors (biases, norms). A frozen base generator (`optim.freeze_base`) is
    the train step's business: it gets zero updates in the joint phase, after any base
    pretraining (`steps.train_step`).
    """
    schedule = lr_schedule(optim, total_steps)

    def adamw(mult: float) -> optax.GradientTransformation:
        return optax.adamw(
            lambda step: schedule(step) * mult,
            b1=optim.b1,
            b2=optim.b2,
            eps=optim.eps,
            weight_decay=optim.weight_decay,
            mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
        )

    def labels(params):
        return {net: jax.tree.map(lambda _, n=net: n, tree) for net, tree in params.items()}

    per_net = optax.multi_transform(
        {"base": adamw(optim.base_lr_mult), "residual": adamw(optim.residual_lr_mult)}, labels
    )
    if optim.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(optim.grad_clip), per_net)
    return per_net


def learning_rates(
    optim, total_steps: int, opt_state, nets, phase: str = "joint"
) -> dict[str, Array]:
    """The learning rate each generator's optimizer applies at its next update, as metrics:
    `lr_base` and `lr_residual` for the generators in `nets`, and `lr`, the residual generator's
    (the base generator's in the image model, which has no other).

    Each is the schedule at that optimizer's own step count times the generator's multiplier,
    0 for a base generator frozen in this phase (the joint one). A residual generator that sits
    out base pretraining keeps its count at 0, where the warm-up starts from 0: it learns nothing
    until it joins, and then warms up from the start.
    """
    schedule = lr_schedule(optim, total_steps)
    per_net = optax.tree_utils.tree_get(opt_state, "inner_states")
    rates = {}
    for net in nets:
        if net == "base" and optim.freeze_base and phase == "joint":
            rates["lr_base"] = jnp.zeros((), jnp.float32)
            continue
        count = optax.tree_utils.tree_get(per_net[net], "ScaleByScheduleState").count
        rates[f"lr_{net}"] = schedule(count) * optim[f"{net}_lr_mult"]
    rates["lr"] = rates["lr_residual" if "lr_residual" in rates else "lr_base"]
    return rates


def keep_optimizer(net: str, new_opt_state, old_opt_state):
    """`new_opt_state` with every leaf of generator `net`'s optimizer (those under a `net` key:
    its transform's moments and step count) taken from `old_opt_state`: a generator that sits
    out a step keeps its optimizer as it was."""

    def pick(path, new, old):
        keys = {getattr(k, "key", None) for k in path}
        return old if net in keys else new

    return jax.tree_util.tree_map_with_path(pick, new_opt_state, old_opt_state)


def ema_update(ema: dict, params: dict, step: Array, decay: float) -> dict:
    """EMA with the usual warm-up `min(decay, (1 + step) / (10 + step))`."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return optax.incremental_update(params, ema, 1.0 - d)


@dataclasses.dataclass
class Setup:
    """Everything static about a run's model and state: built once, before compiling."""

    graphdef: nnx.GraphDef
    abstract_params: nnx.State  # nnx.Param variables with shapes and metadata.
    tx: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    shardings: TrainState  # NamedSharding per leaf.
    abstract_state: TrainState  # ShapeDtypeStruct per leaf, with its sharding.


def build_setup(config, mesh: jax.sharding.Mesh) -> Setup:
    """Abstract model, optimizer and the shardings of every state leaf (no arrays allocated)."""

    def build(rngs):
        return videofusion.build_model(
            config.model, config.data.resolution, config.data.channels, rngs=rngs
        )

    graphdef, abstract_params = init_lib.abstract_model(build)
    tx = make_optimizer(config.optim, config.total_steps)

    def create(rng):
        return _create_state(abstract_params, tx, rng)

    abstract = jax.eval_shape(create, jax.random.key(0))
    params = sharding_lib.param_shardings(abstract_params, mesh)
    replicated = sharding_lib.replicated(mesh)
    shardings = TrainState(
        step=replicated,
        params=params,
        # The optimizer's moments are split like the parameters they follow; its counters are
        # replicated.
        opt_state=sharding_lib.like_params(abstract.opt_state, abstract.params, params, mesh),
        ema=params,
        rng=replicated,
    )
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return Setup(graphdef, abstract_params, tx, mesh, shardings, abstract)


def _create_state(abstract_params, tx, rng) -> TrainState:
    params = init_lib.init_params(abstract_params, jax.random.fold_in(rng, 0))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema=jax.tree.map(jnp.copy, params),
        rng=jax.random.key_data(rng),
    )


def create_state(setup: Setup, seed: int) -> TrainState:
    """A fresh state, created already sharded: each device computes only its own shards."""
    create = jax.jit(
        lambda rng: _create_state(setup.abstract_params, setup.tx, rng),
        out_shardings=setup.shardings,
    )
    return create(jax.random.key(seed))


def model_from(setup: Setup, params: dict) -> nnx.Module:
    """The model holding `params` (inside jit: a traced view, no copies)."""
    return nnx.merge(setup.graphdef, params)
