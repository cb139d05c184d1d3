"""The one wrapper around Orbax: periodic asynchronous saves, keep-last-N, resume, preemption,
and importing a pretrained base generator from another run's checkpoint.

A checkpoint holds two items: `state` (the `TrainState`, every array saved shard by shard by the
process that owns it) and `data` (the input pipeline's position, JSON). Restoring takes the
abstract state of the current run, with its shardings, so a checkpoint written on one mesh or
process count restores onto another.
"""

import logging
import os

import jax
import orbax.checkpoint as ocp

from vfjax import state as state_lib

# Arrays whose replicated shards are smaller than this are written whole by one replica;
# larger ones are split across replicas (Orbax's replica-parallel save). Splitting small arrays
# costs one dispatch per slice and gains nothing.
REPLICA_PARALLEL_MIN_BYTES = 4 << 20


def _abstract_target(abstract) -> object:
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), abstract
    )


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    registry = ocp.type_handlers.create_type_handler_registry(
        (
            jax.Array,
            ocp.type_handlers.ArrayHandler(
                min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_BYTES
            ),
        )
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def _restore_args(abstract) -> ocp.args.PyTreeRestore:
    target = _abstract_target(abstract)
    return ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
    )


class Checkpointer:
    """Saves and restores `(TrainState, data state)` under `workdir/checkpoints`."""

    def __init__(self, directory: str, *, every_steps: int, keep: int, use_async: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(every_steps, 1),
            max_to_keep=keep,
            enable_async_checkpointing=use_async,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={"state": _state_handler(), "data": ocp.JsonCheckpointHandler()},
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: state_lib.TrainState, data_state: dict, force=False) -> bool:
        """Starts saving in the background if `step` is due (or `force`); True if it started."""
        saved = self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeSave(state), data=ocp.args.JsonSave(data_state)
            ),
            force=force,
        )
        if saved:
            logging.info("Saving checkpoint of step %d to %s", step, self.directory)
        return saved

    def restore(
        self, abstract_state: state_lib.TrainState, step: int | None = None
    ) -> tuple[state_lib.TrainState, dict]:
        """Restores step `step` (default: the latest) into the shardings of `abstract_state`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory}.")
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=_restore_args(abstract_state),
                    data=ocp.args.JsonRestore(),
                ),
            )
        except ValueError as e:
            raise ValueError(
                f"The checkpoint of step {step} in {self.directory} does not fit this run's model "
                f"or optimizer (written with another config?); rerun with that config or use a "
                f"new --workdir. [{str(e).strip().splitlines()[0][:160]}]"
            ) from e
        return restored["state"], restored["data"]

    def reached_preemption(self, step: int) -> bool:
        """True when the cluster (TPU maintenance, a SIGTERM on every host) asks to stop."""
        return self._manager.reached_preemption(step)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def checkpoint_root(path: str) -> str:
    """A run's checkpoint directory from a workdir or the checkpoint directory itself."""
    path = os.path.abspath(os.path.expanduser(path))
    nested = os.path.join(path, "checkpoints")
    return nested if os.path.isdir(nested) else path


def load_base_params(path: str, abstract_base: dict, use_ema: bool = True) -> dict:
    """The base generator's parameters from another run (an image run, or a VideoFusion run).

    Args:
      path: that run's workdir or checkpoint directory (latest step), or one step's directory.
      abstract_base: ShapeDtypeStructs (with shardings) of this run's base parameters; shapes
        must match, so the other run must have used the same base architecture.
      use_ema: take the EMA parameters (what that run samples with) rather than the raw ones.

    Raises:
      FileNotFoundError / ValueError: one line, when there is no checkpoint or it does not fit.
    """
    root = checkpoint_root(path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"init.base_checkpoint={path!r} is not a directory.")
    step_dir = root
    if not os.path.isdir(os.path.join(root, "state")):
        steps = ocp.utils.checkpoint_steps(root)
        if not steps:
            raise FileNotFoundError(f"init.base_checkpoint={path!r} holds no checkpoint.")
        step_dir = os.path.join(root, str(max(steps)))
    key = "ema" if use_ema else "params"
    target = {key: {"base": _abstract_target(abstract_base)}}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    with ocp.PyTreeCheckpointer() as ckptr:
        try:
            restored = ckptr.restore(
                os.path.join(step_dir, "state"),
                args=ocp.args.PyTreeRestore(
                    item=target, restore_args=restore_args, partial_restore=True
                ),
            )
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"init.base_checkpoint={path!r} has no base generator of this architecture "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})."
            ) from None
    logging.info("Loaded the base generator (%s) from %s", key, step_dir)
    return restored[key]["base"]
