"""UCF101, unconditional, 16 frames at 128x128 (the paper's second UCF101 row).

Prepare the data set once (UCF101 extracted with its split lists, see README), then train:

    python -m vfjax.main --config=configs/ucf101_128.py --workdir=runs/ucf101_128 --mode=prepare \
        --config.data.manual_dir=/data/UCF101 --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/ucf101_128.py --workdir=runs/ucf101_128 \
        --config.data.data_dir=/data/tfds

Variants: `vdm` (VDM baseline, same residual network), `class` (class-conditional, guidance),
`runlocal` (CPU smoke run on the same data). Target (paper): unconditional IS 72.22, FVD 220;
with `class`, IS 80.03, FVD 173.

`pretrained` (after the colon, with any of the others): the base generator is the public
checkpoint `256x256_diffusion_uncond`, converted once with the command the run's error names.

Known from the paper: decomposed noise with lambda = 0.5 for non-key frames (its ablation's best),
key frame N // 2, stop-gradient joint training, DDIM/DDPM sampling, a base generator that may be a
pretrained image model. Ours, not the paper's (`experiments.paper_benchmark`):
- both generators: 128 channels, multipliers (1, 1, 2, 2, 4), 2 residual blocks per level, spatial
  attention at 16x16 and 8x8 with 64-channel heads, dropout 0.1, scale-shift norms;
- AdamW at 1e-4 after 5k warm-up steps, EMA 0.9999, batch 32, 400k steps, the linear 1000-step
  noise schedule, 100 sampling steps;
- with `pretrained`: the checkpoint 256x256_diffusion_uncond (guided-diffusion: linear
  schedule, 1000 steps), run at 128 with its attention at the same levels;
- the evaluation protocol and real-data split named below.
"""

from vfjax import experiments


def get_config(arg=None):
    c = experiments.paper_benchmark(128)
    c.data.name = "ucf101"
    c.data.ucf_split = 1
    c.data.split = "train+test"  # Unconditional UCF101 benchmarks train on all 13,320 videos.
    c.eval.protocol = "tats"
    return experiments.benchmark_variants(c, arg)
