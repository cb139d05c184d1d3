"""What the experiment configs share: the paper-benchmark training setup, sweeps, and the
parameter-matched VDM baseline of an ablation.

    from vfjax import config as vfc, experiments

    def get_config(arg=None):
        c = experiments.paper_benchmark(64)
        ...
        return vfc.apply_variants(c, arg)
"""

import math

import ml_collections

from vfjax.config import (
    apply_variants,
    base_config,
    base_unet,
    load_module,
    parse_arg,
    residual_unet,
)

# The generators of the paper-benchmark configs, by resolution (16 frames): a 2D base generator
# and a space-time residual generator of the same widths, in the VDM family. Ours: the paper
# does not give its networks.
_BENCHMARK_NETWORKS = {
    64: {
        "channel_mult": (1, 2, 2, 2),
        "temporal_attn_resolutions": (64, 32, 16, 8),
        "batch_size": 64,
    },
    128: {
        "channel_mult": (1, 1, 2, 2, 4),
        "temporal_attn_resolutions": (32, 16, 8),
        "batch_size": 32,
    },
}


def paper_choices(resolution: int) -> str:
    """What the paper states and what is ours in `paper_benchmark(resolution)`, as text: each
    benchmark config appends it to its docstring (one source, so the lists stay true)."""
    net = _BENCHMARK_NETWORKS[resolution]
    return f"""
Known from the paper: decomposed noise with lambda = 0.5 for the non-key frames (its ablation's
best), the key frame N // 2, stop-gradient joint training, DDIM/DDPM sampling, a base generator
that may be a pretrained image model. Ours, not the paper's:
- both generators 128 channels wide, multipliers {net["channel_mult"]}, 2 residual blocks per
  level, spatial attention at 16x16 and 8x8 with 64-channel heads, temporal attention at
  {net["temporal_attn_resolutions"]}, dropout 0.1, scale-shift norms;
- AdamW at 1e-4 after 5k warm-up steps, EMA 0.9999, batch {net["batch_size"]}, 400k steps, the
  linear 1000-step noise schedule, 100 sampling steps;
- with `pretrained`: the public checkpoint {PRETRAINED_BASES[resolution]} (its own schedule);
- the residual generator sees the paper's latent at the key frame (`diffusion.key_input`);
- the evaluation protocol and real-data split, set in the config's `get_config`.
"""


def paper_benchmark(resolution: int) -> ml_collections.ConfigDict:
    """The training setup the paper-benchmark configs share at `resolution` (64 or 128); the
    choices in it, the paper's and ours, are `paper_choices(resolution)`."""
    if resolution not in _BENCHMARK_NETWORKS:
        raise ValueError(
            f"No benchmark setup at {resolution}; there are {sorted(_BENCHMARK_NETWORKS)}."
        )
    net = _BENCHMARK_NETWORKS[resolution]
    c = base_config()
    c.total_steps = 400_000
    c.batch_size = net["batch_size"]
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5_000
    c.sample_every_steps = 20_000
    c.data.num_frames = 16
    c.data.resolution = resolution
    common = dict(
        channels=128,
        channel_mult=net["channel_mult"],
        num_res_blocks=2,
        attn_resolutions=(16, 8),
        head_dim=64,
        dropout=0.1,
        scale_shift=True,
    )
    c.model.base = base_unet(**common)
    c.model.residual = residual_unet(
        **common, temporal_attn_resolutions=net["temporal_attn_resolutions"]
    )
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 5_000
    c.optim.ema_decay = 0.9999
    c.sampling.num_steps = 100
    return c


# The public unconditional image checkpoint that fits each benchmark resolution. At 128 there is
# none trained at 128 (guided-diffusion's 128x128 model is class-conditional on ImageNet): the
# 256x256 unconditional ADM runs at 128 (a convolutional network; its attention then sits at the
# same levels, i.e. at half the resolutions it was published with). Ours, not the paper's: the
# paper's base generator is a pretrained image model it does not name for these benchmarks.
PRETRAINED_BASES = {
    64: "improved-diffusion/imagenet64_uncond_100M_1500K",
    128: "guided-diffusion/256x256_diffusion_uncond",
}


def pretrained_base(
    c: ml_collections.ConfigDict, preset: str | None = None, folder: str | None = None
) -> ml_collections.ConfigDict:
    """`c` with its base generator replaced by the public checkpoint `preset` (by default the
    one of `PRETRAINED_BASES` at `c`'s resolution): the checkpoint's base architecture, noise
    schedule and timestep count, `init.base_checkpoint = folder` (default `runs/base/<name>`)
    and, in `init.base_conversion`, the command that makes that folder from the published file.
    A checkpoint of another resolution runs at `c`'s with its attention at the same levels."""
    from vfjax.pretrained import presets

    resolution = c.data.resolution
    spec = presets.get(preset or PRETRAINED_BASES.get(resolution, ""))
    if spec.num_classes and not c.model.num_classes:
        raise ValueError(f"{spec.name} is class-conditional; this run is not.")
    folder = folder or f"runs/base/{spec.name.replace('/', '_')}"
    scale = spec.image_size // resolution if spec.image_size > resolution else 1
    if spec.image_size % resolution:
        raise ValueError(f"{spec.name} ({spec.image_size}px) does not run at {resolution}px.")
    c = c.copy_and_resolve_references()
    for field, value in presets.config_overrides(spec).items():
        if field == "data.resolution":
            continue
        if field == "model.base.attn_resolutions":
            value = tuple(r // scale for r in value)
        c.update_from_flattened_dict({field: value})
    c.init.base_checkpoint = folder
    c.init.base_conversion = (
        f"python -m vfjax.pretrained {spec.format} --preset={spec.name} "
        f"--src={spec.files[-1]} --out={folder}  (download: {spec.url})"
    )
    return c


def benchmark_on(
    resolution: int, data: str, protocol: str, **data_fields
) -> ml_collections.ConfigDict:
    """`paper_benchmark(resolution)` trained on data set `data` (its `data.*` fields set from
    `data_fields`; split `train` unless given) and evaluated with `protocol`."""
    c = paper_benchmark(resolution)
    c.data.name = data
    c.data.split = "train"
    c.data.update(data_fields)
    c.eval.protocol = protocol
    return c


def ucf101_benchmark(resolution: int, protocol: str) -> ml_collections.ConfigDict:
    """`benchmark_on` UCF101 (split list 1), evaluated with `protocol`. Unconditional UCF101
    benchmarks train on all 13,320 videos (train and test lists)."""
    return benchmark_on(resolution, "ucf101", protocol, ucf_split=1, split="train+test")


def benchmark_variants(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """`config.apply_variants` plus the benchmark configs' own word, `pretrained`.

    `vdm`: the VDM baseline (the same residual network, no base generator); `class`:
    class-conditional with classifier-free guidance; `runlocal`: a CPU smoke run on the same data;
    `pretrained` (with any of the others): the base generator is the public checkpoint of
    `PRETRAINED_BASES` at the config's resolution (`pretrained_base`), converted once with the
    command the run's error names."""
    words, _ = parse_arg(arg)
    rest = ",".join(x for x in filter(None, (arg or "").split(",")) if x.strip() != "pretrained")
    c = apply_variants(c, rest or None)
    return pretrained_base(c) if "pretrained" in words else c


def sweep_product(axes: dict[str, list]) -> list[dict]:
    """Every combination of the field values in `axes`: `{'a': [1, 2], 'b': [3]}` gives
    `[{'a': 1, 'b': 3}, {'a': 2, 'b': 3}]`."""
    points = [{}]
    for field, values in axes.items():
        points = [{**p, field: v} for p in points for v in values]
    return points


def parameter_count(c: ml_collections.ConfigDict) -> int:
    """Parameters of the model of config `c` (both generators), counted without allocating."""
    from flax import nnx

    from vfjax.models import init as init_lib
    from vfjax.models import videofusion

    def build(rngs):
        return videofusion.build_model(c.model, c.data.resolution, c.data.channels, rngs=rngs)

    _, abstract = init_lib.abstract_model(build)
    return videofusion.count_params(nnx.to_pure_dict(abstract))["total"]


def matched_vdm(c: ml_collections.ConfigDict) -> dict[str, int]:
    """Overrides of the residual generator (`model.residual.channels`, a multiple of its group
    count and head width, and `model.residual.num_res_blocks`) at which the VDM baseline has
    about as many parameters as VideoFusion (base and residual generators together) under config
    `c`: the baseline of the same size. Depth is searched as well as width because at CPU sizes
    one step of width (a group of channels) changes the count by half or more."""
    target = parameter_count(c)
    vdm = c.copy_and_resolve_references()
    vdm.model.kind = "vdm"
    # Widths that GroupNorm and the attention heads both divide.
    step = math.lcm(vdm.model.residual.num_groups, vdm.model.residual.head_dim)
    best, best_gap = None, None
    # The count grows with width and with depth: each depth's scan stops at the first width past
    # the target, and no deeper network is tried once the narrowest one is past it (each count
    # builds an abstract model: seconds at the paper's sizes).
    for blocks in range(c.model.residual.num_res_blocks, c.model.residual.num_res_blocks + 4):
        for channels in range(c.model.residual.channels, 4 * c.model.residual.channels + 1, step):
            vdm.model.residual.channels, vdm.model.residual.num_res_blocks = channels, blocks
            count = parameter_count(vdm)
            gap = abs(count - target)
            if best_gap is None or gap < best_gap:
                best = {
                    "model.residual.channels": channels,
                    "model.residual.num_res_blocks": blocks,
                }
                best_gap = gap
            if count > target:
                break
        if channels == c.model.residual.channels and count > target:
            break
    return best


def load_sweep(path: str, arg: str | None = None) -> list[dict]:
    """`get_sweep(arg)` of the config file at `path`: a list of field overrides per run."""
    module = load_module(path)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"{path} has no get_sweep(); it is not a sweep config.")
    points = module.get_sweep(arg)
    if not points or not all(isinstance(p, dict) for p in points):
        raise ValueError(f"get_sweep() of {path} must return a non-empty list of dicts.")
    return points
