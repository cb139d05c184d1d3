"""The efficiency pair: VideoFusion with a large pretrained base generator and a light residual
generator, against a VDM of the same quality class (issue 14; UCF101, 16 frames at 64x64).

    python -m vfjax.bench efficiency          # both: FLOPs and memory compiled, latency on CPU
    python -m vfjax.main --config=configs/efficiency.py --workdir=runs/efficiency_vf
    python -m vfjax.main --config=configs/efficiency.py:vdm --workdir=runs/efficiency_vdm

The paper reports about 22% less memory and 57% lower latency than its VDM re-implementation and
credits them to the shared base noise and a large pretrained base generator; it does not give the
networks of that comparison. This pair is our reading of it, not the paper's configuration:
- VideoFusion: the base generator is the public improved-diffusion ImageNet 64x64 unconditional
  model (`imagenet64_uncond_100M_1500K`, 121M parameters; converted once with the command the
  run's error names), run on the key frame only; the residual generator is the benchmark's video
  UNet (`configs/ucf101_64.py`) at half its width: 64 channels, 32-wide attention heads, 13.0M
  parameters (134M in all).
- VDM (`vdm` after the colon): one video UNet, the benchmark's at full width (128 channels, 51.7M
  parameters), the network our UCF101 64x64 benchmark trains for the paper's quality. Same data,
  noise schedule (the base checkpoint's: cosine, 4000 steps), optimiser and batch as VideoFusion.
- `runlocal` keeps the pair's proportion at CPU size: the residual generator half the VDM's width.
"""

import os

from vfjax import config as vfc
from vfjax import experiments

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg=None):
    words, _ = vfc.parse_arg(arg)
    c = experiments.pretrained_base(vfc.load_config(os.path.join(HERE, "ucf101_64.py")))
    vdm = "vdm" in words
    if vdm:
        # No base generator: nothing to load.
        c.init.base_checkpoint = ""
        c.init.base_conversion = ""
    else:
        c.model.residual.channels = 64
        c.model.residual.head_dim = 32
    c = vfc.apply_variants(c, arg)
    if "runlocal" in words and not vdm:
        c.model.residual.channels = 8
        c.model.residual.num_groups = 4
    return c
