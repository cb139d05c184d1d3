"""Feature networks as values, and their sharded application over a stream of videos.

A ``FeatureNetwork`` bundles a pure function with its parameters and the provenance that a result
file must record (name and weight checksums). It is a pytree whose only leaves are the parameters,
so it passes through ``jax.jit`` as an argument: the 50 MB of I3D weights are not baked into the
compiled program as constants.
"""

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from vfjax import distributed
from vfjax import sharding as sharding_lib


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """A feature network: ``network(videos) == apply_fn(params, videos)``.

    Attributes:
        params: Pytree of arrays.
        apply_fn: Pure function ``(params, videos) -> features``.
        name: Identifier recorded in result files, e.g. ``'i3d-kinetics-400'``.
        weights: ``(file name, SHA-256)`` of each file the parameters came from.
    """

    params: Any
    apply_fn: Callable[[Any, jax.Array], jax.Array]
    name: str
    weights: tuple[tuple[str, str], ...]

    def __call__(self, videos: jax.Array) -> jax.Array:
        return self.apply_fn(self.params, videos)


# Only the parameters are leaves; the rest is static (hashable) structure under jit.
jax.tree_util.register_dataclass(
    FeatureNetwork, data_fields=["params"], meta_fields=["apply_fn", "name", "weights"]
)


def _batch_sharding(mesh: Mesh | None) -> tuple[NamedSharding, int]:
    """Sharding of a batch over the mesh's batch axes (`sharding.BATCH_AXES`; a mesh without
    them is split over all of its axes), and the number of batch shards."""
    mesh = sharding_lib.make_mesh() if mesh is None else mesh
    axes = tuple(a for a in mesh.axis_names if a in sharding_lib.BATCH_AXES)
    axes = axes or tuple(mesh.axis_names)
    return NamedSharding(mesh, PartitionSpec(axes)), math.prod(mesh.shape[a] for a in axes)


def _program(apply_fn, replicated: NamedSharding):
    """What `extract_features` runs per batch: features and validity mask, replicated."""

    def apply(params, videos, valid):
        features = apply_fn(params, videos)
        # Replicated outputs let every process read all features without a separate gather.
        return jax.lax.with_sharding_constraint((features, valid), replicated)

    return apply


def lower(network: FeatureNetwork, mesh: Mesh, shape) -> jax.stages.Lowered:
    """The program `extract_features` runs, lowered for the devices of `mesh` (a TPU topology's
    included, compiled for and never run on) on float video batches of `shape`."""
    sharding, _ = _batch_sharding(mesh)
    replicated = NamedSharding(sharding.mesh, PartitionSpec())

    def abstract(x):
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=replicated)

    params = jax.tree.map(abstract, network.params)
    videos = jax.ShapeDtypeStruct(tuple(shape), np.float32, sharding=sharding)
    valid = jax.ShapeDtypeStruct(tuple(shape[:1]), np.bool_, sharding=sharding)
    return jax.jit(_program(network.apply_fn, replicated)).lower(params, videos, valid)


def _padded(batch: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pads a host batch to ``size`` clips with zeros; returns it and its validity mask."""
    valid = np.zeros((size,), bool)
    valid[: batch.shape[0]] = True
    if batch.shape[0] == size:
        return batch, valid
    pad = np.zeros((size - batch.shape[0],) + batch.shape[1:], batch.dtype)
    return np.concatenate([batch, pad]), valid


def extract_features(
    network: FeatureNetwork | Callable[[jax.Array], jax.Array],
    videos_iter: Iterable[np.ndarray | tuple[np.ndarray, np.ndarray]],
    mesh: Mesh | None = None,
    *,
    batch_size: int | None = None,
    total: int | None = None,
    desc: str = "features",
) -> np.ndarray:
    """Runs a feature network over host batches, sharded over the batch axes of a mesh.

    Each process feeds its own clips (multi-host: its own slice of the data), and every process
    must yield the same number of batches. Batches are cut or zero-padded to one fixed
    per-process size so the network compiles once; padded clips, and clips a batch marks as not
    valid, are dropped from the result with a validity mask that travels with them.

    Args:
        network: A ``FeatureNetwork`` (parameters passed to the jitted function, replicated) or any
            function of a video batch.
        videos_iter: Iterable of [b, T, H, W, C] host arrays of this process's clips, as the
            network takes them (float in [-1, 1] for I3D and C3D), or of ``(clips, valid)`` pairs
            whose boolean ``valid [b]`` marks the clips to keep. Batch sizes may vary.
        mesh: Mesh whose ``'data'``/``'fsdp'`` axes (or all axes) split the batch. Default:
            ``sharding.make_mesh()``, every device on ``'data'``.
        batch_size: Clips per process per step; rounded up to a multiple of this process's batch
            shards. Default: the size of the first batch, rounded up the same way.
        total: Expected number of clips over all processes, for the progress bar only.
        desc: Progress bar label.

    Returns:
        [N, D] float32 features of all valid clips of all processes, in feed order
        (process-major within a step), identical on every process.
    """
    if isinstance(network, FeatureNetwork):
        apply_fn, params = network.apply_fn, network.params
    else:
        apply_fn, params = (lambda _, videos: network(videos)), {}
    sharding, shard_count = _batch_sharding(mesh)
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    local_shards = max(shard_count // jax.process_count(), 1)
    params = jax.device_put(params, replicated)
    run = distributed.AlignedJit(jax.jit(_program(apply_fn, replicated)), f"features {desc}")

    outputs = []
    with tqdm(total=total, desc=desc, unit="clip", disable=jax.process_index() != 0) as bar:
        for item in videos_iter:
            batch, keep = item if isinstance(item, tuple) else (item, None)
            batch = np.asarray(batch)
            keep = np.ones((batch.shape[0],), bool) if keep is None else np.asarray(keep, bool)
            if batch_size is None:
                batch_size = batch.shape[0]
            step_size = -(-batch_size // local_shards) * local_shards
            # At least one call per batch, also for an empty one: every process must join.
            for start in range(0, max(batch.shape[0], 1), step_size):
                chunk, valid = _padded(batch[start : start + step_size], step_size)
                valid[: len(keep[start : start + step_size])] &= keep[start : start + step_size]
                global_videos = jax.make_array_from_process_local_data(sharding, chunk)
                global_valid = jax.make_array_from_process_local_data(sharding, valid)
                features, mask = run(params, global_videos, global_valid)
                mask = np.asarray(mask)
                outputs.append(np.asarray(features, np.float32)[mask])
                bar.update(int(mask.sum()))
    if not outputs:
        raise ValueError("extract_features got no videos; check that the iterator yields batches.")
    return np.concatenate(outputs)
