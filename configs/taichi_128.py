"""TaiChi-HD, unconditional, 16 frames at 128x128, every 4th frame.

Target (paper): FVD 56.4, KVD 6.9. Prepared once from the first-order-motion layout (train/ and
test/, one mp4 or frame folder per video), then trained:

    python -m vfjax.main --config=configs/taichi_128.py --workdir=runs/taichi_128 --mode=prepare \
        --config.data.manual_dir=/data/taichi --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/taichi_128.py --workdir=runs/taichi_128 \
        --config.data.data_dir=/data/tfds

Variants `vdm`, `image`, `runlocal` and `pretrained` as `experiments.benchmark_variants` describes
(no `class`: the set has no labels);
the setup (the paper's and ours) as `experiments.paper_choices`, appended to
this docstring (`print(module.__doc__)`).

TPU (the program of `ucf101_128.py`, the same lowered text, compiled on a CPU for the slice:
PERFORMANCE.md, "TPU programs compiled on this CPU"): `v5e:4x8`, 1 video a chip (8.2 GB of the
chip's 16 GiB), the batch of 32 on 32 chips, step bound 319 ms by memory (XLA's TPU cost model),
1136 chip-hours for 400k steps at that bound (before the GroupNorm change: 12.0 GB, 394 ms).
"""

from vfjax import experiments

__doc__ += experiments.paper_choices(128)  # The choices: the paper's and ours.


def get_config(arg=None):
    # Every 4th frame, as TaiChi-HD protocols take it; FVD with KVD, as reported.
    c = experiments.benchmark_on(128, "taichi", protocol="tats", stride=4)
    return experiments.benchmark_variants(c, arg)
