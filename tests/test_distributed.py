"""vfjax.distributed in one process: programs compiled ahead of time for each call signature.
(Several processes: test_multiprocess.py.)"""

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vfjax import distributed


def test_aligned_jit_compiles_again_for_other_input_shardings():
    """Arrays of the same shapes committed to other shardings (replicated, split either way), or
    of another weak type, each get their own program, as `jax.jit` gives them, with the same
    values; uncommitted and NumPy arrays share one, as in jit."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    x = np.arange(64, dtype=np.float32).reshape(8, 8)
    calls = jax.jit(lambda a, s: {"out": a * 2 + s})
    aligned = distributed.AlignedJit(calls, "test")
    expected = x * 2 + 1
    for a in [
        jax.device_put(x, NamedSharding(mesh, P())),
        jax.device_put(x, NamedSharding(mesh, P("data"))),
        jax.device_put(x, NamedSharding(mesh, P(None, "data"))),
        jax.numpy.asarray(x),
        x,
    ]:
        for s in (1.0, np.float32(1.0)):
            out = aligned(a, s)["out"]
            np.testing.assert_array_equal(np.asarray(out), expected)
            assert out.dtype == calls(a, s)["out"].dtype
    assert len(aligned._compiled) == 8
    # The same signature again (another scalar value) reuses its program.
    out = aligned(jax.device_put(x, NamedSharding(mesh, P("data"))), 2.0)["out"]
    np.testing.assert_array_equal(np.asarray(out), x * 2 + 2)
    assert len(aligned._compiled) == 8
