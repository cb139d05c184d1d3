"""What every mode does first: check the config, fill in what the data set decides, build the
mesh and the abstract state, and restore a checkpoint's EMA parameters.

Training, sampling, evaluation and the benchmark all start here; none of them imports another.
Everything here is cheap (no arrays are allocated, nothing is compiled), so a bad config fails
in seconds.
"""

from flax import nnx

from vfjax import checkpointing, fileio
from vfjax import config as config_lib
from vfjax import data as data_lib
from vfjax import sharding as sharding_lib
from vfjax import state as state_lib
from vfjax.models import videofusion


def prepare_config(config, with_data: bool = True):
    """Fills fields that come from the data set (class count, caption-embedding width) and
    checks the result. Without data (a benchmark of synthetic batches), those fields must be
    set in the config."""
    config = config.copy_and_resolve_references()
    if not with_data:
        needs = {"class": "model.num_classes", "text": "model.text_dim"}.get(config.data.cond)
        if needs and not config.model[needs.split(".")[1]]:
            raise ValueError(f"data.cond={config.data.cond!r} without a data set needs {needs}.")
        return config
    if config.data.cond == "class":
        info = data_lib.data_info(config.data)
        if not info.get("num_classes"):
            raise ValueError(f"data.cond='class' but data set {config.data.name!r} has no classes.")
        if config.model.num_classes and config.model.num_classes != info["num_classes"]:
            raise ValueError(
                f"model.num_classes={config.model.num_classes} but data set "
                f"{config.data.name!r} has {info['num_classes']} classes; set 0 to take it from "
                "the data set."
            )
        config.model.num_classes = int(info["num_classes"])
    if config.data.cond == "text":
        info = data_lib.data_info(config.data)
        if not info["text_dim"]:
            raise ValueError(
                f"data.cond='text' but {config.data.name!r} has no caption embeddings: run "
                "--mode=prepare with data.cond='text' and data.text_encoder set."
            )
        if config.model.text_dim and config.model.text_dim != info["text_dim"]:
            raise ValueError(
                f"model.text_dim={config.model.text_dim} but the stored caption embeddings are "
                f"{info['text_dim']} wide; set 0 to take it from the data set."
            )
        config.model.text_dim = int(info["text_dim"])
    return config


def setup_run(config, workdir, with_data: bool = True, devices=None):
    """Checks the config and workdir, builds the mesh and the abstract state (cheap).

    `with_data=False` (the benchmark, fed synthetic batches) skips what concerns the data set;
    `devices` (default: all of the run's) may be devices compiled for and never run on (a TPU
    topology on a CPU host: `vfjax.bench.tpu`).
    """
    config_lib.validate(config, workdir, with_data)
    config = prepare_config(config, with_data)
    mesh = sharding_lib.make_mesh(config.mesh, devices)
    sharding_lib.check_batch(config.batch_size, mesh)
    setup = state_lib.build_setup(config, mesh)
    return config, setup


def param_counts(setup: state_lib.Setup) -> dict[str, int]:
    """Parameters per generator and in total."""
    return videofusion.count_params(nnx.to_pure_dict(setup.abstract_params))


def restore_ema(config, setup: state_lib.Setup, workdir, step: int = -1):
    """The EMA parameters of checkpoint `step` (-1: the newest that restores; damaged ones are
    set aside on the way; the raw ones with `sampling.use_ema=False`) and that step."""
    directory = fileio.join(workdir, "checkpoints")
    if not directory.is_dir():
        raise FileNotFoundError(f"No checkpoint in {directory}: train first (--mode=train).")
    ckpt = checkpointing.Checkpointer(directory, keep=config.keep_checkpoints, writer=False)
    part = "ema" if config.sampling.use_ema else "params"  # Read alone: no optimizer state.
    try:
        if step >= 0:
            if step not in ckpt.all_steps():
                raise FileNotFoundError(
                    f"No checkpoint of step {step} in {directory}; there are {ckpt.all_steps()}."
                )
            params, _ = ckpt.restore(setup.abstract_state, step, part)
        else:
            restored = ckpt.restore_latest(setup.abstract_state, part)
            if restored is None:
                raise FileNotFoundError(
                    f"No checkpoint in {directory} restores: train first (--mode=train)."
                )
            params, _, step = restored
    finally:
        ckpt.close()
    return params, step
