"""UCF101, unconditional, 16 frames at 128x128 (the paper's second UCF101 row).

Target (paper): IS 72.22, FVD 220; class-conditional (`class`), IS 80.03, FVD 173.

    python -m vfjax.main --config=configs/ucf101_128.py --workdir=runs/ucf101_128 --mode=prepare \
        --config.data.manual_dir=/data/UCF101 --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/ucf101_128.py --workdir=runs/ucf101_128 \
        --config.data.data_dir=/data/tfds

The first command prepares UCF101 (extracted, with its split lists; see README) once. Other
words after the colon: `vdm`, `image`, `runlocal`, `pretrained`
(`experiments.benchmark_variants`); the paper's setup and our choices:
`experiments.paper_choices`, appended to this docstring (`print(module.__doc__)`).

TPU (compiled on a CPU for the slice, PERFORMANCE.md "TPU programs compiled on this CPU"):
`v5e:4x8`, 1 video a chip (8.2 GB of the chip's 16 GiB), the batch of 32 on 32 chips, step
bound 319 ms by memory (XLA's TPU cost model), 1136 chip-hours for 400k steps at that bound
(before the GroupNorm change: 12.0 GB, 394 ms, 1402 chip-hours). Beyond its state (2.98 GB)
one video takes 5.3 GB, so 2 videos a chip (about 13.5 GB, under 90% of the chip's 17.2) would
fit on `v5e:4x4`: not compiled yet.
"""

from vfjax import experiments

__doc__ += experiments.paper_choices(128)  # The choices: the paper's and ours.


def get_config(arg=None):
    c = experiments.ucf101_benchmark(128, protocol="tats")
    return experiments.benchmark_variants(c, arg)
