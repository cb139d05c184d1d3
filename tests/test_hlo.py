"""`vfjax.bench.hlo`: the bytes of a compiled program split by kind of operation and by source."""

import jax
import jax.numpy as jnp
import numpy as np

from vfjax.bench import hlo


def _norm(x):
    return (x - x.mean((1, 2), keepdims=True)) * jax.lax.rsqrt(x.var((1, 2), keepdims=True) + 1e-6)


def _loss(x, w):
    dims = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(
        jax.nn.silu(_norm(x)), w, (1, 1), "SAME", dimension_numbers=dims
    )
    return jnp.sum(y**2)


def test_bytes_by_kind_and_source_add_up_to_xlas_total():
    x = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 4, 4), jnp.float32)
    compiled = jax.jit(jax.grad(_loss)).lower(x, w).compile()
    ops = hlo.operations(compiled.as_text(), package="tests")
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # On the CPU, XLA's total is the same sum: each top-level operation's operands and result.
    assert sum(op["bytes"] for op in ops) == cost["bytes accessed"]
    kinds = dict(hlo.bytes_by(ops, "kind"))
    assert kinds["convolution"] > 0 and kinds["reduction"] > 0
    assert np.isclose(sum(kinds.values()), 1.0)
    sources = dict(hlo.bytes_by(ops, "source"))
    assert sources["tests/test_hlo.py:_norm"] > 0.2  # The normalisation's passes over x.
    assert "tests/test_hlo.py:_loss" in sources
    assert hlo.shape_bytes("(f32[2,3]{1,0}, bf16[4]{0})") == 2 * 3 * 4 + 4 * 2
    top = hlo.bytes_by(ops, "source", top=1)
    assert len(top) == 2 and top[1][0] == "other"
