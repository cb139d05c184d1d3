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
`v5e:4x8`, 2 videos a chip (11.1 GB of the chip's 16 GiB; 3 would take 15.9 GB by the compiles
at 1 and 2, over 90% of it), the batch of 64 on 32 chips, step bound 318 ms by memory (XLA's TPU
cost model), 1130 chip-hours for 400k steps at that bound. v5p holds the same 2 videos a chip in
11.6 GB of 95 GiB at a 113 ms bound (401 chip-hours on 32 chips).
"""

from vfjax import experiments

__doc__ += experiments.paper_choices(64)  # The choices: the paper's and ours.


def get_config(arg=None):
    c = experiments.ucf101_benchmark(64, protocol="stylegan_v")
    return experiments.benchmark_variants(c, arg)
