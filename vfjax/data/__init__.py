"""Data: the synthetic default, tfds builders of real video data sets, the grain input pipeline.

    loader = create_loader(config.data, global_batch_size=64, seed=0,
                           process_index=jax.process_index(),
                           process_count=jax.process_count(), start_step=step)
    for local_batch in loader:
        batch = make_global_batch(local_batch, batch_sharding)

or, as training reads them, uint8 videos put on the devices ahead of the step that converts them:

    loader = create_loader(..., video_dtype="uint8")
    for batch in DeviceBatches(loader, batch_sharding):
        video = to_model_input(batch["video"])  # Inside the jitted step.

Prepare a real data set once with `prepare(config.data)` (`--mode=prepare`).

The names below are imported when first used: importing `vfjax.data.config` (what a config
file needs) must not pull in grain and tfds (seconds of imports) with it.
"""

import importlib

_EXPORTS = {
    "default_config": "vfjax.data.config",
    "validate": "vfjax.data.config",
    "DeviceBatches": "vfjax.data.pipeline",
    "Loader": "vfjax.data.pipeline",
    "create_loader": "vfjax.data.pipeline",
    "data_info": "vfjax.data.pipeline",
    "make_global_batch": "vfjax.data.pipeline",
    "format_stats": "vfjax.data.preparation",
    "prepare": "vfjax.data.preparation",
    "to_model_input": "vfjax.data.pixels",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vfjax.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
