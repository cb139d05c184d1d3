"""Sky Time-lapse, unconditional, 16 frames at 128x128.

Prepare the data set once (the MDGAN layout: sky_train/ and sky_test/ folders of frames), then
train:

    python -m vfjax.main --config=configs/sky_128.py --workdir=runs/sky_128 --mode=prepare \
        --config.data.manual_dir=/data/sky_timelapse --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/sky_128.py --workdir=runs/sky_128 \
        --config.data.data_dir=/data/tfds

Variants: `vdm` (VDM baseline, same residual network), `runlocal` (CPU smoke run on the same
data). Target (paper): FVD 47.0, KVD 5.3.

Known from the paper: decomposed noise with lambda = 0.5 for non-key frames (its ablation's best),
key frame N // 2, stop-gradient joint training, DDIM/DDPM sampling. Not stated (our choices, in
the VDM family): the UNet widths and depths, optimiser settings, step count and batch size.
"""

from vfjax import config as vfc
from vfjax import experiments


def get_config(arg=None):
    c = experiments.paper_benchmark(128)
    c.data.name = "sky_timelapse"
    c.data.split = "train"
    c.eval.protocol = "tats"  # FVD with KVD alongside, as reported for this data set.
    return vfc.apply_variants(c, arg)
