"""What the experiment configs share: the paper-benchmark training setup, sweeps, and the
parameter-matched VDM baseline of an ablation.

    from vfjax import config as vfc, experiments

    def get_config(arg=None):
        c = experiments.paper_benchmark(64)
        ...
        return vfc.apply_variants(c, arg)
"""

import dataclasses
import math
import textwrap
from typing import Any

import ml_collections

from vfjax.config import (
    CLASS_GUIDANCE_SCALE,
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


@dataclasses.dataclass(frozen=True)
class Choice:
    """One choice of the paper-benchmark setup, with the config values that make it.

    Attributes:
        text: The choice in words (each benchmark config's docstring lists it).
        fields: The config values it sets, by dotted field name.
        source: `PAPER` when VideoFusion states it; else the reason or the work it follows.
        only_with: Variant words it belongs to (`class`: the guidance of class-conditional runs).
        not_with: Variant words that set these fields otherwise on purpose (`runlocal` shrinks a
            run to a CPU, `pretrained` takes a public checkpoint's base network and schedule).
    """

    text: str
    fields: dict[str, Any]
    source: str
    only_with: frozenset[str] = frozenset()
    not_with: frozenset[str] = frozenset()

    def applies(self, words: set[str]) -> bool:
        """Whether a benchmark config with these variant words makes this choice."""
        return self.only_with <= words and not self.not_with & words


PAPER = "the paper"
_RUNLOCAL = frozenset({"runlocal"})


def benchmark_choices(resolution: int) -> tuple[Choice, ...]:
    """Every choice of `paper_benchmark(resolution)` and its variants, the paper's and ours, each
    with its source; `paper_choices` says them in words, tests/test_configs.py checks each against
    the benchmark configs."""
    net = _BENCHMARK_NETWORKS[resolution]
    arch = dict(
        channels=128,
        channel_mult=net["channel_mult"],
        num_res_blocks=2,
        attn_resolutions=(16, 8),
        head_dim=64,
        dropout=0.1,
        scale_shift=True,
    )
    base = PRETRAINED_BASES[resolution]
    protocol = {64: "stylegan_v", 128: "tats"}[resolution]
    return (
        Choice(
            "decomposed noise with lambda = 0.5 for the non-key frames (its ablation's best)",
            {"diffusion.lam": 0.5},
            PAPER,
        ),
        Choice("the key frame N // 2", {"diffusion.key_frame": None}, PAPER),
        Choice(
            "joint training with the stop-gradient rule (the base generator learns from the key "
            "frame only)",
            {"diffusion.base_stop_gradient": True},
            PAPER,
        ),
        Choice(
            "the residual generator sees the latent with the base removed at the key frame",
            {"diffusion.key_input": "latent"},
            PAPER,
        ),
        Choice(
            f"the base generator: 128 channels wide, multipliers {net['channel_mult']}, 2 "
            "residual blocks per level, spatial attention at 16x16 and 8x8 with 64-channel heads, "
            "dropout 0.1, scale-shift norms",
            {f"model.base.{k}": v for k, v in arch.items()},
            "Ours: the paper does not give its networks; an ADM-style image UNet",
            not_with=_RUNLOCAL | {"pretrained"},
        ),
        Choice(
            f"the residual generator: the same widths and spatial layers, temporal attention at "
            f"{net['temporal_attn_resolutions']}",
            {
                **{f"model.residual.{k}": v for k, v in arch.items()},
                "model.residual.temporal_attn_resolutions": net["temporal_attn_resolutions"],
            },
            "Ours: the paper does not give its networks; the base generator's, factorised in "
            "space and time as in VDM",
            not_with=_RUNLOCAL,
        ),
        Choice(
            f"with `pretrained`, a base generator pretrained on images (the paper's recipe): the "
            f"public checkpoint {base}, with its own noise schedule",
            {"init.base_checkpoint": f"runs/base/{base.replace('/', '_')}"},
            "Ours: the paper does not name its image model for these benchmarks",
            only_with=frozenset({"pretrained"}),
        ),
        Choice(
            "the linear 1000-step noise schedule",
            {"diffusion.schedule": "linear", "diffusion.num_timesteps": 1000},
            "DDPM's schedule (Ho et al. 2020)",
            not_with=frozenset({"pretrained"}),
        ),
        Choice(
            "AdamW at 1e-4 after 5k linear warm-up steps, then constant",
            {"optim.lr": 1e-4, "optim.warmup_steps": 5_000, "optim.schedule": "constant"},
            "Ours; 1e-4 is guided-diffusion's rate (scripts/image_train.py)",
            not_with=_RUNLOCAL,
        ),
        Choice(
            "AdamW with zero weight decay, which is plain Adam (betas 0.9 and 0.999, epsilon 1e-8)",
            {"optim.weight_decay": 0.0, "optim.b1": 0.9, "optim.b2": 0.999, "optim.eps": 1e-8},
            "As guided-diffusion trains (AdamW with weight_decay=0.0, scripts/image_train.py)",
        ),
        Choice(
            "gradients clipped to global norm 1.0",
            {"optim.grad_clip": 1.0},
            "Ours, against rare large steps; the diffusers training examples' default "
            "(--max_grad_norm, examples/text_to_image/train_text_to_image.py)",
        ),
        Choice(
            "EMA of the parameters with decay 0.9999, sampled from",
            {"optim.ema_decay": 0.9999, "sampling.use_ema": True},
            "Guided-diffusion's ema_rate (scripts/image_train.py)",
        ),
        Choice(
            f"batch {net['batch_size']}, 400k steps",
            {"batch_size": net["batch_size"], "total_steps": 400_000},
            "Ours: the paper gives neither",
            not_with=_RUNLOCAL,
        ),
        Choice(
            "bfloat16 activations and matrix products, float32 parameters, optimizer state and "
            "outputs",
            {"model.dtype": "bfloat16", "model.param_dtype": "float32"},
            "Ours: the fast path of GPUs and TPUs; bfloat16 has float32's range, so no loss "
            "scaling (guided-diffusion's float16 needs one); `runlocal` computes in float32 (CPUs "
            "emulate bfloat16)",
            not_with=_RUNLOCAL,
        ),
        Choice(
            "DDIM sampling, deterministic (eta = 0), 100 steps",
            {"sampling.eta": 0.0, "sampling.num_steps": 100},
            "Ours: the paper samples with DDIM or DDPM; eta = 0 is DDIM's own, deterministic "
            "sampler (Song et al. 2021)",
            not_with=_RUNLOCAL,
        ),
        Choice(
            "each sampling step's estimate of the clean video clipped to [-1, 1]",
            {"sampling.clip_x0": True},
            "As the DDPM and ADM samplers do (clip_denoised=True in guided-diffusion's "
            "scripts/image_sample.py)",
        ),
        Choice(
            f"with `class`: classifier-free guidance, the label dropped for 10% of the training "
            f"examples and a guidance scale of {CLASS_GUIDANCE_SCALE:g} in sampling "
            f"(eps_u + {CLASS_GUIDANCE_SCALE:g} (eps_c - eps_u); w = "
            f"{CLASS_GUIDANCE_SCALE - 1:g} in Ho & Salimans' (1 + w) eps_c - w eps_u)",
            {"sampling.guidance_scale": CLASS_GUIDANCE_SCALE, "diffusion.cond_drop_rate": 0.1},
            "DiT's setting for its class-conditional ImageNet FID (facebookresearch/DiT: "
            "class_dropout_prob 0.1 in models.py, --cfg-scale 1.5 in sample_ddp.py, FID 2.27 in "
            "its README); FVD, like FID, rewards diversity that larger scales trade away (Latte "
            "samples its UCF101 videos for viewing at 7.0, configs/ucf101/ucf101_sample.yaml)",
            only_with=frozenset({"class"}),
        ),
        Choice(
            f"evaluated under the `{protocol}` protocol, real clips from the split the run "
            "trains on",
            {"eval.protocol": protocol},
            "Ours: vfjax/evaluation/protocols.py names the public code each protocol follows",
        ),
    )


def paper_choices(resolution: int) -> str:
    """`benchmark_choices(resolution)` as text: each benchmark config appends it to its
    docstring (one source, so the list stays true)."""
    choices = benchmark_choices(resolution)

    def item(text: str) -> str:
        return textwrap.fill(
            text, width=99, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False
        )

    return "\n".join(
        [
            "",
            "Known from the paper:",
            *(item(c.text) for c in choices if c.source == PAPER),
            "Ours, not the paper's (each with its source or reason):",
            *(item(f"{c.text}. {c.source}.") for c in choices if c.source != PAPER),
            "",
        ]
    )


def paper_benchmark(resolution: int) -> ml_collections.ConfigDict:
    """The training setup the paper-benchmark configs share at `resolution` (64 or 128); the
    choices in it, the paper's and ours, are `benchmark_choices(resolution)`."""
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
# UCF101's action classes (classInd.txt of its official split lists; Soomro et al., 2012).
UCF101_CLASSES = 101

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

    `vdm`: the VDM baseline (the same residual network, no base generator); `image`: the base
    generator alone, trained as an image model on the frames; `class`: class-conditional with
    classifier-free guidance at `config.CLASS_GUIDANCE_SCALE` (data sets with labels);
    `runlocal`: a CPU smoke run on the same data; `pretrained` (with any of the others but
    `runlocal`: there is no 16x16 checkpoint): the base generator is the public
    checkpoint of `PRETRAINED_BASES` at the config's resolution (`pretrained_base`), converted
    once with the command the run's error names."""
    words, _ = parse_arg(arg)
    rest = ",".join(x for x in filter(None, (arg or "").split(",")) if x.strip() != "pretrained")
    c = apply_variants(c, rest or None)
    if c.data.cond == "class" and c.data.name == "ucf101" and not c.model.num_classes:
        # The benchmark's class count, known before any data is read, so that the model can be
        # built and compiled without the data set (`bench tpu`, `bench fit`); a prepared data
        # set of another count is refused by `run_setup.prepare_config`.
        c.model.num_classes = UCF101_CLASSES
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
