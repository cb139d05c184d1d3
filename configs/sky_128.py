"""Sky Time-lapse, unconditional, 16 frames at 128x128. Target (paper): FVD 47.0, KVD 5.3.

The data set is prepared once from the MDGAN layout (sky_train/ and sky_test/ folders of
frames):

    python -m vfjax.main --config=configs/sky_128.py --workdir=runs/sky_128 --mode=prepare \
        --config.data.manual_dir=/data/sky_timelapse --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/sky_128.py --workdir=runs/sky_128 \
        --config.data.data_dir=/data/tfds

After the colon: `vdm`, `image`, `runlocal`, `pretrained` (`experiments.benchmark_variants`;
no `class`: the set has no labels). What the
paper states and what we chose where it is silent: `experiments.paper_choices`, appended to
this docstring (`print(module.__doc__)`).

TPU (the program of `ucf101_128.py`, the same lowered text, compiled on a CPU for the slice:
PERFORMANCE.md, "TPU programs compiled on this CPU"): `v5e:4x8`, 1 video a chip (8.2 GB of the
chip's 16 GiB), the batch of 32 on 32 chips, step bound 319 ms by memory (XLA's TPU cost model),
1136 chip-hours for 400k steps at that bound (before the GroupNorm change: 12.0 GB, 394 ms).
"""

from vfjax import experiments

__doc__ += experiments.paper_choices(128)  # The choices: the paper's and ours.


def get_config(arg=None):
    # FVD with KVD alongside, as reported for this data set.
    c = experiments.benchmark_on(128, "sky_timelapse", protocol="tats")
    return experiments.benchmark_variants(c, arg)
