"""The paper's ablations of the base generator: pretrained or from scratch, frozen or trained
jointly, and the stop-gradient rule on or off.

    python launch/sweep.py --config=configs/ablation_base.py --workdir=runs/ablation_base --dry-run
    python launch/sweep.py --config=configs/ablation_base.py:base=runs/base --workdir=runs/abl_b

`base=DIR` (after the colon) is the pretrained base generator: a vfjax run of the base
architecture (`configs/default.py:image`, or a VideoFusion run) or a converted public
checkpoint (`python -m vfjax.pretrained`). Without it, "pretrained" is the pretraining phase
inside the run (`base_pretrain_steps`: the base generator trained alone as an image model on
every frame first), and "frozen" keeps the base generator as that phase left it.
`ucf101` runs the same points on UCF101 at 64x64 instead of the embedded default.
"""

import os

from vfjax import config as vfc

HERE = os.path.dirname(os.path.abspath(__file__))


def _args(arg):
    words, pairs = set(), {}
    for item in filter(None, (arg or "").split(",")):
        if item.startswith("base="):
            pairs["base"] = item.split("=", 1)[1]
        else:
            words.add(item)
    return words, pairs.get("base", "")


def get_config(arg=None):
    words, _ = _args(arg)
    base = "ucf101_64.py" if "ucf101" in words else "default.py"
    rest = ",".join(sorted(words - {"ucf101"}))
    return vfc.load_config(os.path.join(HERE, base), rest or None)


def get_sweep(arg=None):
    _, base = _args(arg)
    config = get_config(arg)
    if base:
        pretrained = {"init.base_checkpoint": base}
    else:
        pretrained = {"base_pretrain_steps": max(config.total_steps * 3 // 10, 1)}
    points = [
        {"_name": "scratch"},
        {"_name": "pretrained", **pretrained},
        {"_name": "scratch_no_stop_gradient", "diffusion.base_stop_gradient": False},
        {
            "_name": "pretrained_no_stop_gradient",
            **pretrained,
            "diffusion.base_stop_gradient": False,
        },
    ]
    points.append({"_name": "pretrained_frozen", **pretrained, "optim.freeze_base": True})
    return points
