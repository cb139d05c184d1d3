"""TaiChi-HD, unconditional, 16 frames at 128x128, every 4th frame.

Prepare the data set once (the first-order-motion layout: train/ and test/, one mp4 or frame
folder per video), then train:

    python -m vfjax.main --config=configs/taichi_128.py --workdir=runs/taichi_128 --mode=prepare \
        --config.data.manual_dir=/data/taichi --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/taichi_128.py --workdir=runs/taichi_128 \
        --config.data.data_dir=/data/tfds

Variants: `vdm` (VDM baseline, same residual network), `runlocal` (CPU smoke run on the same
data). Target (paper): FVD 56.4, KVD 6.9.

Known from the paper: decomposed noise with lambda = 0.5 for non-key frames (its ablation's best),
key frame N // 2, stop-gradient joint training, DDIM/DDPM sampling. Not stated (our choices, in
the VDM family): the UNet widths and depths, optimiser settings, step count and batch size.
"""

from vfjax import config as vfc
from vfjax import experiments


def get_config(arg=None):
    c = experiments.paper_benchmark(128)
    c.data.name = "taichi"
    c.data.split = "train"
    c.data.stride = 4  # TaiChi-HD protocols take every 4th frame.
    c.eval.protocol = "tats"  # FVD with KVD alongside, as reported for this data set.
    return vfc.apply_variants(c, arg)
