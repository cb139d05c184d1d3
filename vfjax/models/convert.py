"""Public image-diffusion checkpoints as the base generator.

Two formats convert onto `UNet2D` by renaming and transposing, with no retraining:

- diffusers' `UNet2DModel`: a folder with `config.json` and `diffusion_pytorch_model.safetensors`
  (the `unet/` folder of the google/ddpm-* pipelines, for example);
- OpenAI's guided-diffusion / improved-diffusion `UNetModel` (ADM): a `.pt` state dict and the
  model flags it was made with (the `MODEL_FLAGS` string of that repository's README).

Each converter returns the base generator's architecture (`UNet2DConfig` fields) and its
parameters. `python -m vfjax.models.convert` writes both where a VideoFusion run picks them up:

    python -m vfjax.models.convert diffusers --src=ddpm-cifar10/unet --out=runs/base_cifar
    python -m vfjax.models.convert adm --src=64x64_diffusion.pt --out=runs/base_adm64 \\
        --flags="--attention_resolutions 32,16,8 --num_channels 192 --num_head_channels 64 ..."
    python -m vfjax.main --config=... --config.init.base_checkpoint=runs/base_cifar \\
        $(cat runs/base_cifar/base_flags.txt)

`OUT/checkpoints/0/` holds the parameters in the layout `init.base_checkpoint` reads, and
`OUT/base_config.json` / `OUT/base_flags.txt` the architecture as config overrides.
What does not map (other block types, non-SiLU activations, Fourier time embeddings, ...) is
refused with a one-line error naming the field.
"""

import argparse
import json
import os
import shlex
import sys

import jax
import numpy as np
from flax import nnx

from vfjax.models import init as init_lib
from vfjax.models.unet2d import UNet2D, UNet2DConfig

# Fields a converted checkpoint sets; the rest of UNet2DConfig keeps its default.
_ARCH_FIELDS = (
    "channels",
    "channel_mult",
    "num_res_blocks",
    "attn_resolutions",
    "mid_attention",
    "head_dim",
    "num_heads",
    "scale_shift",
    "resblock_updown",
    "flip_sin_to_cos",
    "freq_shift",
    "num_groups",
    "norm_eps",
    "dropout",
)
# Fields the run sets from elsewhere (data.resolution, data.channels, model.num_classes).
_RUN_FIELDS = ("image_size", "in_channels", "out_channels", "num_classes")


class ConversionError(ValueError):
    """A checkpoint whose architecture the base generator cannot mirror."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConversionError(message)


def _param_paths(cfg: UNet2DConfig) -> dict[tuple, jax.ShapeDtypeStruct]:
    """Every parameter of `UNet2D(cfg)`: path (tuple of str/int) -> abstract array."""
    _, abstract = init_lib.abstract_model(lambda rngs: UNet2D(cfg, rngs=rngs))
    flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(abstract))[0]
    return {tuple(_key(k) for k in path): leaf for path, leaf in flat}


def _key(k):
    for attr in ("key", "idx"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return str(k)


def _unflatten(flat: dict[tuple, np.ndarray]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _torch_layout(value: np.ndarray, ours: jax.ShapeDtypeStruct, source: str) -> np.ndarray:
    """A PyTorch weight in our layout: conv [O, I, kh, kw] -> [kh, kw, I, O], 1x1 Conv1d
    [O, I, 1] and linear [O, I] -> [I, O]; vectors and embedding tables as they are."""
    value = np.asarray(value, np.float32)
    if value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 3 and value.shape[-1] == 1:  # Conv1d 1x1 (ADM attention projections).
        value = value[:, :, 0].T
    elif value.ndim == 2 and not source.endswith(("label_emb.weight", "class_embedding.weight")):
        value = value.T
    _require(
        tuple(value.shape) == tuple(ours.shape),
        f"{source}: shape {tuple(value.shape)} does not fit the base generator's "
        f"{tuple(ours.shape)}; is the architecture read from the right config?",
    )
    return value


_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight"}


def _fill(cfg: UNet2DConfig, lookup) -> dict:
    """Parameters of `UNet2D(cfg)`, each taken from `lookup(path, abstract) -> array`."""
    flat = {}
    for path, abstract in _param_paths(cfg).items():
        flat[path] = lookup(path, abstract).astype(np.float32)
    return _unflatten(flat)


# ------------------------------------------------------------------------------- diffusers


# Block types that map, and whether each holds attention.
_DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True, "ResnetDownsampleBlock2D": False}
_UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True, "ResnetUpsampleBlock2D": False}


def _resample_kind(block_type: str, attn_kind: str) -> str:
    if block_type.startswith("Resnet"):
        return "resnet"
    return attn_kind if block_type.startswith("Attn") else "conv"


def _diffusers_arch(hf: dict) -> dict:
    """`UNet2DConfig` fields from a diffusers `UNet2DModel` config.json."""
    name = hf.get("_class_name", "UNet2DModel")
    _require(name == "UNet2DModel", f"expected a diffusers UNet2DModel, got {name}")
    for field, allowed in (
        ("act_fn", ("silu",)),
        ("time_embedding_type", ("positional",)),
        ("center_input_sample", (False,)),
        ("class_embed_type", (None,)),
        ("mid_block_type", ("UNetMidBlock2D",)),
        ("downsample_padding", (1,)),
        ("mid_block_scale_factor", (1, 1.0)),
        ("resnet_time_scale_shift", ("default", "scale_shift")),
    ):
        value = hf.get(field, allowed[0])
        _require(value in allowed, f"diffusers {field}={value!r} is not supported ({allowed}).")
    channels = list(hf["block_out_channels"])
    _require(
        all(c % channels[0] == 0 for c in channels),
        f"block_out_channels {channels} must be multiples of the first",
    )
    emb_dim = hf.get("time_embedding_dim") or 4 * channels[0]
    _require(emb_dim == 4 * channels[0], f"time_embedding_dim {emb_dim} must be 4 x channels[0]")
    down, up = list(hf["down_block_types"]), list(hf["up_block_types"])
    _require(
        set(down) <= set(_DOWN_BLOCKS) and set(up) <= set(_UP_BLOCKS),
        f"block types {down} / {up}: only {sorted(_DOWN_BLOCKS)} and {sorted(_UP_BLOCKS)} map",
    )
    attn_down = [_DOWN_BLOCKS[d] for d in down]
    attn_up = [_UP_BLOCKS[u] for u in up][::-1]
    _require(attn_up == attn_down, f"up_block_types {up} must mirror down_block_types {down}")
    # The resampling of each level: AttnDown/UpBlock2D follow down/upsample_type, DownBlock2D and
    # UpBlock2D always convolve, the Resnet*sampleBlock2D always use a residual block.
    kinds = {_resample_kind(kind, hf.get("downsample_type", "conv")) for kind in down[:-1]} | {
        _resample_kind(kind, hf.get("upsample_type", "conv")) for kind in up[:-1]
    }
    _require(
        len(kinds) <= 1 and kinds <= {"conv", "resnet"},
        f"resampling {sorted(kinds)}: every level must resample the same way ('conv' or 'resnet')",
    )
    attn_groups = hf.get("attn_norm_num_groups")
    _require(
        attn_groups in (None, hf.get("norm_num_groups", 32)),
        "attn_norm_num_groups must equal norm_num_groups",
    )
    _require(
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
        "flip_sin_to_cos": bool(hf.get("flip_sin_to_cos", True)),
        "freq_shift": float(hf.get("freq_shift", 0)),
        "num_groups": int(hf.get("norm_num_groups", 32)),
        "norm_eps": float(hf.get("norm_eps", 1e-5)),
        "dropout": float(hf.get("dropout", 0.0)),
    }


def _diffusers_name(path: tuple) -> str:
    """Our parameter path -> the diffusers state-dict key."""
    *modules, leaf = path
    mapping = {
        "mid_resnet_1": ["mid_block", "resnets", 0],
        "mid_resnet_2": ["mid_block", "resnets", 1],
        "mid_attention": ["mid_block", "attentions", 0],
    }
    parts = []
    # Our AttentionBlock nests q/k/v/out under 'attn'; diffusers keeps them flat.
    for m in (m for m in modules if m != "attn"):
        if m in mapping:
            parts += mapping[m]
        elif m == "resample":
            parts += ["downsamplers" if modules[0] == "down_blocks" else "upsamplers", 0]
        elif m == "to_out":
            parts += ["to_out", 0]
        else:
            parts.append(m)
    return ".".join(map(str, parts + [_LEAF_NAMES[leaf]]))


def from_diffusers(folder: str) -> tuple[dict, dict]:
    """Architecture and parameters of a diffusers `UNet2DModel` folder.

    Returns:
      `(fields, params)`: every `UNet2DConfig` field the checkpoint determines (including
      `image_size`, `in_channels`, `out_channels`, `num_classes`) and the parameters as the pure
      dict `UNet2D` holds. A class embedding gains our null row (zeros: no class).
    """
    config_path = os.path.join(folder, "config.json")
    _require(os.path.isfile(config_path), f"{folder} has no config.json (a diffusers folder?)")
    with open(config_path) as f:
        fields = _diffusers_arch(json.load(f))
    state = _read_safetensors(folder)
    cfg = UNet2DConfig(**fields, dtype="float32")

    def lookup(path, abstract):
        name = _diffusers_name(path)
        _require(
            name in state, f"the checkpoint lacks {name} (needed for {'/'.join(map(str, path))})"
        )
        value = state[name]
        if path[0] == "class_embedding":
            value = np.concatenate([value, np.zeros_like(value[:1])])
        return _torch_layout(value, abstract, name)

    return fields, _fill(cfg, lookup)


def _read_safetensors(folder: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    names = [n for n in os.listdir(folder) if n.endswith(".safetensors")]
    _require(len(names) >= 1, f"{folder} holds no .safetensors weights")
    preferred = "diffusion_pytorch_model.safetensors"
    name = preferred if preferred in names else sorted(names)[0]
    return {k: np.asarray(v, np.float32) for k, v in load_file(os.path.join(folder, name)).items()}


# ------------------------------------------------------------------------------------- ADM

_ADM_DEFAULTS = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "channel_mult": "",
    "learn_sigma": False,
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
# guided-diffusion's channel_mult defaults by image size (script_util.create_model).
_ADM_MULTS = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}


def parse_adm_flags(flags: str | dict) -> dict:
    """guided-diffusion's model flags (`"--image_size 64 --learn_sigma True ..."` or a dict)."""
    given = dict(flags) if isinstance(flags, dict) else {}
    if isinstance(flags, str):
        tokens = shlex.split(flags)
        _require(len(tokens) % 2 == 0, f"ADM flags must be '--name value' pairs: {flags!r}")
        for name, value in zip(tokens[::2], tokens[1::2], strict=True):
            _require(name.startswith("--"), f"ADM flag {name!r} must start with --")
            given[name[2:]] = value
    out = dict(_ADM_DEFAULTS)
    for name, value in given.items():
        if name not in _ADM_DEFAULTS:
            continue  # Diffusion flags (noise_schedule, use_fp16, ...) do not shape the network.
        default = _ADM_DEFAULTS[name]
        if isinstance(default, bool):
            value = value if isinstance(value, bool) else str(value).lower() in ("true", "1")
        elif isinstance(default, int | float) and not isinstance(value, int | float):
            value = type(default)(float(value))
        out[name] = value
    return out


def _adm_arch(flags: dict) -> dict:
    size = int(flags["image_size"])
    mult = flags["channel_mult"]
    if mult in ("", None):
        _require(size in _ADM_MULTS, f"no default channel_mult for image_size {size}")
        mult = _ADM_MULTS[size]
    elif isinstance(mult, str):
        mult = tuple(float(m) for m in mult.split(","))
    _require(
        float(mult[0]) == 1.0 and all(float(m).is_integer() for m in mult),
        f"channel_mult {mult}: the base generator needs whole multipliers starting at 1",
    )
    up_heads = flags["num_heads_upsample"]
    _require(
        up_heads in (-1, flags["num_heads"]),
        "num_heads_upsample must equal num_heads (or be -1)",
    )
    # Resolutions, as the flags give them (create_model turns them into downsampling rates).
    resolutions = [int(r) for r in str(flags["attention_resolutions"]).split(",") if r.strip()]
    head_channels = int(flags["num_head_channels"])
    return {
        "image_size": size,
        "in_channels": int(flags["in_channels"]),
        "out_channels": int(flags["in_channels"]),
        "num_classes": int(flags["num_classes"]) if flags["class_cond"] else 0,
        "channels": int(flags["num_channels"]),
        "channel_mult": tuple(int(m) for m in mult),
        "num_res_blocks": int(flags["num_res_blocks"]),
        "attn_resolutions": tuple(sorted(set(resolutions), reverse=True)),
        "mid_attention": True,
        "head_dim": head_channels if head_channels > 0 else 64,
        "num_heads": 0 if head_channels > 0 else int(flags["num_heads"]),
        "scale_shift": bool(flags["use_scale_shift_norm"]),
        "resblock_updown": bool(flags["resblock_updown"]),
        "flip_sin_to_cos": True,
        "freq_shift": 0.0,
        "num_groups": 32,
        "norm_eps": 1e-5,
        "dropout": float(flags["dropout"]),
    }


_ADM_RESBLOCK = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _adm_prefixes(cfg: UNet2DConfig) -> dict[tuple, str]:
    """Our module path -> ADM module prefix, walking the UNet as ADM builds it."""
    prefixes = {("conv_in",): "input_blocks.0.0"}
    levels = len(cfg.channel_mult)
    block = 1
    for i in range(levels):
        for j in range(cfg.num_res_blocks):
            prefixes[("down_blocks", i, "resnets", j)] = f"input_blocks.{block}.0"
            prefixes[("down_blocks", i, "attentions", j)] = f"input_blocks.{block}.1"
            block += 1
        if i < levels - 1:
            suffix = "0" if cfg.resblock_updown else "0.op"
            prefixes[("down_blocks", i, "resample")] = f"input_blocks.{block}.{suffix}"
            block += 1
    prefixes[("mid_resnet_1",)] = "middle_block.0"
    prefixes[("mid_attention",)] = "middle_block.1"
    prefixes[("mid_resnet_2",)] = "middle_block.2"
    block = 0
    for up, i in enumerate(reversed(range(levels))):
        attn = cfg.image_size // 2**i in cfg.attn_resolutions
        for j in range(cfg.num_res_blocks + 1):
            prefixes[("up_blocks", up, "resnets", j)] = f"output_blocks.{block}.0"
            prefixes[("up_blocks", up, "attentions", j)] = f"output_blocks.{block}.1"
            if i > 0 and j == cfg.num_res_blocks:
                index = 2 if attn else 1
                suffix = "" if cfg.resblock_updown else ".conv"
                prefixes[("up_blocks", up, "resample")] = f"output_blocks.{block}.{index}{suffix}"
            block += 1
    prefixes[("conv_norm_out",)] = "out.0"
    prefixes[("conv_out",)] = "out.2"
    prefixes[("time_embedding", "linear_1")] = "time_embed.0"
    prefixes[("time_embedding", "linear_2")] = "time_embed.2"
    prefixes[("class_embedding",)] = "label_emb"
    return prefixes


def from_adm(state: dict[str, np.ndarray], flags: str | dict) -> tuple[dict, dict]:
    """Architecture and parameters of a guided-diffusion / improved-diffusion `UNetModel`.

    Args:
      state: its state dict as NumPy arrays (`load_adm_state_dict`).
      flags: the model flags it was created with (see `parse_adm_flags`).

    A `learn_sigma` model's output keeps its noise half (the first `in_channels` channels);
    the variance half has no use in the decomposed sampler.
    """
    flags = parse_adm_flags(flags)
    fields = _adm_arch(flags)
    cfg = UNet2DConfig(**fields, dtype="float32")
    prefixes = _adm_prefixes(cfg)
    new_order = bool(flags["use_new_attention_order"])

    def get(name):
        _require(name in state, f"the checkpoint lacks {name}: do the flags match it?")
        return np.asarray(state[name], np.float32)

    def lookup(path, abstract):
        *module, leaf = path
        for depth in range(len(module), 0, -1):
            if tuple(module[:depth]) in prefixes:
                prefix, rest = prefixes[tuple(module[:depth])], module[depth:]
                break
        else:
            raise ConversionError(f"no ADM weight for {'/'.join(map(str, path))}")
        suffix = _LEAF_NAMES[leaf]
        if "attentions" in module or module[0] == "mid_attention":
            return _adm_attention(get, prefix, rest, leaf, abstract, new_order, cfg)
        if rest and rest[0] in _ADM_RESBLOCK:
            prefix = f"{prefix}.{_ADM_RESBLOCK[rest[0]]}"
        value = get(f"{prefix}.{suffix}")
        if module == ["conv_out"]:
            value = value[: cfg.out_channels]  # learn_sigma: keep the noise half.
        if module == ["class_embedding"]:
            value = np.concatenate([value, np.zeros_like(value[:1])])
        return _torch_layout(value, abstract, f"{prefix}.{suffix}")

    return fields, _fill(cfg, lookup)


def _adm_attention(get, prefix, rest, leaf, abstract, new_order, cfg):
    """ADM's fused qkv 1x1 convolution split into to_q / to_k / to_v."""
    suffix = _LEAF_NAMES[leaf]
    if rest[0] == "group_norm":
        return get(f"{prefix}.norm.{suffix}")
    proj = rest[1]  # ('attn', 'to_q' | 'to_k' | 'to_v' | 'to_out')
    if proj == "to_out":
        return _torch_layout(get(f"{prefix}.proj_out.{suffix}"), abstract, f"{prefix}.proj_out")
    qkv = get(f"{prefix}.qkv.{suffix}")  # [3C, C, 1] or [3C]
    channels = qkv.shape[0] // 3
    heads = cfg.num_heads or channels // min(cfg.head_dim, channels)
    which = ("to_q", "to_k", "to_v").index(proj)
    d = channels // heads
    # New order: [q | k | v], each head-major; legacy: per head [q, k, v].
    rows = qkv.reshape(((3, heads, d) if new_order else (heads, 3, d)) + qkv.shape[1:])
    rows = rows[which] if new_order else rows[:, which]
    rows = rows.reshape((channels,) + qkv.shape[1:])
    return _torch_layout(rows, abstract, f"{prefix}.qkv")


def load_adm_state_dict(path: str) -> dict[str, np.ndarray]:
    """A guided-diffusion `.pt` file as NumPy arrays (`torch.load(weights_only=True)`)."""
    from vfjax.evaluation import weights as weights_lib

    weights_lib.require_file(path, "ADM checkpoint")
    return weights_lib.load_torch_state_dict(path)


# -------------------------------------------------------------------------------- writing


def config_flags(fields: dict) -> list[str]:
    """`--config.model.base.FIELD=VALUE` overrides for a run that loads this base generator."""
    flags = []
    for name in _ARCH_FIELDS:
        value = fields[name]
        if isinstance(value, tuple):
            value = "(" + ",".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
        flags.append(f"--config.model.base.{name}={value}")
    return flags


def save_base(out: str, fields: dict, params: dict, source: str) -> str:
    """Writes `out/checkpoints/0` (EMA and raw parameters: what `init.base_checkpoint` reads),
    `out/base_config.json` and `out/base_flags.txt`; returns the checkpoint directory."""
    import orbax.checkpoint as ocp

    UNet2DConfig(**fields)  # Refuses fields the base generator does not have.
    root = os.path.join(os.path.abspath(out), "checkpoints")
    _require(not os.path.exists(root), f"{root} exists; pick a new --out")
    tree = {"params": {"base": params}, "ema": {"base": params}}
    with ocp.CheckpointManager(root, item_names=("state",)) as manager:
        manager.save(0, args=ocp.args.Composite(state=ocp.args.PyTreeSave(tree)))
        manager.wait_until_finished()
    with open(os.path.join(out, "base_config.json"), "w") as f:
        json.dump({"source": source, "fields": fields}, f, indent=2)
    with open(os.path.join(out, "base_flags.txt"), "w") as f:
        f.write(" ".join(config_flags(fields)) + "\n")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vfjax.models.convert", description=__doc__.splitlines()[0]
    )
    parser.add_argument("format", choices=["diffusers", "adm"])
    parser.add_argument("--src", required=True, help="diffusers folder or ADM .pt file")
    parser.add_argument("--out", required=True, help="new folder for the converted base")
    parser.add_argument("--flags", default="", help="ADM: the model flags of the checkpoint")
    args = parser.parse_args(argv)
    try:
        if args.format == "diffusers":
            fields, params = from_diffusers(args.src)
        else:
            fields, params = from_adm(load_adm_state_dict(args.src), args.flags)
        root = save_base(args.out, fields, params, os.path.abspath(args.src))
    except (ValueError, FileNotFoundError) as e:
        print(f"convert: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    size, channels = fields["image_size"], fields["in_channels"]
    print(f"Wrote {root} ({sum(np.size(x) for x in jax.tree.leaves(params)) / 1e6:.1f}M params).")
    print(
        f"Train at data.resolution={size}, data.channels={channels}"
        + (f", model.num_classes={fields['num_classes']}" if fields["num_classes"] else "")
        + f" with --config.init.base_checkpoint={os.path.abspath(args.out)} and:"
    )
    print(" ".join(config_flags(fields)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
