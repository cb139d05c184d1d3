"""Data: the synthetic default, tfds builders of real video data sets, the grain input pipeline.

    loader = create_loader(config.data, global_batch_size=64, seed=0,
                           process_index=jax.process_index(),
                           process_count=jax.process_count(), start_step=step)
    for local_batch in loader:
        batch = make_global_batch(local_batch, batch_sharding)

Prepare a real data set once with `prepare(config.data)` or `python -m vfjax.data prepare`.
"""

from vfjax.data.config import default_config, validate
from vfjax.data.pipeline import Loader, create_loader, data_info, make_global_batch
from vfjax.data.preparation import format_stats, prepare

__all__ = [
    "Loader",
    "create_loader",
    "data_info",
    "default_config",
    "format_stats",
    "make_global_batch",
    "prepare",
    "validate",
]
