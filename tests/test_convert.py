"""Public image-diffusion checkpoints converted into the base generator give the same outputs.

Every preset is converted at its published architecture, narrowed (fewer channels, heads
scaled) so that each reference model builds and runs in a second, with random weights, and
compared with the reference PyTorch model: diffusers' `UNet2DModel`, or OpenAI's `UNetModel` as
guided-diffusion's own scripts build it from the flags. Presets of one architecture share one
reference and one conversion.
"""

import argparse
import functools
import json
import shlex

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from absl.testing import flagsaver
from flax import nnx
from guided_diffusion import script_util  # guided-diffusion-sdk: OpenAI's ADM code

from vfjax import base_checkpoint
from vfjax.models import init
from vfjax.models.architecture import UNet2DConfig
from vfjax.models.unet2d import UNet2D
from vfjax.pretrained import __main__ as cli_main
from vfjax.pretrained import adm_unet, diffusers_unet, mapping, presets

# These programs run once, on tiny inputs: compile time is what counts (a third of the default).
_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
_DEPRECATED = {
    ".to_q.": ".query.",
    ".to_k.": ".key.",
    ".to_v.": ".value.",
    ".to_out.0.": ".proj_attn.",
}


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Every weight random (diffusers and ADM zero some at initialisation), scaled by fan-in so
    that activations keep their size through a deep network."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = p[0].numel() ** -0.5 if p.ndim > 1 else 0.2
            p.normal_(0.0, std, generator=gen)


def _inputs(fields: dict, batch: int = 2):
    """Images small enough to be quick, large enough that the deepest level is 2 x 2."""
    size = min(fields["image_size"], 2 ** len(fields["channel_mult"]))
    x = np.random.default_rng(1).standard_normal((batch, size, size, 3)).astype(np.float32)
    labels = np.array([1, fields["num_classes"] - 1])[:batch] if fields["num_classes"] else None
    return x, labels


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The references are tiny: one thread (several spin against each other on a busy machine,
    a hundred times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ours(fields: dict, params: dict, x: np.ndarray, t: np.ndarray, labels=None) -> np.ndarray:
    graphdef, _ = mapping.abstract_base(mapping.base_config(fields))

    def forward(params, x, t, cond):
        return nnx.merge(graphdef, params)(x, t, cond)

    args = (params, jnp.asarray(x), jnp.asarray(t, jnp.int32))
    args += (None if labels is None else {"label": jnp.asarray(labels, jnp.int32)},)
    compiled = jax.jit(forward).lower(*args).compile(compiler_options=_QUICK_COMPILE)
    return np.asarray(compiled(*args))


def _rel_err(ours: np.ndarray, ref_nchw: np.ndarray) -> float:
    ref = ref_nchw.transpose(0, 2, 3, 1)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.transpose(0, 3, 1, 2))


# -------------------------------------------------------------------------------- diffusers


def _deprecated_names(state: dict) -> dict:
    """A state dict with the attention names of diffusers' first checkpoints (google/ddpm-*)."""
    out = {}
    for name, value in state.items():
        for new, old in _DEPRECATED.items():
            name = name.replace(new, old) if ".attentions." in name else name
        out[name] = value
    return out


@functools.cache
def _diffusers_error(config_json: str, deprecated: bool) -> float:
    config = json.loads(config_json)
    reference = diffusers.UNet2DModel.from_config(config).eval()
    _randomize(reference, 0)
    tensors = {k: v.numpy() for k, v in reference.state_dict().items()}
    fields = diffusers_unet.architecture(config)
    params = diffusers_unet.convert(fields, _deprecated_names(tensors) if deprecated else tensors)
    x, labels = _inputs(fields)
    t = np.array([3, 917])
    with torch.no_grad():
        ref = reference(
            _nchw(x),
            torch.from_numpy(t),
            class_labels=None if labels is None else torch.from_numpy(labels),
        ).sample.numpy()
    return _rel_err(_ours(fields, params, x, t, labels), ref)


def _narrow_diffusers(config: dict) -> dict:
    scale = config["block_out_channels"][0] // 32
    return {**config, "block_out_channels": [c // scale for c in config["block_out_channels"]]}


_DIFFUSERS_PRESETS = sorted(n for n, p in presets.PRESETS.items() if p.format == "diffusers")
_ADM_PRESETS = sorted(n for n, p in presets.PRESETS.items() if p.format == "adm")


@pytest.mark.parametrize("name", _DIFFUSERS_PRESETS)
def test_diffusers_preset_matches_unet2dmodel(name):
    """google/ddpm-*: DDPM's asymmetric downsampling pad, single-head attention under the
    attention names these checkpoints were published with."""
    config = _narrow_diffusers(presets.PRESETS[name].architecture)
    assert _diffusers_error(json.dumps(config, sort_keys=True), True) < 1e-4


def test_diffusers_folder_with_other_blocks_matches(tmp_path):
    """Branches no preset takes: scale-shift norm, residual-block resampling, class embedding,
    multi-head attention, read from a folder as diffusers saves it."""
    arch = dict(
        sample_size=16,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("AttnDownBlock2D", "ResnetDownsampleBlock2D", "DownBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D", "AttnUpBlock2D"),
        norm_num_groups=8,
        attn_norm_num_groups=8,
        attention_head_dim=8,
        resnet_time_scale_shift="scale_shift",
        downsample_type="resnet",
        upsample_type="resnet",
        num_class_embeds=5,
    )
    reference = diffusers.UNet2DModel(**arch).eval()
    _randomize(reference, 1)
    reference.save_pretrained(tmp_path / "unet")
    folder = str(tmp_path / "unet")
    path = diffusers_unet.weights_path(folder)
    assert path.endswith("diffusion_pytorch_model.safetensors")
    fields = diffusers_unet.architecture(diffusers_unet.read_config(folder))
    params = diffusers_unet.convert(fields, diffusers_unet.read_weights(path))
    x, labels = _inputs(fields)
    t = np.array([3, 917])
    with torch.no_grad():
        ref = reference(_nchw(x), torch.from_numpy(t), torch.from_numpy(labels)).sample.numpy()
    assert _rel_err(_ours(fields, params, x, t, labels), ref) < 1e-4


# -------------------------------------------------------------------------------------- ADM


def _guided_args(flags: str) -> dict:
    """The flags parsed as guided-diffusion's scripts parse them (its own defaults)."""
    defaults = script_util.model_and_diffusion_defaults()
    parser = argparse.ArgumentParser()
    script_util.add_dict_to_argparser(parser, defaults)
    return script_util.args_to_dict(parser.parse_args(shlex.split(flags)), defaults.keys())


def _narrow_adm(flags: str) -> str:
    """Fewer channels (32 at the narrowest level: ADM's GroupNorm has 32 groups) and, with
    head channels, 8 per head; improved-diffusion's default channel_mult for 32 x 32 (guided's
    create_model has none)."""
    args = _guided_args(flags)
    narrowest = 64 if args["image_size"] == 512 else 32
    flags += f" --num_channels {narrowest}"
    if args["num_head_channels"] > 0:
        flags += " --num_head_channels 8"
    if args["image_size"] == 32:
        flags += " --channel_mult 1,2,2,2"
    return flags


# Arguments the network's output in evaluation does not depend on, left at their defaults in
# the reference (dropout is off in evaluation; use_fp16 False keeps the reference in float32).
_NOT_ARCHITECTURE = {"dropout", "use_fp16", "use_checkpoint", "timestep_respacing", "use_kl"}
_NOT_ARCHITECTURE |= {"sigma_small", "noise_schedule", "rescale_learned_sigmas"}


@functools.cache
def _adm_reference_check(args_json: str) -> tuple[float, dict]:
    """The relative error of the conversion of a random reference built from `args_json`
    (guided-diffusion's arguments, which the conversion is given as its flags), and the fields
    the conversion read from them."""
    args = json.loads(args_json)  # use_fp16 False: the reference runs in float32.
    reference, _ = script_util.create_model_and_diffusion(**args)
    reference.eval()
    _randomize(reference, 2)
    tensors = {k: v.numpy() for k, v in reference.state_dict().items()}
    fields, params = adm_unet.convert(tensors, args)
    x, labels = _inputs(fields)
    t = np.array([10, args["diffusion_steps"] - 1])
    rescale = 1000 / args["diffusion_steps"] if args["rescale_timesteps"] else 1
    with torch.no_grad():
        ref = reference(
            _nchw(x),
            torch.from_numpy(t * rescale),
            None if labels is None else torch.from_numpy(labels),
        ).numpy()
    if args["learn_sigma"]:
        ref = ref[:, :3]  # The noise half.
    return _rel_err(_ours(fields, params, x, t, labels), ref), fields


@pytest.mark.parametrize("name", _ADM_PRESETS)
def test_adm_preset_matches_guided_diffusion(name):
    """guided-diffusion (new and legacy attention order, head channels or head counts, ADM-512's
    half-width first level, residual resampling, classes) and improved-diffusion (legacy order,
    rescaled timesteps): the noise half of the output matches. Presets whose networks are the
    same (they differ in dropout or in the training loss) share one reference."""
    flags = _narrow_adm(presets.PRESETS[name].flags)
    args = _guided_args(flags)
    defaults = script_util.model_and_diffusion_defaults()
    network = {k: defaults[k] if k in _NOT_ARCHITECTURE else v for k, v in args.items()}
    err, fields = _adm_reference_check(json.dumps(network, sort_keys=True))
    # This preset's flags, as the converter reads them, give the network that was checked.
    ours = adm_unet.architecture(adm_unet.parse_flags(flags))
    assert {**ours, "dropout": 0.0} == {**fields, "dropout": 0.0}
    assert ours["dropout"] == args["dropout"]
    assert err < 1e-4


def test_presets_record_what_a_run_needs():
    assert len(_DIFFUSERS_PRESETS) == 9 and len(_ADM_PRESETS) == 16
    for name, preset in presets.PRESETS.items():
        overrides = presets.config_overrides(name)
        assert overrides["data.resolution"] == preset.image_size == preset.fields()["image_size"]
        assert overrides["diffusion.schedule"] in ("linear", "cosine")
        assert preset.url.startswith("https://") and preset.source.startswith("https://")
        UNet2DConfig(**preset.fields())  # Every field is the base generator's.
    cifar = presets.config_overrides("improved-diffusion/cifar10_uncond_50M_500K")
    assert cifar["diffusion.num_timesteps"] == 4000 and cifar["model.base.timestep_scale"] == 0.25
    assert presets.config_overrides("google/ddpm-cat-256")["model.base.downsample_padding"] == 0
    assert presets.PRESETS["guided-diffusion/256x256_diffusion"].num_classes == 1000


# ------------------------------------------------------------------------ command line


def _main(*args: str) -> None:
    with flagsaver.flagsaver():
        cli_main.main(cli_main.FLAGS(["vfjax.pretrained", *args]))


def _ddpm_folder(path) -> dict:
    """A small DDPM-style diffusers folder as google/ddpm-* publish them: config.json and a
    .bin state dict with the first attention names."""
    config = {**presets.PRESETS["google/ddpm-cifar10-32"].architecture}
    config.update(block_out_channels=[32, 64], sample_size=8, layers_per_block=1)
    config.update(down_block_types=["DownBlock2D", "AttnDownBlock2D"])
    config.update(up_block_types=["AttnUpBlock2D", "UpBlock2D"])
    reference = diffusers.UNet2DModel.from_config(config)
    _randomize(reference, 3)
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    tensors = _deprecated_names(reference.state_dict())
    torch.save(tensors, path / "diffusion_pytorch_model.bin")
    return {k: v.numpy() for k, v in tensors.items()}


def test_cli_writes_a_base_checkpoint_a_run_loads(tmp_path, capsys):
    tensors = _ddpm_folder(tmp_path / "ddpm")
    out = tmp_path / "base"
    _main("diffusers", f"--src={tmp_path / 'ddpm'}", f"--out={out}")
    assert "--config.model.base.downsample_padding=0" in capsys.readouterr().out
    saved = json.loads((out / "base_config.json").read_text())
    flags = (out / "base_flags.txt").read_text()
    assert flags.startswith("--config.model.base.channels=32")
    assert "--config.data.resolution=8" in flags and "diffusion.schedule" not in flags

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["fields"].items()}
    cfg = UNet2DConfig(**fields)
    _, abstract = init.abstract_model(lambda rngs: UNet2D(cfg, rngs=rngs))
    shapes = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nnx.to_pure_dict(abstract)
    )
    loaded = base_checkpoint.load_base_params(str(out), shapes)
    expected = diffusers_unet.convert(fields, tensors)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded), expected)

    with pytest.raises(SystemExit) as stop:  # Nothing is overwritten.
        _main("diffusers", f"--src={tmp_path / 'ddpm'}", f"--out={out}")
    assert stop.value.code == 2
    assert "exists" in capsys.readouterr().err.strip().splitlines()[-1]


def _one_line_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as stop:
        _main(*args)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vfjax: error: "), lines
    return lines[0]


def test_cli_refuses_missing_and_mismatched_files_in_one_line(tmp_path, capsys):
    out = f"--out={tmp_path / 'out'}"
    assert "not found" in _one_line_error(capsys, "adm", f"--src={tmp_path / 'no.pt'}", out)
    _ddpm_folder(tmp_path / "ddpm")
    line = _one_line_error(
        capsys, "diffusers", "--preset=google/ddpm-cifar10-32", f"--src={tmp_path / 'ddpm'}", out
    )
    assert "is not google/ddpm-cifar10-32's architecture: image_size is 8, the preset's 32" in line
    small = script_util.create_model(32, 32, 1, channel_mult="1,2", attention_resolutions="16")
    torch.save(small.state_dict(), tmp_path / "lsun_bedroom.pt")
    line = _one_line_error(
        capsys,
        "adm",
        "--preset=guided-diffusion/lsun_bedroom",
        f"--src={tmp_path / 'lsun_bedroom.pt'}",
        out,
    )
    assert "does not fit" in line or "lacks" in line
    assert not (tmp_path / "out").exists()


def test_unsupported_or_inconsistent_architecture_is_a_one_line_error():
    with pytest.raises(mapping.ConversionError, match="act_fn='gelu' is not supported"):
        diffusers_unet.architecture({"act_fn": "gelu", "block_out_channels": [8]})
    with pytest.raises(mapping.ConversionError, match="num_heads_upsample"):
        adm_unet.architecture(adm_unet.parse_flags("--num_heads 4 --num_heads_upsample 2"))
    with pytest.raises(mapping.ConversionError, match="unknown ADM flag --num_chanels"):
        adm_unet.parse_flags("--num_chanels 64")
    # Flags with one residual block too few leave tensors of the checkpoint unused.
    model = script_util.create_model(32, 32, 2, channel_mult="1,2", attention_resolutions="16")
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    flags = "--image_size 32 --num_channels 32 --channel_mult 1,2 --attention_resolutions 16"
    adm_unet.convert(
        state, flags + " --num_res_blocks 2 --use_scale_shift_norm False --num_heads 1"
    )
    with pytest.raises(mapping.ConversionError):
        adm_unet.convert(
            state, flags + " --num_res_blocks 1 --use_scale_shift_norm False --num_heads 1"
        )
