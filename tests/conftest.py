"""Test setup, applied before JAX starts (and inherited by the subprocesses tests launch).

- 8 fake CPU devices, for the sharding tests.
- XLA:CPU at backend optimisation level 0 and a persistent compilation cache: compiling a train
  step dominates these tests (XLA:CPU takes tens of seconds even for a tiny UNet), level 0 halves
  that, and the cache lets later tests (and subprocesses) reuse a program compiled earlier.
  Neither changes what is computed.
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "vfjax-test-jax-cache")
)

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
