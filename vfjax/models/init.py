"""Creating a model's parameters: abstractly (shapes only), then concretely from one random draw.

Running a Flax module's initialisers under `jit` emits one random-number computation per
parameter, and XLA's CPU compiler takes minutes over the hundreds of them in a UNet. Here the
module is built abstractly with `nnx.eval_shape`, and every random parameter is a slice of
one normal draw scaled as its `init` metadata says (see `vfjax.models.layers`), so initialisation
compiles in about a second on any backend and can be jitted straight into its shardings.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array


class _OneKey:
    """Stands in for `nnx.Rngs` while a model is built abstractly: every draw is the same key.

    Under `nnx.eval_shape` each draw from an `nnx.Rngs` updates a traced counter, and flax checks
    that update in a way that costs time in proportion to everything traced so far: seconds for
    one UNet. The abstract values are shapes only (`init_params` makes the real ones), so one
    key serves every parameter.
    """

    def __init__(self):
        self._key = jax.random.key(0)

    def params(self) -> Array:
        return self._key

    def dropout(self) -> Array:
        return self._key


def abstract_model(build: Callable[[nnx.Rngs], nnx.Module]) -> tuple[nnx.GraphDef, nnx.State]:
    """The graph definition and the abstract `nnx.Param` state (shapes and metadata) of a model."""
    model = nnx.eval_shape(lambda: build(_OneKey()))
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, params


def _variables(state: nnx.State) -> tuple[list[nnx.Variable], jax.tree_util.PyTreeDef]:
    return jax.tree.flatten(state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def _std(kind: str, shape: tuple[int, ...]) -> float:
    if kind == "fan_in":
        return float(np.prod(shape[:-1])) ** -0.5
    if kind == "fan_out":
        return float(shape[-1]) ** -0.5
    raise ValueError(f"no random initialiser {kind!r}")


def init_params(abstract_params: nnx.State, rng: Array) -> dict:
    """Concrete parameters (a pure nested dict) for abstract `abstract_params`.

    Kernels get `N(0, 1/fan_in)`, embeddings `N(0, 1/dim)`, and the rest their constant; all
    random values come from a single draw of `rng`. Jit this with `out_shardings` to create the
    parameters already sharded.
    """
    variables, treedef = _variables(abstract_params)
    kinds = []
    for v in variables:
        kind = v.get_metadata().get("init")
        if kind not in ("fan_in", "fan_out", "zeros", "ones"):
            raise ValueError(f"parameter of shape {v.shape} has no known `init` metadata: {kind}")
        kinds.append(kind)
    random = [i for i, k in enumerate(kinds) if k in ("fan_in", "fan_out")]
    total = sum(int(np.prod(variables[i].shape)) for i in random)
    flat = jax.random.normal(rng, (max(total, 1),), jnp.float32)
    values, offset = [], 0
    for v, kind in zip(variables, kinds, strict=True):
        shape, dtype = v.shape, v.get_value().dtype
        if kind == "zeros":
            values.append(jnp.zeros(shape, dtype))
        elif kind == "ones":
            values.append(jnp.ones(shape, dtype))
        else:
            size = int(np.prod(shape))
            chunk = flat[offset : offset + size].reshape(shape) * _std(kind, shape)
            values.append(chunk.astype(dtype))
            offset += size
    return nnx.to_pure_dict(
        jax.tree.unflatten(treedef, [v.replace(x) for v, x in zip(variables, values, strict=True)])
    )


def create_model(build: Callable[[nnx.Rngs], nnx.Module], rng: Array) -> nnx.Module:
    """A concrete model on the default device, initialised by `init_params` under `jit`."""
    graphdef, abstract = abstract_model(build)
    params = jax.jit(lambda r: init_params(abstract, r))(rng)
    return nnx.merge(graphdef, params)
