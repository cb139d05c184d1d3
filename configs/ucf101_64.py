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
"""

from vfjax import experiments

__doc__ += experiments.paper_choices(64)  # The choices: the paper's and ours.


def get_config(arg=None):
    c = experiments.ucf101_benchmark(64, protocol="stylegan_v")
    return experiments.benchmark_variants(c, arg)
