"""The experiment configs: every file and variant loads and validates; the ablations keep what
they claim fixed."""

import glob
import os

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
    (vdm_point,) = [p for p in experiments.load_sweep(path) if p.get("model.kind") == "vdm"]
    vdm = c.copy_and_resolve_references()
    vdm.update_from_flattened_dict({k: v for k, v in vdm_point.items() if k[0] != "_"})
    assert vdm.model.kind == "vdm"
    assert abs(experiments.parameter_count(vdm) - vf) / vf < 0.1
    # The lambda points change the noise only: VideoFusion's networks are the same for all.
    lams = [p["diffusion.lam"] for p in experiments.load_sweep(path) if "diffusion.lam" in p]
    assert lams == [0.0, 0.25, 0.5, 0.75]
    assert all(
        set(p) == {"diffusion.lam"} for p in experiments.load_sweep(path) if "diffusion.lam" in p
    )


def test_base_ablation_points():
    path = os.path.join(ROOT, "configs", "ablation_base.py")
    names = [p["_name"] for p in experiments.load_sweep(path)]
    assert names == [
        "scratch",
        "pretrained",
        "scratch_no_stop_gradient",
        "pretrained_no_stop_gradient",
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
