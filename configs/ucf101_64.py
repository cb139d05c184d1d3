"""UCF101, unconditional, 16 frames at 64x64 (the paper's first UCF101 row).

Prepare the data set once (UCF101 extracted with its split lists, see README), then train:

    python -m vfjax.main --config=configs/ucf101_64.py --workdir=runs/ucf101_64 --mode=prepare \
        --config.data.manual_dir=/data/UCF101 --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/ucf101_64.py --workdir=runs/ucf101_64 \
        --config.data.data_dir=/data/tfds

Variants: `vdm` (VDM baseline, same residual network), `class` (class-conditional, guidance),
`runlocal` (CPU smoke run on the same data). Target (paper, Table 1): IS 71.67, FVD 139.

`pretrained` (after the colon, with any of the others): the base generator is the public
checkpoint `imagenet64_uncond_100M_1500K`, converted once with the command the run's error names.

Known from the paper: decomposed noise with lambda = 0.5 for non-key frames (its ablation's best),
key frame N // 2, stop-gradient joint training, DDIM/DDPM sampling, a base generator that may be a
pretrained image model. Ours, not the paper's (`experiments.paper_benchmark`):
- both generators: 128 channels, multipliers (1, 2, 2, 2), 2 residual blocks per level, spatial
  attention at 16x16 and 8x8 with 64-channel heads, dropout 0.1, scale-shift norms;
- AdamW at 1e-4 after 5k warm-up steps, EMA 0.9999, batch 64, 400k steps, the linear 1000-step
  noise schedule, 100 sampling steps;
- with `pretrained`: the checkpoint imagenet64_uncond_100M_1500K (improved-diffusion: cosine
  schedule, 4000 steps);
- the evaluation protocol and real-data split named below.
"""

from vfjax import experiments


def get_config(arg=None):
    c = experiments.paper_benchmark(64)
    c.data.name = "ucf101"
    c.data.ucf_split = 1
    c.data.split = "train+test"  # Unconditional UCF101 benchmarks train on all 13,320 videos.
    c.eval.protocol = "stylegan_v"
    return experiments.benchmark_variants(c, arg)
