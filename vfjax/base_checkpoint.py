"""Weights from other runs: a base generator imported into a VideoFusion run (from an image run,
a VideoFusion run or a converted public checkpoint), and the writer of such a checkpoint.

Both go through Orbax like `vfjax.checkpointing`, in the same layout (`<root>/<step>/state`);
paths may be local or on a bucket.
"""

import logging
import re

import orbax.checkpoint as ocp
from etils import epath

from vfjax import fileio
from vfjax.checkpointing import abstract_target, partial_restore_args


def write_tree(directory, tree: dict, step: int = 0) -> epath.Path:
    """Writes `tree` (nested dicts of arrays) as the `state` item of checkpoint `step` in a new
    `directory`: the layout `load_base_params` reads (how converted public checkpoints are
    stored). Refuses an existing directory; returns the step's directory."""
    root = fileio.path(directory)
    if root.exists():
        raise FileExistsError(f"{root} exists; pick a new folder.")
    with ocp.CheckpointManager(root, item_names=("state",)) as manager:
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree)))
        manager.wait_until_finished()
    return root / str(step)


def checkpoint_root(path) -> epath.Path:
    """A run's checkpoint directory from a workdir or the checkpoint directory itself."""
    path = fileio.path(path)
    nested = path / "checkpoints"
    return nested if nested.is_dir() else path


def _step_dirs(root: epath.Path) -> list[int]:
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if re.fullmatch(r"\d+", p.name))


def load_base_params(path, abstract_base: dict, use_ema: bool = True) -> dict:
    """The base generator's parameters from another run (an image run, or a VideoFusion run),
    or from a converted public checkpoint (`python -m vfjax.pretrained`).

    Args:
      path: that run's workdir or checkpoint directory (its newest step), or one step's
        directory.
      abstract_base: ShapeDtypeStructs (with shardings) of this run's base parameters; shapes
        must match, so the other run must have used the same base architecture.
      use_ema: take the EMA parameters (what that run samples with) rather than the raw ones.

    Raises:
      FileNotFoundError / ValueError: one line, when there is no checkpoint or it does not fit.
    """
    root = checkpoint_root(path)
    if not root.is_dir():
        raise FileNotFoundError(f"init.base_checkpoint={str(path)!r} is not a directory.")
    step_dir = root
    if not (root / "state").is_dir():
        steps = _step_dirs(root)
        if not steps:
            raise FileNotFoundError(f"init.base_checkpoint={str(path)!r} holds no checkpoint.")
        step_dir = root / str(steps[-1])
    key = "ema" if use_ema else "params"
    target = {key: {"base": abstract_target(abstract_base)}}
    # A part of another run's state: PyTreeRestore's partial restore (StandardRestore restores
    # whole trees only), into this run's shardings.
    args = partial_restore_args(target)
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
        try:
            restored = checkpointer.restore(step_dir / "state", args=args)
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"init.base_checkpoint={str(path)!r} has no base generator of this architecture "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})."
            ) from None
    logging.info("Loaded the base generator (%s) from %s", key, step_dir)
    return restored[key]["base"]
