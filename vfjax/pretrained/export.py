"""A public checkpoint file converted into a folder that `--config.init.base_checkpoint` loads.

OUT/checkpoints/0/     the parameters (as EMA and raw), written by `base_checkpoint.write_tree`
OUT/base_config.json   the source, the preset, the architecture fields and the overrides
OUT/base_flags.txt     the overrides as `--config.FIELD=VALUE` flags for `vfjax.main`
"""

import os

import jax
import numpy as np
from absl import logging

from vfjax import base_checkpoint, fileio
from vfjax import config as config_lib
from vfjax.pretrained import adm_unet, diffusers_unet, mapping, presets
from vfjax.pretrained.mapping import require

FORMATS = ("diffusers", "adm")


def _diffusers(src: str, preset: presets.Preset | None) -> tuple[dict, dict]:
    folder = src if os.path.isdir(src) else os.path.dirname(src) or "."
    has_config = fileio.join(folder, "config.json").exists()
    require(has_config or preset is not None, f"{folder} has no config.json; pass --preset")
    fields = diffusers_unet.architecture(
        diffusers_unet.read_config(folder) if has_config else preset.architecture
    )
    if preset is not None:
        expected = preset.fields()
        wrong = [k for k in expected if fields.get(k) != expected[k]]
        require(
            not wrong,
            f"{folder}/config.json is not {preset.name}'s architecture: {wrong[0]} is "
            f"{fields.get(wrong[0])!r}, the preset's {expected[wrong[0]]!r}",
        )
    tensors = diffusers_unet.read_weights(diffusers_unet.weights_path(src))
    return fields, diffusers_unet.convert(fields, tensors)


def convert(fmt: str, src: str, out: str, flags: str = "", preset: str = "") -> dict[str, object]:
    """Converts checkpoint `src` of format `fmt` ('diffusers' folder or weights file, 'adm'
    `.pt` file with its model `flags`) into the folder `out`; `preset` names a published
    checkpoint whose architecture `src` must have (and supplies the flags). Returns the run's
    config overrides."""
    require(fmt in FORMATS, f"format must be one of {FORMATS}, got {fmt!r}")
    require(fmt == "adm" or not flags, "--flags are the model flags of an adm checkpoint")
    spec = presets.get(preset) if preset else None
    if spec is not None:
        require(spec.format == fmt, f"preset {preset} is a {spec.format} checkpoint, not {fmt}")
        require(not flags, "give --flags or --preset, not both")
    root = fileio.join(out, "checkpoints")
    require(not root.exists(), f"{root} exists; pick a new --out")
    if spec is not None and os.path.basename(src) not in spec.files and not os.path.isdir(src):
        logging.warning("%s is not named like %s's %s", src, spec.name, spec.files)

    if fmt == "diffusers":
        fields, params = _diffusers(src, spec)
        schedule = (spec.schedule, spec.num_timesteps) if spec else (None, None)
    else:
        adm_flags = spec.flags if spec else flags
        fields, params = adm_unet.convert(adm_unet.load_state_dict(src), adm_flags)
        schedule = adm_unet.schedule(adm_unet.parse_flags(adm_flags))
    overrides = mapping.run_overrides(fields, *schedule)

    base_checkpoint.write_tree(root, {"params": {"base": params}, "ema": {"base": params}}, 0)
    fileio.write_json(
        fileio.join(out, "base_config.json"),
        {
            "source": os.path.abspath(src),
            "preset": preset or None,
            "fields": fields,
            "overrides": overrides,
        },
    )
    fileio.write_text(
        fileio.join(out, "base_flags.txt"), " ".join(config_lib.override_flags(overrides)) + "\n"
    )
    count = sum(np.size(x) for x in jax.tree.leaves(params))
    print(f"Wrote {root} ({count / 1e6:.1f}M parameters).")
    if fields["num_classes"]:
        print(f"The base generator knows {fields['num_classes']} classes (model.num_classes).")
    if schedule[0] is None:
        print("Set diffusion.schedule and diffusion.num_timesteps to the checkpoint's own.")
    print(f"Train with --config.init.base_checkpoint={fileio.path(out)} and:")
    print(" ".join(config_lib.override_flags(overrides)))
    return overrides
