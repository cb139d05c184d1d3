"""UCF101, unconditional, 16 frames at 128x128 (the paper's second UCF101 row).

Prepare the data set once (UCF101 extracted with its split lists, see README), then train:

    python -m vfjax.main --config=configs/ucf101_128.py --workdir=runs/ucf101_128 --mode=prepare \
        --config.data.manual_dir=/data/UCF101 --config.data.data_dir=/data/tfds
    python -m vfjax.main --config=configs/ucf101_128.py --workdir=runs/ucf101_128 \
        --config.data.data_dir=/data/tfds

Variants: `vdm` (VDM baseline, same residual network), `class` (class-conditional, guidance),
`runlocal` (CPU smoke run on the same data). Target (paper): unconditional IS 72.22, FVD 220;
with `class`, IS 80.03, FVD 173.

Known from the paper: decomposed noise with lambda = 0.5 for non-key frames (its ablation's best),
key frame N // 2, stop-gradient joint training, DDIM/DDPM sampling. Not stated (our choices, in
the VDM family): the UNet widths and depths, optimiser settings, step count and batch size.
"""

from vfjax import config as vfc


def get_config(arg=None):
    c = vfc.base_config()
    c.total_steps = 400_000
    c.batch_size = 32
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5_000
    c.sample_every_steps = 20_000

    c.data.name = "ucf101"
    c.data.num_frames = 16
    c.data.resolution = 128
    c.data.ucf_split = 1
    c.data.split = "train+test"  # Unconditional UCF101 benchmarks train on all 13,320 videos.

    c.model.base = vfc.base_unet(
        channels=128,
        channel_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(16, 8),
        head_dim=64,
        dropout=0.1,
        scale_shift=True,
    )
    c.model.residual = vfc.residual_unet(
        channels=128,
        channel_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(16, 8),
        temporal_attn_resolutions=(32, 16, 8),
        head_dim=64,
        dropout=0.1,
        scale_shift=True,
    )
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 5_000
    c.optim.ema_decay = 0.9999
    c.mesh.fsdp = 1

    c.sampling.num_steps = 100
    c.eval.protocol = "tats"
    return vfc.apply_variants(c, arg)
