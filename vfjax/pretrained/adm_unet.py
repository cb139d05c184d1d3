"""OpenAI's guided-diffusion / improved-diffusion `UNetModel` (ADM) as the base generator.

A `.pt` state dict carries no architecture, so the model flags it was made with (the
`MODEL_FLAGS` of its README, with the `DIFFUSION_FLAGS`) give it. They are read with the
defaults of guided-diffusion's `script_util.py`; improved-diffusion's scripts differ in one,
`rescale_timesteps=True` (the network then sees `t * 1000 / diffusion_steps`), which its presets
pass explicitly. improved-diffusion's attention is guided-diffusion's legacy order.
"""

import shlex

from vfjax import weights as weights_lib
from vfjax.pretrained import mapping
from vfjax.pretrained.mapping import require

_MODEL_DEFAULTS = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "channel_mult": "",
    "class_cond": False,
    "num_classes": 1000,
    "attention_resolutions": "16,8",
    "num_heads": 4,
    "num_head_channels": -1,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": True,
    "dropout": 0.0,
    "resblock_updown": False,
    "use_new_attention_order": False,
    "in_channels": 3,
}
_DIFFUSION_DEFAULTS = {
    "learn_sigma": False,
    "diffusion_steps": 1000,
    "noise_schedule": "linear",
    "rescale_timesteps": False,
    "predict_xstart": False,
}
# Flags that shape neither the network nor what it is given.
_IGNORED = {
    "use_fp16",
    "use_checkpoint",
    "timestep_respacing",
    "use_kl",
    "sigma_small",
    "rescale_learned_sigmas",
}
# guided-diffusion's channel_mult defaults by image size (script_util.create_model); the same as
# improved-diffusion's for 32, 64 and 256.
_MULTS = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}
_RESBLOCK = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def parse_flags(flags: str | dict) -> dict:
    """Model and diffusion flags (`"--image_size 64 --learn_sigma True ..."` or a dict) over
    guided-diffusion's defaults. A flag that is neither is refused (a typo would otherwise
    build another architecture)."""
    given = dict(flags) if isinstance(flags, dict) else {}
    if isinstance(flags, str):
        tokens = shlex.split(flags)
        require(len(tokens) % 2 == 0, f"ADM flags must be '--name value' pairs: {flags!r}")
        for name, value in zip(tokens[::2], tokens[1::2], strict=True):
            require(name.startswith("--"), f"ADM flag {name!r} must start with --")
            given[name[2:]] = value
    defaults = {**_MODEL_DEFAULTS, **_DIFFUSION_DEFAULTS}
    out = dict(defaults)
    for name, value in given.items():
        if name in _IGNORED:
            continue
        require(name in defaults, f"unknown ADM flag --{name} (model flags: {sorted(defaults)})")
        default = defaults[name]
        if isinstance(default, bool):
            value = value if isinstance(value, bool) else str(value).lower() in ("true", "1")
        elif isinstance(default, int | float) and not isinstance(value, int | float):
            value = type(default)(float(value))
        out[name] = value
    return out


def schedule(flags: dict) -> tuple[str, int]:
    """The noise schedule (`vfjax.diffusion.schedules` name) and step count of parsed flags."""
    name = str(flags["noise_schedule"])
    require(name in ("linear", "cosine"), f"noise_schedule {name!r} has no vfjax equivalent")
    return name, int(flags["diffusion_steps"])


def architecture(flags: dict) -> dict:
    """`UNet2DConfig` fields (including the run fields) from parsed flags."""
    require(not flags["predict_xstart"], "predict_xstart models predict x0, not the noise")
    size = int(flags["image_size"])
    mult = flags["channel_mult"]
    if mult in ("", None):
        require(size in _MULTS, f"no default channel_mult for image_size {size}")
        mult = _MULTS[size]
    elif isinstance(mult, str):
        mult = tuple(float(m) for m in mult.split(","))
    mult = tuple(int(m) if float(m).is_integer() else float(m) for m in mult)
    up_heads = flags["num_heads_upsample"]
    require(
        up_heads in (-1, flags["num_heads"]), "num_heads_upsample must equal num_heads (or be -1)"
    )
    # Resolutions, as the flags give them (create_model turns them into downsampling rates).
    resolutions = [int(r) for r in str(flags["attention_resolutions"]).split(",") if r.strip()]
    head_channels = int(flags["num_head_channels"])
    steps = int(flags["diffusion_steps"])
    return {
        "image_size": size,
        "in_channels": int(flags["in_channels"]),
        "out_channels": int(flags["in_channels"]),
        "num_classes": int(flags["num_classes"]) if flags["class_cond"] else 0,
        "channels": int(flags["num_channels"]),
        "channel_mult": mult,
        "num_res_blocks": int(flags["num_res_blocks"]),
        "attn_resolutions": tuple(sorted(set(resolutions), reverse=True)),
        "mid_attention": True,
        "head_dim": head_channels if head_channels > 0 else 64,
        "num_heads": 0 if head_channels > 0 else int(flags["num_heads"]),
        "scale_shift": bool(flags["use_scale_shift_norm"]),
        "resblock_updown": bool(flags["resblock_updown"]),
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0.0,
        "timestep_scale": 1000.0 / steps if flags["rescale_timesteps"] else 1.0,
        "num_groups": 32,
        "norm_eps": 1e-5,
        "dropout": float(flags["dropout"]),
    }


def _prefixes(fields: dict) -> dict[tuple, str]:
    """Our module path -> ADM module prefix, walking the UNet as ADM builds it."""
    prefixes = {("conv_in",): "input_blocks.0.0"}
    levels = len(fields["channel_mult"])
    res_blocks, updown = fields["num_res_blocks"], fields["resblock_updown"]
    block = 1
    for i in range(levels):
        for j in range(res_blocks):
            prefixes[("down_blocks", i, "resnets", j)] = f"input_blocks.{block}.0"
            prefixes[("down_blocks", i, "attentions", j)] = f"input_blocks.{block}.1"
            block += 1
        if i < levels - 1:
            prefixes[("down_blocks", i, "resample")] = f"input_blocks.{block}.0" + (
                "" if updown else ".op"
            )
            block += 1
    prefixes[("mid_resnet_1",)] = "middle_block.0"
    prefixes[("mid_attention",)] = "middle_block.1"
    prefixes[("mid_resnet_2",)] = "middle_block.2"
    block = 0
    for up, i in enumerate(reversed(range(levels))):
        attn = fields["image_size"] // 2**i in fields["attn_resolutions"]
        for j in range(res_blocks + 1):
            prefixes[("up_blocks", up, "resnets", j)] = f"output_blocks.{block}.0"
            prefixes[("up_blocks", up, "attentions", j)] = f"output_blocks.{block}.1"
            if i > 0 and j == res_blocks:
                index = 2 if attn else 1
                prefixes[("up_blocks", up, "resample")] = f"output_blocks.{block}.{index}" + (
                    "" if updown else ".conv"
                )
            block += 1
    prefixes[("conv_norm_out",)] = "out.0"
    prefixes[("conv_out",)] = "out.2"
    prefixes[("time_embedding", "linear_1")] = "time_embed.0"
    prefixes[("time_embedding", "linear_2")] = "time_embed.2"
    prefixes[("class_embedding",)] = "label_emb"
    return prefixes


def _qkv_part(qkv, which: int, heads: int, new_order: bool):
    """One of q, k, v from ADM's fused `qkv` projection ([3C, C, 1] weight or [3C] bias):
    the new order stacks [q | k | v], each head-major; the legacy order [q, k, v] per head."""
    channels = qkv.shape[0] // 3
    d = channels // heads
    rows = qkv.reshape(((3, heads, d) if new_order else (heads, 3, d)) + qkv.shape[1:])
    rows = rows[which] if new_order else rows[:, which]
    return rows.reshape((channels,) + qkv.shape[1:])


def convert(tensors: dict, flags: str | dict) -> tuple[dict, dict]:
    """Architecture fields and parameters of an ADM `UNetModel` state dict and its flags.

    A `learn_sigma` model's output keeps its noise half (the first `in_channels` channels);
    the variance half has no use in the decomposed sampler.
    """
    flags = parse_flags(flags)
    fields = architecture(flags)
    cfg = mapping.base_config(fields)
    prefixes = _prefixes(fields)
    state = mapping.StateDict(tensors, "do the flags (or the preset) match this checkpoint?")

    def attention(prefix, rest, leaf, shape, channels):
        if rest[0] == "group_norm":
            return state.get(f"{prefix}.norm.{mapping.LEAF_NAMES[leaf]}")
        proj = rest[1]  # ('attn', 'to_q' | 'to_k' | 'to_v' | 'to_out')
        name = f"{prefix}.{'proj_out' if proj == 'to_out' else 'qkv'}.{mapping.LEAF_NAMES[leaf]}"
        value = state.get(name)
        if proj != "to_out":
            heads = cfg.num_heads or channels // min(cfg.head_dim, channels)
            which = ("to_q", "to_k", "to_v").index(proj)
            value = _qkv_part(value, which, heads, bool(flags["use_new_attention_order"]))
        return mapping.torch_layout(value, shape, name)

    def lookup(path, shape):
        *module, leaf = path
        for depth in range(len(module), 0, -1):
            if tuple(module[:depth]) in prefixes:
                prefix, rest = prefixes[tuple(module[:depth])], module[depth:]
                break
        else:
            raise mapping.ConversionError(f"no ADM weight for {'/'.join(map(str, path))}")
        if "attentions" in module or module[0] == "mid_attention":
            return attention(prefix, rest, leaf, shape, shape[-1])
        if rest and rest[0] in _RESBLOCK:
            prefix = f"{prefix}.{_RESBLOCK[rest[0]]}"
        name = f"{prefix}.{mapping.LEAF_NAMES[leaf]}"
        value = state.get(name)
        if module == ["conv_out"]:
            value = value[: cfg.out_channels]  # learn_sigma: keep the noise half.
        if module == ["class_embedding"]:
            value = mapping.with_null_class(value)
        return mapping.torch_layout(value, shape, name, table=module == ["class_embedding"])

    params = mapping.fill(cfg, lookup)
    state.require_all_used()
    return fields, params


def load_state_dict(path: str) -> dict:
    """An ADM `.pt` file as float32 NumPy arrays (`torch.load(weights_only=True)`)."""
    weights_lib.require_file(path, "ADM checkpoint")
    return weights_lib.load_torch_state_dict(path)
