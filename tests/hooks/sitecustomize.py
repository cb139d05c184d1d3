"""Fault injection for processes that tests launch (never on the path of a real run).

A test puts this directory on PYTHONPATH and sets one of:
  VFJAX_TEST_KILL_IN_SAVE=STEP  every process SIGKILLs itself right after the checkpoint of STEP
                                has started (its files are being written in the background);
  VFJAX_TEST_FAIL_PROCESS=I     process I fails when it opens its data (FileNotFoundError), the
                                others carry on into their first collective.
The patch is applied when `vfjax.train` is imported, so other Python processes are untouched.
"""

import importlib.abc
import importlib.machinery
import os
import signal
import sys

_KILL_AT = os.environ.get("VFJAX_TEST_KILL_IN_SAVE")
_FAIL_PROCESS = os.environ.get("VFJAX_TEST_FAIL_PROCESS")


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


class _AfterImport(importlib.abc.MetaPathFinder):
    """Patches `vfjax.train` once it has been imported."""

    def find_spec(self, name, path, target=None):
        if name != "vfjax.train":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        loader.exec_module = exec_and_patch
        return spec


if _KILL_AT or _FAIL_PROCESS:
    sys.meta_path.insert(0, _AfterImport())
