"""Shared test configs: the default config shrunk until a train step compiles in seconds."""

import os

from vfjax import config as vfc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "configs", "default.py")


def set_fields(c, fields: dict):
    for key, value in fields.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def tiny(**fields):
    """`configs/default.py:runlocal` with one-level generators, on a 2x4 mesh of the 8 fake
    devices. Every test that trains uses it, so they share one compiled train step."""
    c = vfc.load_config(DEFAULT, "runlocal")
    c.batch_size = 8
    c.mesh.data, c.mesh.fsdp = 2, 4
    c.sample_every_steps = 0
    for net in (c.model.base, c.model.residual):
        net.channel_mult = (1,)
        net.attn_resolutions = ()
    c.model.base.mid_attention = False
    c.model.residual.temporal_attn_resolutions = (16,)
    c.model.residual.temporal_conv_layers = 1
    return set_fields(c, fields)
