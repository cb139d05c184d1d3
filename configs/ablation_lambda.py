"""The paper's lambda ablation: the base share of the non-key frames, and the VDM baseline.

    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation --dry-run
    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation
    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation --summary

The base experiment is the embedded default (CPU-sized); `ucf101` (after the colon) runs the
same ablation on UCF101 at 64x64 instead. Paper finding: lambda = 0.5 beats smaller and larger
shares on IS and FVD, and all beat independent noise (VDM).
"""

import os

from vfjax import config as vfc

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg=None):
    words = set(filter(None, (arg or "").split(",")))
    base = "ucf101_64.py" if "ucf101" in words else "default.py"
    rest = ",".join(sorted(words - {"ucf101"}))
    return vfc.load_config(os.path.join(HERE, base), rest or None)


def get_sweep(arg=None):
    del arg
    return vfc.sweep_product({"diffusion.lam": [0.25, 0.5, 0.75]}) + [{"model.kind": "vdm"}]
