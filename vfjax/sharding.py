"""The one place that builds the mesh and turns logical axis names into shardings.

The mesh has axes `('data', 'fsdp')`. Batches are split over both; parameters and optimizer
state are split over `fsdp` following `LOGICAL_RULES`: each parameter's first logical axis (in
rule order) whose size divides the `fsdp` size is sharded, the rest replicated.
"""

import math

import jax
import numpy as np
from flax import nnx, traverse_util
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
# (logical name, mesh axis), in priority order: output channels first, then input channels.
LOGICAL_RULES = (("out", "fsdp"), ("embed", "fsdp"), ("in", "fsdp"), ("vocab", "fsdp"))


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int]:
    """`(data, fsdp)` sizes from the config; `-1` takes what the other leaves.

    Raises:
      ValueError: one line, when the sizes do not multiply to the device count.
    """
    data, fsdp = int(mesh_config.data), int(mesh_config.fsdp)
    if data == -1 and fsdp == -1:
        data, fsdp = 1, num_devices
    elif data == -1:
        data = num_devices // fsdp if fsdp > 0 and num_devices % fsdp == 0 else 0
    elif fsdp == -1:
        fsdp = num_devices // data if data > 0 and num_devices % data == 0 else 0
    if data <= 0 or fsdp <= 0 or data * fsdp != num_devices:
        raise ValueError(
            f"mesh.data={mesh_config.data} x mesh.fsdp={mesh_config.fsdp} does not match the "
            f"{num_devices} devices; set sizes whose product is {num_devices} (-1 fills one in)."
        )
    return data, fsdp


def make_mesh(mesh_config=None, devices=None) -> jax.sharding.Mesh:
    """The `('data', 'fsdp')` mesh over all devices (of all processes), its sizes from
    `mesh_config` (`config.mesh`); None puts every device on `data` (a batch-parallel program,
    such as a feature network's).

    Over several TPU slices (devices with different `slice_index`), `data` spans the slices
    (only the gradient reduction crosses the slow data-centre network) and each slice holds
    `data / slices` x `fsdp` devices on its fast links."""
    devices = jax.devices() if devices is None else devices
    shape = (len(devices), 1) if mesh_config is None else mesh_shape(mesh_config, len(devices))
    axis_types = (AxisType.Auto, AxisType.Auto)
    slices = len({getattr(d, "slice_index", 0) for d in devices})
    if slices == 1:
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
    data, fsdp = shape
    if data % slices:
        raise ValueError(
            f"mesh.data={data} does not split over the {slices} slices: data spans the slices "
            f"(fsdp stays inside one); use a multiple of {slices}."
        )
    from jax.experimental import mesh_utils

    grid = mesh_utils.create_hybrid_device_mesh(
        (data // slices, fsdp), (slices, 1), devices=devices
    )
    return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)


def check_batch(global_batch: int, mesh: jax.sharding.Mesh) -> None:
    """Refuses a global batch that does not split evenly over the mesh (or the processes)."""
    shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
    if global_batch % shards:
        raise ValueError(
            f"batch_size={global_batch} does not divide over the {shards} devices of the "
            f"mesh; use a multiple of {shards}."
        )
    if global_batch % jax.process_count():
        raise ValueError(
            f"batch_size={global_batch} does not divide over {jax.process_count()} processes."
        )


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data` and `fsdp`."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def logical_spec(axes, shape, mesh: jax.sharding.Mesh, rules=LOGICAL_RULES) -> PartitionSpec:
    """The PartitionSpec of an array with logical `axes` and `shape` under `rules`."""
    spec = [None] * len(shape)
    used = set()
    for name, mesh_axis in rules:
        size = mesh.shape.get(mesh_axis, 1)
        if size == 1 or mesh_axis in used:
            continue
        for i, (axis, dim) in enumerate(zip(axes or (), shape, strict=False)):
            if axis == name and spec[i] is None and dim % size == 0:
                spec[i] = mesh_axis
                used.add(mesh_axis)
                break
    return PartitionSpec(*spec)


def param_shardings(abstract_params: nnx.State, mesh: jax.sharding.Mesh) -> dict:
    """NamedShardings (a pure dict like the parameters) from each parameter's logical axes."""

    def sharding(v):
        spec = logical_spec(v.get_metadata().get("logical_axes"), v.shape, mesh)
        return v.replace(NamedSharding(mesh, spec))

    shardings = jax.tree.map(
        sharding, abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    return nnx.to_pure_dict(shardings)


def like_params(tree, params: dict, shardings: dict, mesh: jax.sharding.Mesh):
    """Shardings of a tree holding parameter-shaped leaves (the optimizer's moments): a leaf
    whose key path ends with a parameter's path, and that has its shape, gets that parameter's
    sharding; anything else (step counters) is replicated.

    Hand-written because `optax.tree_utils.tree_map_params` initialises the optimizer with one
    placeholder for the whole parameter tree, which `multi_transform`'s per-generator labels
    (a function of the tree's keys) cannot take.
    """
    by_path = {
        tuple(map(str, path)): (tuple(leaf.shape), shardings_leaf)
        for (path, leaf), shardings_leaf in zip(
            traverse_util.flatten_dict(params).items(),
            traverse_util.flatten_dict(shardings).values(),
            strict=True,
        )
    }

    def sharding(path, leaf):
        keys = tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        for start in range(len(keys)):
            found = by_path.get(keys[start:])
            if found and found[0] == tuple(np.shape(leaf)):
                return found[1]
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(sharding, tree)


def bytes_per_device(tree) -> int:
    """Bytes of `tree`'s arrays held on the first addressable device."""
    device = jax.local_devices()[0]
    total = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            total += sum(s.data.nbytes for s in leaf.addressable_shards if s.device == device)
    return total


def memory_report(state, mesh: jax.sharding.Mesh) -> dict[str, int]:
    """Bytes per device of the parameters, optimizer state and EMA (first local device)."""
    parts = {"params": state.params, "opt_state": state.opt_state, "ema": state.ema}
    report = {name: bytes_per_device(tree) for name, tree in parts.items()}
    report["total"] = sum(report.values())
    return report


def replicated_large_arrays(tree, mesh: jax.sharding.Mesh, min_bytes: int = 1 << 20) -> list:
    """Paths of arrays of at least `min_bytes` left fully replicated although `fsdp > 1`."""
    if mesh.shape["fsdp"] == 1:
        return []
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        nbytes = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        if nbytes >= min_bytes and leaf.sharding.is_fully_replicated:
            found.append(jax.tree_util.keystr(path))
    return found


def check_sharded(tree, mesh: jax.sharding.Mesh, min_bytes: int) -> None:
    """Fails when an fsdp mesh leaves a large array replicated on every device."""
    found = replicated_large_arrays(tree, mesh, min_bytes)
    if found:
        raise ValueError(
            f"{len(found)} arrays of {min_bytes} bytes or more stay replicated under "
            f"mesh.fsdp={mesh.shape['fsdp']} (first: {found[0]}); make their channel counts "
            f"divisible by fsdp or raise mesh.replicated_limit_bytes."
        )
