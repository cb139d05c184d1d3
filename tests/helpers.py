"""Shared test configs: the default config shrunk until a train step compiles in seconds."""

import os

from vfjax import config as vfc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "configs", "default.py")

# On top of `configs/default.py:runlocal`: one-level generators on a 2x4 mesh of the 8 fake
# devices. Every test that trains uses these, so they share one compiled train step.
TINY_FIELDS = {
    "batch_size": 8,
    "mesh.data": 2,
    "mesh.fsdp": 4,
    "sample_every_steps": 0,
    "model.base.channel_mult": (1,),
    "model.base.attn_resolutions": (),
    "model.base.mid_attention": False,
    "model.residual.channel_mult": (1,),
    "model.residual.attn_resolutions": (),
    "model.residual.temporal_attn_resolutions": (16,),
    "model.residual.temporal_conv_layers": 1,
}


# The tiny config made class-conditional on the synthetic videos' four shape classes.
CLASS_FIELDS = {"data.cond": "class", "log_every_steps": 1}


def set_fields(c, fields: dict):
    for key, value in fields.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def tiny(**fields):
    """The tiny config, with `fields` (dotted names) set on top."""
    return set_fields(vfc.load_config(DEFAULT, "runlocal"), {**TINY_FIELDS, **fields})


def tiny_cli_args(**fields) -> list[str]:
    """The same config as vfjax.main arguments."""
    args = [f"--config={DEFAULT}:runlocal"]
    for key, value in {**TINY_FIELDS, **fields}.items():
        if isinstance(value, tuple):
            value = "(" + ",".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
        args.append(f"--config.{key}={value}")
    return args
