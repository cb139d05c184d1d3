"""diffusers' `UNet2DModel` as the base generator: its `config.json` read into `UNet2DConfig`
fields, its weights renamed onto `UNet2D` (the two share a layout by design).

A diffusers folder holds `config.json` and `diffusion_pytorch_model.safetensors` (or the older
`.bin`; both are read without running code, `vfjax.weights`). The google/ddpm-* checkpoints keep
the names of diffusers' first attention blocks (`query`, `key`, `value`, `proj_attn`), which are
read as `to_q`, `to_k`, `to_v`, `to_out.0`, as diffusers itself does.
"""

import os

from vfjax import fileio
from vfjax import weights as weights_lib
from vfjax.pretrained import mapping
from vfjax.pretrained.mapping import require

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

# Block types that map, and whether each holds attention.
_DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True, "ResnetDownsampleBlock2D": False}
_UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True, "ResnetUpsampleBlock2D": False}
_DEPRECATED_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _resample_kind(block_type: str, attn_kind: str) -> str:
    if block_type.startswith("Resnet"):
        return "resnet"
    return attn_kind if block_type.startswith("Attn") else "conv"


def architecture(hf: dict) -> dict:
    """`UNet2DConfig` fields (including the run fields) from a `UNet2DModel` config.json."""
    name = hf.get("_class_name", "UNet2DModel")
    require(name == "UNet2DModel", f"expected a diffusers UNet2DModel, got {name}")
    for field, allowed in (
        ("act_fn", ("silu",)),
        ("time_embedding_type", ("positional",)),
        ("center_input_sample", (False,)),
        ("class_embed_type", (None,)),
        ("mid_block_type", ("UNetMidBlock2D",)),
        ("downsample_padding", (1, 0)),
        ("mid_block_scale_factor", (1, 1.0)),
        ("resnet_time_scale_shift", ("default", "scale_shift")),
    ):
        value = hf.get(field, allowed[0])
        require(value in allowed, f"diffusers {field}={value!r} is not supported ({allowed}).")
    channels = list(hf["block_out_channels"])
    require(
        all(c % channels[0] == 0 for c in channels),
        f"block_out_channels {channels} must be multiples of the first",
    )
    emb_dim = hf.get("time_embedding_dim") or 4 * channels[0]
    require(emb_dim == 4 * channels[0], f"time_embedding_dim {emb_dim} must be 4 x channels[0]")
    down, up = list(hf["down_block_types"]), list(hf["up_block_types"])
    require(
        set(down) <= set(_DOWN_BLOCKS) and set(up) <= set(_UP_BLOCKS),
        f"block types {down} / {up}: only {sorted(_DOWN_BLOCKS)} and {sorted(_UP_BLOCKS)} map",
    )
    attn_down = [_DOWN_BLOCKS[d] for d in down]
    attn_up = [_UP_BLOCKS[u] for u in up][::-1]
    require(attn_up == attn_down, f"up_block_types {up} must mirror down_block_types {down}")
    # The resampling of each level: AttnDown/UpBlock2D follow down/upsample_type, DownBlock2D and
    # UpBlock2D always convolve, the Resnet*sampleBlock2D always use a residual block.
    kinds = {_resample_kind(kind, hf.get("downsample_type", "conv")) for kind in down[:-1]} | {
        _resample_kind(kind, hf.get("upsample_type", "conv")) for kind in up[:-1]
    }
    require(
        len(kinds) <= 1 and kinds <= {"conv", "resnet"},
        f"resampling {sorted(kinds)}: every level must resample the same way ('conv' or 'resnet')",
    )
    attn_groups = hf.get("attn_norm_num_groups")
    require(
        attn_groups in (None, hf.get("norm_num_groups", 32)),
        "attn_norm_num_groups must equal norm_num_groups",
    )
    require(
        attn_groups is not None or hf.get("resnet_time_scale_shift") != "scale_shift",
        "with resnet_time_scale_shift='scale_shift' and no attn_norm_num_groups, diffusers "
        "builds the middle attention without GroupNorm, which the base generator has no "
        "option for",
    )
    size = hf.get("sample_size") or 64
    size = size[0] if isinstance(size, list | tuple) else size
    head_dim = hf.get("attention_head_dim", 8)
    return {
        "image_size": int(size),
        "in_channels": int(hf.get("in_channels", 3)),
        "out_channels": int(hf.get("out_channels", 3)),
        "num_classes": int(hf.get("num_class_embeds") or 0),
        "channels": channels[0],
        "channel_mult": tuple(c // channels[0] for c in channels),
        "num_res_blocks": int(hf.get("layers_per_block", 2)),
        "attn_resolutions": tuple(size // 2**i for i, attn in enumerate(attn_down) if attn),
        "mid_attention": bool(hf.get("add_attention", True)),
        # attention_head_dim None: one head as wide as the layer.
        "head_dim": int(head_dim) if head_dim else 64,
        "num_heads": 0 if head_dim else 1,
        "scale_shift": hf.get("resnet_time_scale_shift", "default") == "scale_shift",
        "resblock_updown": kinds == {"resnet"},
        # Residual-block resampling has no padding to choose.
        "downsample_padding": int(hf.get("downsample_padding", 1)) if kinds != {"resnet"} else 1,
        "flip_sin_to_cos": bool(hf.get("flip_sin_to_cos", True)),
        "freq_shift": float(hf.get("freq_shift", 0)),
        "timestep_scale": 1.0,
        "num_groups": int(hf.get("norm_num_groups", 32)),
        "norm_eps": float(hf.get("norm_eps", 1e-5)),
        "dropout": float(hf.get("dropout", 0.0)),
    }


def state_dict_name(path: tuple) -> str:
    """Our parameter path -> the diffusers state-dict key."""
    *modules, leaf = path
    mapping_ = {
        "mid_resnet_1": ["mid_block", "resnets", 0],
        "mid_resnet_2": ["mid_block", "resnets", 1],
        "mid_attention": ["mid_block", "attentions", 0],
    }
    parts = []
    # Our AttentionBlock nests q/k/v/out under 'attn'; diffusers keeps them flat.
    for m in (m for m in modules if m != "attn"):
        if m in mapping_:
            parts += mapping_[m]
        elif m == "resample":
            parts += ["downsamplers" if modules[0] == "down_blocks" else "upsamplers", 0]
        elif m == "to_out":
            parts += ["to_out", 0]
        else:
            parts.append(m)
    return ".".join(map(str, parts + [mapping.LEAF_NAMES[leaf]]))


def _deprecated_name(name: str) -> str:
    """The name of an attention projection in diffusers' first checkpoints, else `name`."""
    for new, old in _DEPRECATED_ATTENTION.items():
        if f".{new}." in name:
            return name.replace(f".{new}.", f".{old}.")
    return name


def convert(fields: dict, tensors: dict) -> dict:
    """Parameters of the base generator with `fields` from a `UNet2DModel` state dict. A class
    embedding gains our null row."""
    state = mapping.StateDict(tensors, "is config.json the one of these weights?")

    def lookup(path, shape):
        name = state_dict_name(path)
        if name not in state and _deprecated_name(name) in state:
            name = _deprecated_name(name)
        value = state.get(name)
        if path[0] == "class_embedding":
            value = mapping.with_null_class(value)
        return mapping.torch_layout(value, shape, name, table=path[0] == "class_embedding")

    params = mapping.fill(mapping.base_config(fields), lookup)
    state.require_all_used()
    return params


def read_config(folder) -> dict:
    """The `config.json` of a diffusers model folder."""
    path = fileio.join(folder, "config.json")
    require(path.exists(), f"{folder} has no config.json (a diffusers UNet2DModel folder?)")
    return fileio.read_json(path)


def weights_path(src: str) -> str:
    """The weights file of a diffusers folder (or `src` itself when it is a file)."""
    if os.path.isfile(src):
        return src
    require(os.path.isdir(src), f"{src} is neither a diffusers folder nor a weights file")
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(src, name)):
            return os.path.join(src, name)
    others = sorted(n for n in os.listdir(src) if n.endswith((".safetensors", ".bin")))
    require(len(others) == 1, f"{src} holds no single weights file ({WEIGHT_FILES}): {others}")
    return os.path.join(src, others[0])


def read_weights(path: str) -> dict:
    """A diffusers weights file as float32 NumPy arrays, read without running code."""
    weights_lib.require_file(path, "diffusers weights file")
    if path.endswith(".safetensors"):
        return weights_lib.load_safetensors(path)
    return weights_lib.load_torch_state_dict(path)
