"""TaiChi-HD, unconditional, 16 frames at 128x128, every 4th frame.

Target (paper): FVD 56.4, KVD 6.9. Prepared once from the first-order-motion layout (train/ and
test/, one mp4 or frame folder per video), then trained:

    python -m vfjax.main --config=configs/taichi_128.py --workdir=runs/taichi_128 --mode=prepare \
        --config.data.manual_dir=/data/taichi --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/taichi_128.py --workdir=runs/taichi_128 \
        --config.data.data_dir=/data/tfds

Variants `vdm`, `runlocal` and `pretrained` as `experiments.benchmark_variants` describes;
the setup (the paper's and ours) as `experiments.paper_benchmark`.
"""

from vfjax import experiments


def get_config(arg=None):
    c = experiments.paper_benchmark(128)
    c.data.name = "taichi"
    c.data.split = "train"
    c.data.stride = 4  # TaiChi-HD protocols take every 4th frame.
    c.eval.protocol = "tats"  # FVD with KVD alongside, as reported for this data set.
    return experiments.benchmark_variants(c, arg)
