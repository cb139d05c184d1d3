"""UCF101, unconditional, 16 frames at 128x128 (the paper's second UCF101 row).

Prepare the data set once (UCF101 extracted with its split lists, see README), then train:

    python -m vfjax.main --config=configs/ucf101_128.py --workdir=runs/ucf101_128 --mode=prepare \
        --config.data.manual_dir=/data/UCF101 --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/ucf101_128.py --workdir=runs/ucf101_128 \
        --config.data.data_dir=/data/tfds

Variants: `vdm` (VDM baseline, same residual network), `class` (class-conditional, guidance),
`runlocal` (CPU smoke run on the same data). Target (paper): unconditional IS 72.22, FVD 220;
with `class`, IS 80.03, FVD 173.

Known from the paper: decomposed noise with lambda = 0.5 for non-key frames (its ablation's best),
key frame N // 2, stop-gradient joint training, DDIM/DDPM sampling. Not stated (our choices, in
the VDM family): the UNet widths and depths, optimiser settings, step count and batch size.
"""

from vfjax import config as vfc
from vfjax import experiments


def get_config(arg=None):
    c = experiments.paper_benchmark(128)
    c.data.name = "ucf101"
    c.data.ucf_split = 1
    c.data.split = "train+test"  # Unconditional UCF101 benchmarks train on all 13,320 videos.
    c.eval.protocol = "tats"
    return vfc.apply_variants(c, arg)
