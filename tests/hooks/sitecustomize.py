"""Fault injection for processes that tests launch (never on the path of a real run).

A test puts this directory on PYTHONPATH and sets one of:
  VFJAX_TEST_KILL_IN_SAVE=STEP  every process SIGKILLs itself right after the checkpoint of STEP
                                has started (its files are being written in the background);
  VFJAX_TEST_FAIL_PROCESS=I     process I fails when it opens its data (FileNotFoundError), the
                                others carry on into their first collective.
The patch is applied when `vfjax.train` is imported, so other Python processes are untouched.

`tests.helpers.launch` always puts it there with VFJAX_TEST_SHARED_CACHE_KEY=1, a test-time
speed-up only: on CPU, JAX's persistent compilation cache key includes a topology fingerprint
that differs between the processes of one multi-process run (measured: process 0 and 1 of a
2-process run on this machine get different fingerprints for the same 8 devices), so process 1
of every launch compiled the program again (tens of seconds) although process 0 found it in the
cache. The fingerprint is replaced by the devices' kinds (what JAX itself hashes when it has no
topology); the program, its compile options and device assignment stay in the key. JAX loads one
process's executable on the others itself under `jax_share_binary_between_hosts`. If this JAX
has no such function, nothing is patched and the tests just compile more.
"""

import importlib.abc
import importlib.machinery
import os
import signal
import sys

_KILL_AT = os.environ.get("VFJAX_TEST_KILL_IN_SAVE")
_FAIL_PROCESS = os.environ.get("VFJAX_TEST_FAIL_PROCESS")
_SHARED_CACHE_KEY = os.environ.get("VFJAX_TEST_SHARED_CACHE_KEY") == "1"


def _patch(train) -> None:
    if _KILL_AT:
        save = train.checkpointing.Checkpointer.save

        def save_then_die(self, step, *args, **kwargs):
            started = save(self, step, *args, **kwargs)
            if started and step == int(_KILL_AT):
                os.kill(os.getpid(), signal.SIGKILL)
            return started

        train.checkpointing.Checkpointer.save = save_then_die
    if _FAIL_PROCESS:
        create_loader = train.data_lib.create_loader

        def failing_loader(*args, **kwargs):
            if kwargs.get("process_index") == int(_FAIL_PROCESS):
                raise FileNotFoundError("test: this process cannot open its data")
            return create_loader(*args, **kwargs)

        train.data_lib.create_loader = failing_loader


def _patch_cache_key(cache_key) -> None:
    hash_devices = getattr(cache_key, "_hash_devices", None)
    if hash_devices is not None and hasattr(cache_key, "_hash_accelerator_config"):
        cache_key._hash_accelerator_config = hash_devices  # Same signature: (hash_obj, devices).


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `patch(module)` once the module `name` has been imported."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            self.patch(module)

        loader.exec_module = exec_and_patch
        return spec


if _KILL_AT or _FAIL_PROCESS:
    sys.meta_path.insert(0, _AfterImport("vfjax.train", _patch))
if _SHARED_CACHE_KEY:
    sys.meta_path.insert(0, _AfterImport("jax._src.cache_key", _patch_cache_key))
