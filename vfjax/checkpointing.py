"""The one wrapper around Orbax for a run's own checkpoints: periodic asynchronous saves,
keep-last-N, preemption, resuming from the newest checkpoint that restores. (Other runs' weights:
`vfjax.base_checkpoint`.)

A checkpoint holds two items: `state` (the `TrainState`, every array saved shard by shard by the
process that owns it) and `data` (the input pipeline's position, JSON). Restoring takes the
abstract state of the current run, with its shardings, so a checkpoint written on one mesh or
process count restores onto another. Paths may be local or on a bucket (`gs://...`).

Crashes and damage:
- A save killed half-way leaves an Orbax temporary directory; every training start removes
  those before it saves anything (so a rerun never writes into a dead save's directory).
- A checkpoint that does not restore (truncated or missing files: a partial copy, a full disk)
  is set aside, renamed `<step>.damaged` and never deleted, with one line saying so, and the
  newest checkpoint before it is restored instead. One that restores but does not fit the
  config (another model) is a config error, and nothing is renamed.
"""

import functools
import logging
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from vfjax import distributed, fileio

DAMAGED_SUFFIX = ".damaged"

# Orbax splits each replicated shard between its replicas when saving ("replica-parallel"), which
# spreads a large array's writes over hosts but costs a device slice per replica: for the many
# small arrays of a model (norm scales, biases, a small model's everything) the slices cost more
# than the writes. Measured on the tiny test state (814 arrays, 1.4 MiB, 8 CPU devices, 2x4
# mesh): a save took 4.5-7.6 s with every array split, 2.1-2.3 s with this floor.
MIN_REPLICA_PARALLEL_SLICE_BYTES = 1 << 20


@functools.cache
def _register_array_handler() -> None:
    """Orbax's jax.Array handler with the floor above, once per process (Orbax keeps one handler
    per type for the whole process). Orbax logs a warning for every override it is asked for and
    has no public switch for it: that one line is held back here, as it says nothing to a user."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array,
            ocp.type_handlers.ArrayHandler(
                min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_SLICE_BYTES
            ),
            override=True,
        )
    finally:
        absl_logger.setLevel(level)


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a run of another model or optimizer."""


class _Failure:
    """What a guarded restore returns instead of raising (see `_GuardedStateHandler`)."""

    def __init__(self, error: BaseException):
        self.error = error

    def __str__(self) -> str:
        text = str(self.error).strip().splitlines()
        return f"{type(self.error).__name__}: {text[0][:200] if text else ''}"


class _GuardedStateHandler(ocp.StandardCheckpointHandler):
    """Orbax's standard handler, whose restore returns a `_Failure` instead of raising.

    Orbax waits at a barrier of all processes after restoring; a process that raised inside
    the restore would never reach it and leave the others waiting. Returning the failure lets
    every process reach the barrier, and then all of them agree that the step is damaged.
    """

    def restore(self, directory, item=None, args=None):
        try:
            if args is not None and isinstance(args.item, dict):
                # Some fields of the state (`{field: abstract subtree}`; the whole state is a
                # `TrainState`): StandardRestore restores whole trees only, so PyTreeRestore's
                # partial restore (of the handler Orbax's standard one wraps) reads them alone.
                return self._impl.restore(directory, args=partial_restore_args(args.item))
            return super().restore(directory, item=item, args=args)
        except Exception as e:  # Damage shows as many error types (tensorstore, OS, JSON).
            return _Failure(e)


class _GuardedJsonHandler(ocp.JsonCheckpointHandler):
    def restore(self, directory, args=None):
        try:
            return super().restore(directory, args=args)
        except Exception as e:
            return _Failure(e)


# Orbax finds an item's handler from the type of its arguments: these name the guarded ones.
@ocp.args.register_with_handler(_GuardedStateHandler, for_save=True)
class _StateSave(ocp.args.StandardSave):
    """Saves the train state through the guarded handler."""


@ocp.args.register_with_handler(_GuardedStateHandler, for_restore=True)
class _StateRestore(ocp.args.StandardRestore):
    """Restores the train state through the guarded handler."""


@ocp.args.register_with_handler(_GuardedJsonHandler, for_save=True)
class _DataSave(ocp.args.JsonSave):
    """Saves the data position through the guarded handler."""


@ocp.args.register_with_handler(_GuardedJsonHandler, for_restore=True)
class _DataRestore(ocp.args.JsonRestore):
    """Restores the data position through the guarded handler."""


def _silence_closed_loop_callbacks() -> None:
    """Drops the `RuntimeError: Event loop is closed` tracebacks of a failed restore.

    When one read of a damaged checkpoint fails, Orbax closes its event loop while TensorStore
    still completes the other reads; each completion's callback then raises this error in a
    TensorStore thread, and Python prints it as an unraisable exception: one traceback per
    array, hundreds of lines that say nothing beyond the one line logged about the damage.
    Every other unraisable exception is printed as before.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_vfjax_filter", False):
        return

    def hook(unraisable):
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook._vfjax_filter = True
    sys.unraisablehook = hook


def partial_restore_args(target) -> ocp.args.PyTreeRestore:
    """Orbax's arguments to restore the leaves of `target` (a strict subtree of a saved tree,
    abstract arrays with shardings) and read nothing else."""
    return ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )


def abstract_target(abstract) -> object:
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), abstract
    )


def _shapes(tree) -> dict[str, tuple]:
    """`{key path: shape}` of a tree of arrays, ShapeDtypeStructs or Orbax array metadata.

    Paths are written `a/b/0/c` whatever the containers (a dataclass field and the dict key
    Orbax's metadata records for it compare equal).
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape)
        for path, leaf in leaves
    }


def _any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (all processes must call this)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


class Checkpointer:
    """Saves and restores `(TrainState, data state)` under a run's `checkpoints/` directory.

    Args:
      directory: the checkpoint directory (local or bucket).
      every_steps: save every this many steps (and when the cluster preempts the run).
      keep: how many of the newest checkpoints to keep.
      use_async: write in the background while training goes on.
      writer: True for a run that saves (removes dead saves' temporary directories first);
        False for readers (sampling, evaluation), which may look at the directory of a run that
        is still training and must not touch its in-flight save.
    """

    def __init__(
        self,
        directory,
        *,
        every_steps: int = 1,
        keep: int = 3,
        use_async: bool = True,
        writer: bool = True,
    ):
        self.directory = fileio.path(directory)
        _register_array_handler()
        policy = ocp.checkpoint_managers.AnySavePolicy(
            [
                ocp.checkpoint_managers.FixedIntervalPolicy(max(every_steps, 1)),
                ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=use_async,
            create=writer,
            cleanup_tmp_directories=writer,
            save_decision_policy=policy,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={"state": _GuardedStateHandler(), "data": _GuardedJsonHandler()},
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def reached_preemption(self, step: int) -> bool:
        """True when the cluster (TPU maintenance, a SIGTERM on any host) asks every process to
        stop at `step`. Every process must call this at every step."""
        return self._manager.reached_preemption(step)

    def should_save(self, step: int) -> bool:
        """Whether Orbax's policy saves `step`: every `every_steps`, or a preemption."""
        return self._manager.should_save(step)

    def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
        """Starts saving in the background when Orbax's policy says `step` is due (every
        `every_steps`, or a preemption), or when `force`; True if it started."""
        saved = self._manager.save(
            step,
            args=ocp.args.Composite(state=_StateSave(state), data=_DataSave(data_state)),
            force=force,
        )
        if saved:
            logging.info("Saving checkpoint of step %d to %s", step, self.directory)
        return saved

    def restore(self, abstract_state, step: int, part: str | None = None):
        """Restores `step` into the shardings of `abstract_state`: `(state, data state)`; with
        `part` (a field of the state: 'ema', 'params') that field alone, the others not read
        (sampling needs neither the optimizer state nor the other parameters): `(part, None)`.

        Raises:
          CheckpointMismatchError: the checkpoint belongs to another model or optimizer.
          IOError: the checkpoint is damaged (on any process).
        """
        problem = self._check_fits(abstract_state, step)
        restored = None
        if problem is None:
            target = abstract_target(abstract_state)
            if part is None:
                args = ocp.args.Composite(state=_StateRestore(target), data=_DataRestore())
            else:
                args = ocp.args.Composite(state=_StateRestore({part: getattr(target, part)}))
            restored = self._manager.restore(step, args=args)
            parts = [restored["state"], restored["data"] if part is None else None]
            failed = [f for f in parts if isinstance(f, _Failure)]
            problem = str(failed[0]) if failed else None
        if _any_process(problem is not None):
            raise OSError(problem or "it did not restore on another process")
        if part is not None:
            return restored["state"][part], None
        return restored["state"], restored["data"]

    def restore_latest(self, abstract_state, part: str | None = None):
        """The newest checkpoint that restores: `(state, data state, step)` (`part`: as in
        `restore`), or None when there is none. Damaged ones on the way are set aside (renamed,
        not deleted).

        Raises:
          CheckpointMismatchError: the newest checkpoint belongs to another model or optimizer.
        """
        _silence_closed_loop_callbacks()
        for step in reversed(self.all_steps()):
            try:
                state, data_state = self.restore(abstract_state, step, part)
            except OSError as e:
                self._set_aside(step, str(e))
                continue
            return state, data_state, step
        return None

    def _check_fits(self, abstract_state, step: int) -> str | None:
        """None when checkpoint `step`'s recorded structure and shapes fit `abstract_state`; the
        reason when its metadata cannot be read (damage). Raises on a misfit."""
        try:
            saved = self._manager.item_metadata(step)["state"]
            saved = getattr(saved, "tree", saved)
            saved_shapes = _shapes(saved)
        except Exception as e:  # Damage shows as many error types (tensorstore, OS, JSON).
            return f"its metadata does not read: {_Failure(e)}"
        wanted = _shapes(abstract_target(abstract_state))
        diff = _first_difference(saved_shapes, wanted)
        if diff:
            raise CheckpointMismatchError(
                f"The checkpoint of step {step} in {self.directory} does not fit this run's model "
                f"or optimizer (written with another config?): {diff}; rerun with that config "
                "or use a new --workdir."
            )
        return None

    def _set_aside(self, step: int, reason: str) -> None:
        """Renames checkpoint `step` to `<step>.damaged[-N]` (process 0), never deleting it."""
        source = self.directory / str(step)
        target = _free_name(self.directory, f"{step}{DAMAGED_SUFFIX}")
        logging.warning(
            "The checkpoint of step %d in %s is damaged (%s): set aside as %s; trying the one "
            "before.",
            step,
            self.directory,
            reason,
            target.name,
        )
        if distributed.is_main():
            source.rename(target)
        distributed.barrier(f"vfjax set aside checkpoint {step}")
        self._manager.reload()

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _first_difference(saved: dict, wanted: dict) -> str | None:
    missing = sorted(set(wanted) - set(saved))
    if missing:
        return f"it lacks {missing[0]}"
    extra = sorted(set(saved) - set(wanted))
    if extra:
        return f"it has {extra[0]}, which this run does not"
    for key in sorted(wanted):
        if saved[key] != wanted[key]:
            return f"{key} has shape {saved[key]} there, {wanted[key]} here"
    return None


def _free_name(directory: epath.Path, name: str) -> epath.Path:
    if not (directory / name).exists():
        return directory / name
    taken = [p.name for p in directory.iterdir()]
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return directory / f"{name}-{n}"
