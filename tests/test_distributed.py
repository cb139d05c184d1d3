"""vfjax.distributed in one process: programs compiled ahead of time for each call signature.
(Several processes: test_multiprocess.py.)"""

import os
import subprocess
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tests.helpers import ROOT
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


def _split_in_a_fresh_process(env: dict, code: str) -> list[str]:
    script = (
        "import os, jax\n"
        "from vfjax import distributed\n"
        f"{code}\n"
        "print(len(jax.devices()), os.environ.get('XLA_FLAGS', ''))\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, "JAX_PLATFORMS": "cpu", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split("\n")


def test_split_cpu_makes_devices_of_one_thread_each_unless_the_count_is_set():
    """`cpu_devices`: the host split into devices with XLA's intra-op threads off; a count set by
    the launchers (JAX_NUM_CPU_DEVICES) or in XLA_FLAGS wins, and a running backend is left."""
    split = _split_in_a_fresh_process({}, "print(distributed.split_cpu(2))")
    assert split[0] == "True" and split[1] == "2 --xla_cpu_multi_thread_eigen=false"
    launcher = _split_in_a_fresh_process(
        {"JAX_NUM_CPU_DEVICES": "3"},
        "jax.config.update('jax_num_cpu_devices', 3)\nprint(distributed.split_cpu(2))",
    )
    assert launcher[0] == "False" and launcher[1] == "3 "
    started = _split_in_a_fresh_process({}, "jax.devices()\nprint(distributed.split_cpu(2))")
    assert started[0] == "False" and started[1] == "1 "
    assert _split_in_a_fresh_process({}, "print(distributed.split_cpu(0))")[:2] == ["False", "1 "]
