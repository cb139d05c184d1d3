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
`v5e:4x8`, 1 video a chip (12.0 GB of the chip's 16 GiB), the batch of 32 on 32 chips, step
bound 394 ms by memory (XLA's TPU cost model), 1402 chip-hours for
400k steps at that bound; compiled before the GroupNorm change, which took `ucf101_64`'s
case from 11.1 to 7.9 GB and from 318 to 275 ms.
"""

from vfjax import experiments

__doc__ += experiments.paper_choices(128)  # The choices: the paper's and ours.


def get_config(arg=None):
    c = experiments.ucf101_benchmark(128, protocol="tats")
    return experiments.benchmark_variants(c, arg)
