"""What both checkpoint formats share: the base generator's parameters by path, PyTorch layouts
turned into ours, a record of which checkpoint tensors were used, and the run overrides that a
converted architecture gives."""

import dataclasses
import functools
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx, traverse_util

from vfjax.models import init as init_lib
from vfjax.models.architecture import UNet2DConfig
from vfjax.models.unet2d import UNet2D

# `UNet2DConfig` fields a checkpoint determines, written as `model.base.*` overrides.
ARCH_FIELDS = (
    "channels",
    "channel_mult",
    "num_res_blocks",
    "attn_resolutions",
    "mid_attention",
    "head_dim",
    "num_heads",
    "scale_shift",
    "resblock_updown",
    "downsample_padding",
    "flip_sin_to_cos",
    "freq_shift",
    "timestep_scale",
    "num_groups",
    "norm_eps",
    "dropout",
)
# Fields a run sets from elsewhere (data.resolution, data.channels, model.num_classes).
RUN_FIELDS = ("image_size", "in_channels", "out_channels", "num_classes")

# Our parameter leaf names -> PyTorch's.
LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight"}


class ConversionError(ValueError):
    """A checkpoint whose architecture the base generator cannot mirror, or that does not match
    the architecture it was given."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConversionError(message)


def base_config(fields: dict) -> UNet2DConfig:
    """The float32 base generator of converted `fields` (refuses a field it does not have)."""
    unknown = set(fields) - {f.name for f in dataclasses.fields(UNet2DConfig)}
    require(not unknown, f"not base generator fields: {sorted(unknown)}")
    return UNet2DConfig(**fields, dtype="float32")


@functools.lru_cache(maxsize=4)
def abstract_base(cfg: UNet2DConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """`UNet2D(cfg)`'s graph definition and abstract parameters, built once per architecture
    (a conversion and a forward pass of its result both need them)."""
    return init_lib.abstract_model(lambda rngs: UNet2D(cfg, rngs=rngs))


def param_shapes(cfg: UNet2DConfig) -> dict[tuple, jax.ShapeDtypeStruct]:
    """Every parameter of `UNet2D(cfg)`: path (tuple of str/int) -> abstract array."""
    return traverse_util.flatten_dict(nnx.to_pure_dict(abstract_base(cfg)[1]))


def fill(cfg: UNet2DConfig, lookup: Callable[[tuple, tuple], np.ndarray]) -> dict:
    """Parameters of `UNet2D(cfg)` as a pure nested dict, each from `lookup(path, shape)`."""
    flat = {
        path: lookup(path, tuple(abstract.shape)).astype(np.float32)
        for path, abstract in param_shapes(cfg).items()
    }
    return traverse_util.unflatten_dict(flat)


def torch_layout(value: np.ndarray, shape: tuple, source: str, table: bool = False) -> np.ndarray:
    """A PyTorch weight in our layout: conv [O, I, kh, kw] -> [kh, kw, I, O], 1x1 Conv1d
    [O, I, 1] and linear [O, I] -> [I, O]; vectors and embedding tables (`table`) as they are."""
    value = np.asarray(value, np.float32)
    if value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 3 and value.shape[-1] == 1:  # Conv1d 1x1 (ADM attention projections).
        value = value[:, :, 0].T
    elif value.ndim == 2 and not table:
        value = value.T
    require(
        tuple(value.shape) == tuple(shape),
        f"{source}: shape {tuple(value.shape)} does not fit the base generator's {tuple(shape)}; "
        "does the architecture (config, flags or preset) match this checkpoint?",
    )
    return value


def with_null_class(table: np.ndarray) -> np.ndarray:
    """A class-embedding table with our extra null row (zeros: no class) appended."""
    return np.concatenate([table, np.zeros_like(table[:1])])


class StateDict:
    """A checkpoint's tensors by name, remembering which were read, so a conversion can insist
    that the architecture it was given used every one of them."""

    def __init__(self, tensors: dict[str, np.ndarray], hint: str):
        self.tensors = tensors
        self.hint = hint
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> np.ndarray:
        require(name in self.tensors, f"the checkpoint lacks {name}: {self.hint}")
        self.used.add(name)
        return np.asarray(self.tensors[name], np.float32)

    def require_all_used(self) -> None:
        unused = sorted(set(self.tensors) - self.used)
        require(
            not unused,
            f"the checkpoint holds {len(unused)} tensors the architecture has no place for "
            f"(first: {unused[:1]}): {self.hint}",
        )


def run_overrides(
    fields: dict, schedule: str | None = None, num_timesteps: int | None = None
) -> dict:
    """Config overrides for a run whose base generator has these `fields`: every
    `model.base.*` architecture field, `data.resolution`, `data.channels`, and the noise
    schedule the checkpoint was trained with when it is known."""
    overrides = {f"model.base.{name}": fields[name] for name in ARCH_FIELDS}
    overrides["data.resolution"] = fields["image_size"]
    overrides["data.channels"] = fields["in_channels"]
    if schedule is not None:
        overrides["diffusion.schedule"] = schedule
        overrides["diffusion.num_timesteps"] = num_timesteps
    return overrides
