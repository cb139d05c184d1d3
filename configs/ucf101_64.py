"""UCF101, unconditional, 16 frames at 64x64 (the paper's first UCF101 row): IS 71.67, FVD 139
(paper, Table 1).

    python -m vfjax.main --config=configs/ucf101_64.py --workdir=runs/ucf101_64 --mode=prepare \
        --config.data.manual_dir=/data/UCF101 --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/ucf101_64.py --workdir=runs/ucf101_64 \
        --config.data.data_dir=/data/tfds

Prepare once (UCF101 extracted with its split lists, see README), then train. `class` after the
colon makes it class-conditional, sampled with classifier-free guidance at scale 1.5; `vdm`,
`image`, `runlocal` and `pretrained` are described in `experiments.benchmark_variants`, the setup
(the paper's and ours, each with its source) in `experiments.paper_choices`, appended to this
docstring (`print(module.__doc__)`).

TPU (compiled on a CPU for the slice: PERFORMANCE.md, "TPU programs compiled on this CPU"):
`v5e:4x4`, 4 videos a chip (13.75 GB of the chip's 16 GiB; 5 would not fit), the batch of 64
on 16 chips, step bound 494 ms by memory (XLA's TPU cost model), 878 chip-hours for 400k steps
at that bound; `v5e:4x8` at 2 videos a chip (7.9 GB) bounds the step at 275 ms, 978 chip-hours.
Before the GroupNorm change (PERFORMANCE.md) the same case took 11.1 GB and 318 ms, and v5p held
2 videos a chip in 11.6 GB of 95 GiB at a 113 ms bound (401 chip-hours on 32 chips). The
`pretrained` variant (172.8M parameters, the base generator the converted 64px checkpoint's):
the same slice, 2 videos a chip in 9.5 GB, bound 295 ms (1048 chip-hours).
"""

from vfjax import experiments

__doc__ += experiments.paper_choices(64)  # The choices: the paper's and ours.


def get_config(arg=None):
    c = experiments.ucf101_benchmark(64, protocol="stylegan_v")
    return experiments.benchmark_variants(c, arg)
