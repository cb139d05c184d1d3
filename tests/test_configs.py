"""The experiment configs: every file and variant loads and validates; the ablations keep what
they claim fixed."""

import glob
import os

import jax
import numpy as np
import pytest

from tests.helpers import ROOT
from vfjax import config as vfc
from vfjax import experiments

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


# Benchmark-only configs: their synthetic batches stand for a data set they name no files of.
BENCH_ONLY = {"peer_unet3d.py"}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_and_validates(path):
    c = vfc.load_config(path)
    vfc.validate(c, with_data=os.path.basename(path) not in BENCH_ONLY)
    module = vfc.load_module(path)
    if hasattr(module, "get_sweep"):
        for point in experiments.load_sweep(path):
            assert point, path


def test_vdm_baseline_of_the_ablation_matches_videofusion_parameter_count():
    path = os.path.join(ROOT, "configs", "ablation_lambda.py")
    c = vfc.load_config(path)
    vf = experiments.parameter_count(c)
    sweep = experiments.load_sweep(path)  # Searches the matched baseline: seconds.
    (vdm_point,) = [p for p in sweep if p.get("model.kind") == "vdm"]
    vdm = c.copy_and_resolve_references()
    vdm.update_from_flattened_dict({k: v for k, v in vdm_point.items() if k[0] != "_"})
    assert vdm.model.kind == "vdm"
    assert abs(experiments.parameter_count(vdm) - vf) / vf < 0.1
    # The lambda points change the noise only: VideoFusion's networks are the same for all.
    lams = [p["diffusion.lam"] for p in sweep if "diffusion.lam" in p]
    assert lams == [0.0, 0.25, 0.5, 0.75]
    assert all(set(p) == {"diffusion.lam"} for p in sweep if "diffusion.lam" in p)


def test_base_ablation_points():
    path = os.path.join(ROOT, "configs", "ablation_base.py")
    names = [p["_name"] for p in experiments.load_sweep(path)]
    assert names == [
        "scratch",
        "pretrained",
        "scratch_no_stop_gradient",
        "pretrained_no_stop_gradient",
        "pretrained_frozen",
    ]
    with_base = experiments.load_sweep(path, "base=/runs/base")
    frozen = [p for p in with_base if p["_name"] == "pretrained_frozen"]
    assert frozen == [
        {
            "_name": "pretrained_frozen",
            "init.base_checkpoint": "/runs/base",
            "optim.freeze_base": True,
        }
    ]


@pytest.mark.parametrize("name", ["ucf101_64", "sky_128"])
def test_pretrained_variant_takes_the_public_checkpoints_architecture_and_schedule(name):
    from flax import nnx

    from vfjax.models import init as init_lib
    from vfjax.models import unet2d, videofusion
    from vfjax.pretrained import presets

    c = vfc.load_config(os.path.join(ROOT, "configs", f"{name}.py"), "pretrained")
    spec = presets.get(experiments.PRETRAINED_BASES[c.data.resolution])
    fields = spec.fields()
    assert (c.diffusion.schedule, c.diffusion.num_timesteps) == (spec.schedule, spec.num_timesteps)
    assert c.model.base.channels == fields["channels"]
    assert c.model.base.channel_mult == tuple(fields["channel_mult"])
    assert c.init.base_checkpoint and spec.name in c.init.base_conversion
    assert c.data.resolution == (64 if name == "ucf101_64" else 128)  # the benchmark's own

    # The base generator the run builds has exactly the converted checkpoint's weights, also
    # where the checkpoint was published at another resolution (attention at the same levels).
    from vfjax.pretrained import mapping

    def shapes(build):
        _, params = init_lib.abstract_model(build)
        return jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(params))

    c.model.kind = "image"
    run = shapes(lambda r: videofusion.build_model(c.model, c.data.resolution, 3, rngs=r))
    published = shapes(lambda r: unet2d.UNet2D(mapping.base_config(fields), rngs=r))
    assert run["base"] == published


def test_missing_pretrained_base_is_one_line_naming_the_conversion(tmp_path):
    from vfjax import main

    c = vfc.load_config(os.path.join(ROOT, "configs", "ucf101_64.py"), "pretrained")
    c.init.base_checkpoint = str(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"python -m vfjax.pretrained adm --preset="):
        main._check_base_checkpoint(c, str(tmp_path / "run"))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("diffusion.key_input", "pixels", "diffusion.key_input must be 'latent', 'x0' or 'clean'"),
        ("diffusion.key_frame_weight", 1.5, "key_frame_weight must lie in"),
        ("optim.schedule", "linear", "optim.schedule must be"),
        ("diffusion.t_sampling", "loss_aware", "diffusion.t_sampling must be 'uniform' or"),
        ("diffusion.t_uniform_share", 0.0, r"diffusion.t_uniform_share must lie in \(0, 1\]"),
        ("diffusion.base_image_weight", -1.0, "diffusion.base_image_weight must be >= 0"),
        ("diffusion.snr_floor", 6.0, r"diffusion.snr_floor must lie in \[0, diffusion.min_snr"),
        ("sampling.long_guidance", -1.0, r"sampling.long_guidance must be >= 0"),
        ("sampling.long_context_guidance", -1.0, r"sampling.long_context_guidance must be >= 0"),
        ("diffusion.context_rate", 1.0, r"diffusion.context_rate must lie in \[0, 1\)"),
        ("sampling.long_method", "loop", "sampling.long_method must be one of"),
        ("model.base.patch_size", 0, "model.base.patch_size must be a positive integer"),
        # 16 pixels: a 3-pixel patch does not tile them; 4-pixel patches leave a 4x4 grid that
        # the residual generator's second level halves to 2x2, which is fine: 16 % (4 * 2) == 0.
        ("model.residual.patch_size", 3, r"data.resolution=16 must be divisible by 6 \(model"),
        ("model.residual.patch_size", 16, r"data.resolution=16 must be divisible by 32"),
    ],
)
def test_bad_diffusion_and_optim_fields_are_refused_by_name(field, value, message):
    c = vfc.load_config(os.path.join(ROOT, "configs", "default.py"))
    *path, name = field.split(".")
    node = c
    for part in path:
        node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=message):
        vfc.validate(c, with_data=False)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"model.residual.key_frame_attn_resolutions": ()},
        {"model.residual.key_frame_attn_resolutions": (4,)},  # No level of the default at 4x4.
        {"diffusion.key_input": "latent"},
        {"sampling.long_method": "shared_base"},
        {"model.kind": "vdm"},
    ],
    ids=str,
)
def test_long_anchor_needs_the_attention_it_feeds(fields):
    """`sampling.long_anchor` feeds the continuation clips' attention to the key frame: the
    default (which has it) takes it; without that attention, a clean key frame to show, or
    continuation clips at all, it is refused before any work."""
    c = vfc.load_config(os.path.join(ROOT, "configs", "default.py"))
    c.update_from_flattened_dict({"sampling.long_anchor": True, **fields})
    if not fields:
        vfc.validate(c, with_data=False)
        return
    with pytest.raises(ValueError, match="sampling.long_anchor needs long_method='continue'"):
        vfc.validate(c, with_data=False)


@pytest.mark.parametrize("name", ["ucf101_64", "ucf101_128", "sky_128", "taichi_128"])
def test_benchmark_docstring_lists_our_choices_with_the_configs_values(name):
    module = vfc.load_module(os.path.join(ROOT, "configs", f"{name}.py"))
    c = module.get_config()
    doc = module.__doc__
    assert "Known from the paper" in doc and "Ours, not the paper's" in doc
    assert f"batch {c.batch_size}," in doc
    assert str(tuple(c.model.residual.channel_mult)) in doc
    assert experiments.PRETRAINED_BASES[c.data.resolution] in doc


# The paper-benchmark configs, their resolution, and the variants they are run with (`class` on the
# data sets with labels).
_BENCHMARKS = {"ucf101_64": 64, "ucf101_128": 128, "sky_128": 128, "taichi_128": 128}
_VARIANTS = ["", "vdm", "image", "runlocal", "pretrained", "vdm,pretrained"]
_CLASS_VARIANTS = ["class", "class,vdm", "class,runlocal", "class,pretrained"]


def _field(c, dotted: str):
    node = c
    for name in dotted.split("."):
        node = node[name]
    return node


@pytest.mark.parametrize("name", list(_BENCHMARKS))
def test_benchmark_configs_make_every_documented_choice(name):
    """Every entry of `experiments.benchmark_choices` (the list in the configs' docstrings) holds
    in every benchmark config and variant it applies to: a config change that contradicts a
    documented choice, or a choice that no config makes, fails here."""
    path = os.path.join(ROOT, "configs", f"{name}.py")
    choices = experiments.benchmark_choices(_BENCHMARKS[name])
    assert all(choice.fields and choice.source for choice in choices)
    variants = _VARIANTS + (_CLASS_VARIANTS if name.startswith("ucf101") else [])
    made = set()
    for arg in variants:
        c = vfc.load_config(path, arg or None)
        words = set(filter(None, arg.split(",")))
        for i, choice in enumerate(choices):
            if not choice.applies(words):
                continue
            made.add(i)
            for field, value in choice.fields.items():
                got = _field(c, field)
                assert got == value, f"{name}:{arg} has {field}={got!r}; documented: {choice.text}"
    # Each choice is checked somewhere (the class guidance where there are labels).
    labels = name.startswith("ucf101")
    assert made == {i for i, ch in enumerate(choices) if labels or "class" not in ch.only_with}


@pytest.mark.parametrize("name", ["default", "ucf101_64"])
def test_class_variant_samples_with_guidance(name):
    """`class` makes a run class-conditional and guided (the embedded default too); without it
    a run is unconditional and its sampler unguided."""
    path = os.path.join(ROOT, "configs", f"{name}.py")
    plain, guided = vfc.load_config(path), vfc.load_config(path, "class")
    assert plain.data.cond == "none" and plain.sampling.guidance_scale == 1.0
    assert guided.data.cond == "class"
    assert guided.sampling.guidance_scale == vfc.CLASS_GUIDANCE_SCALE > 1.0


@pytest.mark.parametrize("name", ["ucf101_64", "ucf101_128"])
def test_ucf101_class_variant_knows_its_class_count_without_data(name):
    """The paper's class-conditional model is built (and compiled for a TPU) from the config
    alone: UCF101's 101 classes are in it, no prepared data set is read."""
    from vfjax import run_setup

    c = vfc.load_config(os.path.join(ROOT, "configs", f"{name}.py"), "class")
    assert c.model.num_classes == experiments.UCF101_CLASSES == 101
    assert run_setup.prepare_config(c, with_data=False).model.num_classes == 101
    assert vfc.load_config(os.path.join(ROOT, "configs", f"{name}.py")).model.num_classes == 0


def test_held_context_needs_the_held_flags():
    """`diffusion.context_rate > 0` on a residual generator that cannot be told which frames are
    held is refused in one line; with `model.residual.held_frames` it passes."""
    c = vfc.load_config(os.path.join(ROOT, "configs", "default.py"))
    c.diffusion.context_rate = 0.5
    c.model.residual.held_frames = False
    with pytest.raises(ValueError, match="context_rate > 0 needs model.residual.held_frames"):
        vfc.validate(c, with_data=False)
    c.model.residual.held_frames = True
    vfc.validate(c, with_data=False)
    c.model.kind, c.model.residual.held_frames = "image", False  # Frames as images: unused.
    vfc.validate(c, with_data=False)


def test_context_guidance_needs_a_model_shown_its_held_frames():
    """`sampling.long_context_guidance != 1` guides on held frames a model was trained to be
    shown: without `model.residual.held_frames` it is refused in one line."""
    c = vfc.load_config(os.path.join(ROOT, "configs", "default.py"))
    c.sampling.long_context_guidance = 2.0
    vfc.validate(c, with_data=False)
    c.diffusion.context_rate, c.model.residual.held_frames = 0.0, False
    with pytest.raises(ValueError, match="long_context_guidance != 1 needs a model") as info:
        vfc.validate(c, with_data=False)
    assert "\n" not in str(info.value)


def test_class_count_that_disagrees_with_the_data_set_is_refused():
    from vfjax import run_setup

    c = vfc.load_config(os.path.join(ROOT, "configs", "default.py"), "class,model.num_classes=7")
    with pytest.raises(ValueError, match="num_classes=7 but data set 'synthetic' has 4") as info:
        run_setup.prepare_config(c)
    assert "\n" not in str(info.value)
    c.model.num_classes = 0  # Taken from the data set.
    assert run_setup.prepare_config(c).model.num_classes == 4


def test_per_frame_lambda_from_the_command_line_and_a_config_file():
    """`diffusion.lam` takes a scalar or one value per frame, from the command line (as
    `python -m vfjax.main` parses it) and from Python; the key frame's share is 1 either way."""
    from absl import flags
    from ml_collections import config_flags

    from vfjax import steps

    def parse(*overrides):
        argv = ["vfjax", f"--config={os.path.join(ROOT, 'configs', 'default.py')}", *overrides]
        fv = flags.FlagValues()
        config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)
        fv(argv)
        vfc.validate(fv.config, with_data=False)
        return fv.config

    profile = (0.5, 0.5, 0.6, 0.8, 0.3, 0.8, 0.6, 0.5)
    c = parse("--config.diffusion.lam=(0.5,0.5,0.6,0.8,0.3,0.8,0.6,0.5)")
    assert tuple(c.diffusion.lam) == profile
    np.testing.assert_allclose(
        steps.diffusion_from_config(c).lambdas, [0.5, 0.5, 0.6, 0.8, 1.0, 0.8, 0.6, 0.5]
    )
    assert parse("--config.diffusion.lam=0.25").diffusion.lam == 0.25
    c.diffusion.lam = 0.75  # And back to a scalar, in Python.
    np.testing.assert_allclose(steps.diffusion_from_config(c).lambdas[:4], 0.75)
    with pytest.raises(ValueError, match="diffusion.lam has 3 values"):
        parse("--config.diffusion.lam=(0.5,0.5,0.5)")


@pytest.mark.parametrize(
    "field,value", [("key_frame_input", True), ("key_frame_attn_resolutions", (8,))]
)
def test_key_frame_options_refuse_another_key_frame(field, value):
    """Both show every frame frame N // 2: another `diffusion.key_frame` is refused up front;
    N // 2 itself, or its negative index, is fine."""
    c = vfc.load_config(os.path.join(ROOT, "configs", "default.py"))
    c.model.residual[field] = value
    c.diffusion.key_frame = 1
    with pytest.raises(ValueError, match=f"model.residual.{field} shows every frame frame N // 2"):
        vfc.validate(c, with_data=False)
    for key in (4, -4):
        c.diffusion.key_frame = key
        vfc.validate(c, with_data=False)


def test_base_image_weight_needs_a_base_generator():
    c = vfc.load_config(os.path.join(ROOT, "configs", "default.py"), "vdm")
    c.diffusion.base_image_weight = 1.0
    with pytest.raises(ValueError, match=r"base_image_weight=1.0 needs model.kind='videofusion'"):
        vfc.validate(c, with_data=False)
    c.diffusion.base_image_weight = 0.0
    vfc.validate(c, with_data=False)
