"""The paper's lambda ablation: the base share of the non-key frames, inside VideoFusion (the
same two networks for every lambda), and the VDM baseline of the same parameter count.

    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation --dry-run
    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation
    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation --summary

lambda = 0 keeps VideoFusion's networks and key frame (whose noise is the base noise alone) with
independent residual noise elsewhere; the VDM baseline drops the base generator and widens or
deepens its video UNet until it has as many parameters as VideoFusion's two together. The base
experiment is the embedded default (CPU-sized); `ucf101` (after the colon) runs the same ablation on
UCF101 at 64x64. Paper finding: lambda = 0.5 beats smaller and larger shares on IS and FVD, and all
beat independent noise (VDM).
"""

import os

from vfjax import config as vfc
from vfjax import experiments

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg=None):
    words = set(filter(None, (arg or "").split(",")))
    base = "ucf101_64.py" if "ucf101" in words else "default.py"
    rest = ",".join(sorted(words - {"ucf101"}))
    return vfc.load_config(os.path.join(HERE, base), rest or None)


def get_sweep(arg=None):
    lambdas = experiments.sweep_product({"diffusion.lam": [0.0, 0.25, 0.5, 0.75]})
    vdm = {"_name": "vdm_matched", "model.kind": "vdm", **experiments.matched_vdm(get_config(arg))}
    return lambdas + [vdm]
