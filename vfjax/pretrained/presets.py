"""The published image-diffusion checkpoints that convert onto the base generator, by name.

Each preset records the architecture exactly as its authors published it (a diffusers
`config.json`, or the README's `MODEL_FLAGS` with its `DIFFUSION_FLAGS`), where that was read, the
checkpoint file, and what a run needs to match it: image size, channels, classes, the noise
schedule and its number of steps. `config_overrides(name)` gives all of it as config fields:

    python -m vfjax.pretrained adm --preset=guided-diffusion/256x256_diffusion_uncond \\
        --src=256x256_diffusion_uncond.pt --out=runs/base_adm256
"""

import dataclasses
from typing import Any

from vfjax.pretrained import adm_unet, diffusers_unet, mapping


@dataclasses.dataclass(frozen=True)
class Preset:
    """A published checkpoint: where it comes from and the architecture it needs."""

    name: str
    format: str  # 'diffusers' or 'adm'
    files: tuple[str, ...]  # the checkpoint's file name(s), as published
    architecture: Any  # diffusers: the config.json dict; adm: the MODEL_FLAGS string
    image_size: int
    channels: int
    num_classes: int  # 0: unconditional
    schedule: str  # 'linear' or 'cosine' (vfjax.diffusion.schedules)
    num_timesteps: int
    source: str  # where the architecture was published
    url: str  # where the checkpoint is downloaded
    diffusion_flags: str = ""  # adm: the DIFFUSION_FLAGS, where published apart

    @property
    def flags(self) -> str:
        """adm: model and diffusion flags together, as `adm_unet.convert` takes them."""
        return f"{self.architecture} {self.diffusion_flags}".strip()

    def fields(self) -> dict:
        """The base generator's `UNet2DConfig` fields (including the run fields)."""
        if self.format == "diffusers":
            return diffusers_unet.architecture(self.architecture)
        return adm_unet.architecture(adm_unet.parse_flags(self.flags))


# ------------------------------------------------------------- diffusers: google/ddpm-*

# The config.json of Ho et al.'s DDPM models as diffusers publishes them (architecture fields;
# identical in the EMA and non-EMA repositories). `downsample_padding: 0` is DDPM's
# bottom/right-only pad before each stride-2 convolution.
_DDPM_COMMON = {
    "_class_name": "UNet2DModel",
    "act_fn": "silu",
    "attention_head_dim": None,
    "center_input_sample": False,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "time_embedding_type": "positional",
}
_DDPM_CIFAR10 = {
    **_DDPM_COMMON,
    "block_out_channels": [128, 256, 256, 256],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "sample_size": 32,
}
_DDPM_256 = {
    **_DDPM_COMMON,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    "sample_size": 256,
}


def _google(repo: str, config: dict) -> Preset:
    hub = f"https://huggingface.co/google/{repo}"
    return Preset(
        name=f"google/{repo}",
        format="diffusers",
        files=("config.json", "diffusion_pytorch_model.bin"),
        architecture=config,
        image_size=config["sample_size"],
        channels=3,
        num_classes=0,
        schedule="linear",  # scheduler_config.json: linear betas 1e-4 .. 0.02
        num_timesteps=1000,
        source=f"{hub}/blob/main/config.json",
        url=f"{hub}/tree/main",
    )


_DIFFUSERS = [
    _google("ddpm-cifar10-32", _DDPM_CIFAR10),
    *(
        _google(f"ddpm-{ema}{data}-256", _DDPM_256)
        for ema in ("", "ema-")
        for data in ("celebahq", "church", "bedroom", "cat")
    ),
]

# ---------------------------------------------- adm: openai/guided-diffusion (jul-2021)

_GUIDED_README = "https://github.com/openai/guided-diffusion/blob/main/README.md"
_GUIDED_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
_GUIDED_256 = (
    "--attention_resolutions 32,16,8 --class_cond {cond} --diffusion_steps 1000 --image_size 256 "
    "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 "
    "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True"
)
_GUIDED_LSUN = (
    "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --dropout {drop} "
    "--image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 "
    "--num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True "
    "--use_scale_shift_norm True"
)
_GUIDED = {
    "64x64_diffusion": (
        "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 "
        "--image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192 "
        "--num_head_channels 64 --num_res_blocks 3 --resblock_updown True "
        "--use_new_attention_order True --use_fp16 True --use_scale_shift_norm True"
    ),
    "128x128_diffusion": (
        "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 128 "
        "--learn_sigma True --noise_schedule linear --num_channels 256 --num_heads 4 "
        "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True"
    ),
    "256x256_diffusion": _GUIDED_256.format(cond=True),
    "256x256_diffusion_uncond": _GUIDED_256.format(cond=False),
    "512x512_diffusion": (
        "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 512 "
        "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 "
        "--num_res_blocks 2 --resblock_updown True --use_fp16 False --use_scale_shift_norm True"
    ),
    "lsun_bedroom": _GUIDED_LSUN.format(drop=0.1),
    "lsun_cat": _GUIDED_LSUN.format(drop=0.1),
    "lsun_horse": _GUIDED_LSUN.format(drop=0.1),
    "lsun_horse_nodropout": _GUIDED_LSUN.format(drop=0.0),
}

# ------------------------------------------ adm: openai/improved-diffusion (march-2021)

_IMPROVED_README = "https://github.com/openai/improved-diffusion/blob/main/README.md"
_IMPROVED_URL = "https://openaipublic.blob.core.windows.net/diffusion/march-2021/"
# improved-diffusion's scripts default to rescale_timesteps=True (guided-diffusion's to False):
# made explicit here, where the README's DIFFUSION_FLAGS leave it at that default.
_RESCALED = " --rescale_timesteps True"
_IMAGENET64 = "--image_size 64 --num_channels 128 --num_res_blocks 3 --learn_sigma True"
_CIFAR10 = "--image_size 32 --num_channels 128 --num_res_blocks 3 --learn_sigma True --dropout 0.3"
_LSUN = (
    "--image_size 256 --num_channels 128 --num_res_blocks 2 --num_heads 1 --learn_sigma True "
    "--use_scale_shift_norm False --attention_resolutions 16"
)
_LSUN_DIFFUSION = (
    "--diffusion_steps 1000 --noise_schedule linear --rescale_learned_sigmas False "
    "--rescale_timesteps False"
)
_IMPROVED = {
    "imagenet64_uncond_100M_1500K": (
        _IMAGENET64,
        "--diffusion_steps 4000 --noise_schedule cosine" + _RESCALED,
    ),
    "cifar10_uncond_50M_500K": (
        _CIFAR10,
        "--diffusion_steps 4000 --noise_schedule cosine" + _RESCALED,
    ),
    "imagenet64_cond_270M_250K": (
        "--image_size 64 --num_channels 192 --num_res_blocks 3 --learn_sigma True "
        "--class_cond True",
        "--diffusion_steps 4000 --noise_schedule cosine --rescale_learned_sigmas False "
        "--rescale_timesteps False",
    ),
    "lsun_uncond_100M_1200K_bs128": (_LSUN, _LSUN_DIFFUSION),
    "lsun_uncond_100M_2400K_bs64": (_LSUN, _LSUN_DIFFUSION + " --use_scale_shift_norm False"),
    "imagenet64_uncond_vlb_100M_1500K": (
        _IMAGENET64,
        "--diffusion_steps 4000 --noise_schedule cosine --use_kl True" + _RESCALED,
    ),
    "cifar10_uncond_vlb_50M_500K": (
        _CIFAR10,
        "--diffusion_steps 4000 --noise_schedule cosine --use_kl True" + _RESCALED,
    ),
}


def _adm(name: str, model_flags: str, diffusion_flags: str, source: str, url: str) -> Preset:
    flags = adm_unet.parse_flags(f"{model_flags} {diffusion_flags}")
    schedule, steps = adm_unet.schedule(flags)
    fields = adm_unet.architecture(flags)
    return Preset(
        name=name,
        format="adm",
        files=(url.rsplit("/", 1)[-1],),
        architecture=model_flags,
        diffusion_flags=diffusion_flags,
        image_size=fields["image_size"],
        channels=fields["in_channels"],
        num_classes=fields["num_classes"],
        schedule=schedule,
        num_timesteps=steps,
        source=source,
        url=url,
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        *_DIFFUSERS,
        *(
            _adm(f"guided-diffusion/{n}", f, "", _GUIDED_README, f"{_GUIDED_URL}{n}.pt")
            for n, f in _GUIDED.items()
        ),
        *(
            _adm(f"improved-diffusion/{n}", m, d, _IMPROVED_README, f"{_IMPROVED_URL}{n}.pt")
            for n, (m, d) in _IMPROVED.items()
        ),
    ]
}


def get(name: str) -> Preset:
    """The preset `name`, or a one-line error listing them."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def config_overrides(preset: str | Preset) -> dict[str, Any]:
    """Config overrides for a run whose base generator is this checkpoint: every
    `model.base.*` architecture field, `diffusion.schedule`, `diffusion.num_timesteps`,
    `data.resolution` and `data.channels` (`preset.num_classes` says which classes it knows)."""
    preset = get(preset) if isinstance(preset, str) else preset
    return mapping.run_overrides(preset.fields(), preset.schedule, preset.num_timesteps)
