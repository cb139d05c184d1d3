"""Test setup, applied before JAX starts (and inherited by the subprocesses tests launch).

- 8 fake CPU devices, for the sharding tests.
- A persistent compilation cache: compiling a train step dominates these tests (XLA:CPU takes
  tens of seconds even for a tiny UNet), and the cache lets later tests (and the subprocesses
  they start) reuse a program compiled earlier. It does not change what is computed. (XLA's
  backend optimisation level 0 compiles faster but runs the multi-step tests slower: measured,
  the whole suite took longer with it.)
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "vfjax-test-jax-cache")
)

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(scope="session")
def class_run(tmp_path_factory) -> str:
    """The workdir of the tiny class-conditional config trained from scratch for 40 steps, shared
    by the conditioning and evaluation tests (one xdist group, so it is trained once)."""
    from tests.helpers import CLASS_FIELDS, tiny
    from vfjax import train

    workdir = str(tmp_path_factory.mktemp("class_run") / "run")
    train.train(tiny(total_steps=40, checkpoint_every_steps=40, **CLASS_FIELDS), workdir)
    return workdir


# Under pytest-xdist (`-n 2 --dist loadgroup`, see pyproject.toml), each module's tests run on
# one worker, in order, so module fixtures are built once; tests marked with a shared
# `xdist_group` (those sharing the `class_run` fixture) run on the same worker. The tests that
# launch 2 processes are all in one module, so no two such launches run at once: each of their
# steps waits on collectives between the processes, and 4 processes on 2 cores slowed them more
# than running them one after the other. The longest modules start first so that neither worker
# is left alone with one at the end.
_LONGEST_FIRST = (
    "test_train",
    "test_tpu",
    "test_multiprocess",
    "test_conditioning",
    "test_evaluate",
    "test_models",
)


# The slow tier: whole modules (they train, launch processes or compile for a TPU) and single
# tests of other modules that take over ~10 s here. `-m "not slow"` leaves them out (README).
_SLOW_MODULES = {
    "test_multiprocess",
    "test_tpu",
    "test_train",
    "test_conditioning",
    "test_evaluate",
    "test_bench",
    "test_bench_suite",
    "test_long_video",
    "test_convert",
    "test_study",
}
_SLOW_TESTS = {
    "test_learns_one_tiny_video",
    "test_frames_meet_only_in_the_temporal_layers",
    "test_stop_gradient_rule",
    "test_matches_an_independent_implementation_on_random_videos",
    "test_key_frame_drawn_first_is_not_moved_by_reconstruction_guidance",
    "test_real_clips_obey_the_law_and_their_shape_kind_is_found",
    "test_bf16_compute_runs_in_bf16",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in _SLOW_MODULES or item.originalname in _SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if not any(mark.name == "xdist_group" for mark in item.iter_markers()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))

    def rank(item):
        # `tests/` is not a package: pytest imports `tests/test_train.py` as `test_train`.
        name = item.module.__name__.rpartition(".")[2]
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)
