"""The peer's architecture: diffusers' UNet3DConditionModel as benchmarked in vfjax/bench/peer/.

channels 128/256/256/512, 2 layers per block, spatial transformers (self- and cross-attention to
a 512-wide context, GEGLU feed-forward) and temporal transformers at the three upper levels, the
mid block and a temporal transformer of width 512 after `conv_in`, four temporal convolutions per
block; 149.0M parameters (the peer: 148.7M; the difference is our frame-index embedding). As
`vdm` it is the peer's network, trained like it; the default, `videofusion`, puts a base
generator of the same family beside it. Pixel-space 16x64x64 videos, bf16 compute.

    python -m vfjax.bench --config=configs/peer_unet3d.py:vdm --steps=20 --json=peer_vdm.json
    python -m vfjax.bench --config=configs/peer_unet3d.py --steps=20 --json=peer_vf.json

Target (issue 6, one H100): at least 4x the peer's 7.2 videos/s at batch 4 and batch 16 in
80 GB; 50-step DDIM sampling at least 5x the peer's 0.65 videos/s at batch 16.
Differences kept: diffusers' `attention_head_dim=64` means 64 heads (of width 2 at 128
channels); here heads are 64 wide (same FLOPs, GPU-friendly); text context is one token.
"""

from vfjax import config as vfc


def get_config(arg=None):
    c = vfc.base_config()
    c.batch_size = 16
    c.total_steps = 100_000
    c.data.name = "synthetic"
    c.data.num_frames = 16
    c.data.resolution = 64
    # Like the peer: cross-attention to a one-token 512-wide context (the benchmark feeds zeros;
    # training this config needs a data set with text embeddings).
    c.data.cond = "text"
    c.model.text_dim = 512
    c.model.residual = vfc.residual_unet(
        channels=128,
        channel_mult=(1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(64, 32, 16),
        temporal_attn_resolutions=(64, 32, 16),
        attn_type="transformer",
        temporal_input_attention=True,
        temporal_input_dim=512,
        temporal_conv_layers=4,
        head_dim=64,
        num_groups=32,
        norm_eps=1e-5,
    )
    c.model.base = vfc.base_unet(
        channels=128,
        channel_mult=(1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(32, 16),
        attn_type="transformer",
        head_dim=64,
    )
    c.sampling.num_steps = 50
    c.sampling.batch_size = 16
    c.mesh.data = -1
    return vfc.apply_variants(c, arg)
