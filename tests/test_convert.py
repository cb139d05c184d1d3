"""Public image-diffusion checkpoints converted into the base generator give the same outputs."""

import json
import os

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from guided_diffusion import unet as unet_lib  # guided-diffusion-sdk: OpenAI's ADM code

from vfjax import checkpointing
from vfjax.models import convert
from vfjax.models.unet2d import UNet2D, UNet2DConfig


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Every weight random (diffusers and ADM zero some at initialisation)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def _ours(fields: dict, params: dict, x: np.ndarray, t: np.ndarray, labels=None) -> np.ndarray:
    cfg = UNet2DConfig(**fields, dtype="float32", conv_impl="native")
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: UNet2D(cfg, rngs=nnx.Rngs(0))))
    cond = None if labels is None else {"label": jnp.asarray(labels)}

    @jax.jit
    def forward(params, x, t, cond):
        return nnx.merge(graphdef, params)(x, t, cond)

    return np.asarray(forward(params, jnp.asarray(x), jnp.asarray(t), cond))


def _rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {
            "resnet_time_scale_shift": "scale_shift",
            "attn_norm_num_groups": 8,
            "down_block_types": ("AttnDownBlock2D", "ResnetDownsampleBlock2D", "DownBlock2D"),
            "up_block_types": ("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D", "AttnUpBlock2D"),
            "downsample_type": "resnet",
            "upsample_type": "resnet",
            "num_class_embeds": 5,
            "attention_head_dim": None,
        },
    ],
    ids=["ddpm", "scale_shift_resnet_resample_class"],
)
def test_diffusers_unet2d_matches(kw, tmp_path):
    arch = dict(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    )
    unet = diffusers.UNet2DModel(**{**arch, **kw})
    _randomize(unet, 0)
    unet.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    fields, params = convert.from_diffusers(str(tmp_path / "unet"))

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    t = np.array([3, 917], np.int64)
    labels = np.array([1, 4]) if kw.get("num_class_embeds") else None
    with torch.no_grad():
        ref = unet(
            torch.from_numpy(x.transpose(0, 3, 1, 2)),
            torch.from_numpy(t),
            class_labels=None if labels is None else torch.from_numpy(labels),
        ).sample.numpy()
    ours = _ours(fields, params, x, t.astype(np.int32), labels)
    err = _rel_err(ours, ref.transpose(0, 2, 3, 1))
    print("relative error", err)
    assert err < 1e-4


def test_adm_unet_matches_guided_diffusion():
    flags = (
        "--image_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2,2 "
        "--attention_resolutions 8,4 --num_heads 2 --use_scale_shift_norm True "
        "--resblock_updown True --learn_sigma True --class_cond True --num_classes 7"
    )
    parsed = convert.parse_adm_flags(flags)
    reference = unet_lib.UNetModel(
        image_size=16,
        in_channels=3,
        model_channels=32,
        out_channels=6,
        num_res_blocks=1,
        attention_resolutions=(16 // 8, 16 // 4),
        channel_mult=(1, 2, 2),
        num_classes=7,
        num_heads=2,
        use_scale_shift_norm=True,
        resblock_updown=True,
    )
    _randomize(reference, 3)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    fields, params = convert.from_adm(state, parsed)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    t, labels = np.array([10, 600]), np.array([0, 6])
    with torch.no_grad():
        ref = reference(
            torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t), torch.from_numpy(labels)
        ).numpy()
    ours = _ours(fields, params, x, t.astype(np.int32), labels)
    err = _rel_err(ours, ref[:, :3].transpose(0, 2, 3, 1))  # The noise half of learn_sigma.
    print("relative error", err)
    assert err < 1e-4


def test_adm_new_attention_order_and_head_channels():
    reference = unet_lib.UNetModel(
        image_size=8,
        in_channels=3,
        model_channels=32,
        out_channels=3,
        num_res_blocks=1,
        attention_resolutions=(1, 2),
        channel_mult=(1, 2),
        num_head_channels=8,
        use_new_attention_order=True,
        use_scale_shift_norm=False,
    )
    _randomize(reference, 5)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    flags = {
        "image_size": 8,
        "num_channels": 32,
        "num_res_blocks": 1,
        "channel_mult": "1,2",
        "attention_resolutions": "8,4",
        "num_head_channels": 8,
        "use_new_attention_order": True,
        "use_scale_shift_norm": False,
    }
    fields, params = convert.from_adm(state, flags)
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 3)).astype(np.float32)
    with torch.no_grad():
        ref = reference(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.tensor([42])).numpy()
    assert (
        _rel_err(_ours(fields, params, x, np.array([42], np.int32)), ref.transpose(0, 2, 3, 1))
        < 1e-4
    )


def test_cli_writes_a_base_checkpoint_a_run_loads(tmp_path, capsys):
    unet = diffusers.UNet2DModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=4,
    )
    _randomize(unet, 7)
    unet.save_pretrained(tmp_path / "unet")
    out = tmp_path / "base"
    args = ["diffusers", f"--src={tmp_path / 'unet'}", f"--out={out}"]
    assert convert.main(args) == 0
    assert "--config.model.base.channels=8" in capsys.readouterr().out
    fields = json.loads((out / "base_config.json").read_text())["fields"]
    assert (out / "base_flags.txt").read_text().startswith("--config.model.base.channels=8")
    assert os.path.isdir(out / "checkpoints" / "0")

    _, expected = convert.from_diffusers(str(tmp_path / "unet"))
    cfg = UNet2DConfig(**{**fields, "attn_resolutions": tuple(fields["attn_resolutions"])})
    _, abstract = nnx.split(nnx.eval_shape(lambda: UNet2D(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    shapes = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nnx.to_pure_dict(abstract)
    )
    loaded = checkpointing.load_base_params(str(out), shapes)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded), expected)

    assert convert.main(args) == 2  # Nothing is overwritten.
    assert "exists" in capsys.readouterr().err.strip().splitlines()[-1]


def test_unsupported_architecture_is_a_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"_class_name": "UNet2DModel", "act_fn": "gelu", "block_out_channels": [8]})
    )
    with pytest.raises(convert.ConversionError, match="act_fn='gelu' is not supported"):
        convert.from_diffusers(str(tmp_path))
    with pytest.raises(convert.ConversionError, match="num_heads_upsample"):
        convert.from_adm({}, "--num_heads 4 --num_heads_upsample 2 --image_size 64")
