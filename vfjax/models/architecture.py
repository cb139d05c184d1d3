"""The generators' architecture fields and the model kinds, as plain values (no JAX import).

A config names every field of these dataclasses (`config.base_unet`, `config.residual_unet`) and
is checked against them before anything heavy is imported; `unet2d` and `unet3d` build the
networks from them.
"""

import dataclasses

MODEL_KINDS = ("videofusion", "vdm", "image")


@dataclasses.dataclass(frozen=True)
class UNet2DConfig:
    """Architecture of the base generator; defaults give a small DDPM-style UNet."""

    image_size: int = 64
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 128  # model width: the timestep embedding's; level i has channels * mult[i]
    channel_mult: tuple[float, ...] = (1, 2, 2, 2)  # whole, except ADM-512's leading 0.5
    # Space-to-depth on the way in and back on the way out: the network works on
    # `image_size // patch_size` grids of `patch_size`**2-pixel patches (simple diffusion's
    # downsampling shortcut; DiT's patches), so its levels and attention resolutions count patches.
    patch_size: int = 1
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    mid_attention: bool = True
    attn_type: str = "block"  # 'block' (ADM-style) or 'transformer'
    head_dim: int = 64
    num_heads: int = 0  # > 0: this many heads in every attention layer (overrides head_dim)
    dropout: float = 0.0
    scale_shift: bool = False  # ADM's use_scale_shift_norm
    resblock_updown: bool = False  # resample with residual blocks (ADM's resblock_updown)
    downsample_padding: int = 1  # 0: the original DDPM's bottom/right-only pad (see Downsample)
    zero_init: bool = True  # zero the last layer of every residual branch
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    timestep_scale: float = 1.0  # the network sees t * this (improved-diffusion: 1000 / T)
    num_groups: int = 32
    norm_eps: float = 1e-5
    num_classes: int = 0  # > 0: class embedding (index num_classes is the null class)
    text_dim: int = 0  # > 0: cross-attention to text embeddings of this width
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    attention_impl: str | None = None
    conv_impl: str = "auto"  # 'auto', 'native' or 'matmul_wgrad' (see layers.LayerOpts)
    # Recompute each block's activations in the backward pass instead of keeping them (less
    # memory, about a third more compute).
    remat: bool = False


@dataclasses.dataclass(frozen=True)
class UNet3DConfig:
    """Architecture of the residual generator (and of the VDM baseline's only network)."""

    image_size: int = 64
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    patch_size: int = 1  # As UNet2DConfig.patch_size.
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16, 8)  # spatial attention
    temporal_attn_resolutions: tuple[int, ...] = (64, 32, 16, 8)
    # Joint space-time attention (every position of every frame attends to all of them: content
    # can move between frames) in place of temporal attention at these resolutions (and in the
    # middle block when its resolution is listed).
    spacetime_attn_resolutions: tuple[int, ...] = ()
    mid_attention: bool = True
    attn_type: str = "block"  # 'block' (ADM-style) or 'transformer' (diffusers-style, with FF)
    temporal_input_attention: bool = False  # a temporal transformer right after conv_in
    temporal_input_dim: int = 0  # its width (0: the first level's channels)
    head_dim: int = 64
    temporal_conv_layers: int = 2  # convolutions in each temporal conv block; 0 disables them
    frame_embedding: bool = True
    # Every frame's input also carries the key frame's input (frame N // 2) as extra channels, so
    # each frame sees at full resolution the frame it must follow (image-to-video models condition
    # on their given frame this way). In VideoFusion that slot holds the key frame (the finished
    # one with `diffusion.key_input='clean'`); in VDM the middle frame's noisy latent.
    key_frame_input: bool = False
    # At these resolutions every frame's positions also attend to every position of the key frame
    # (frame N // 2; cross-frame attention as Tune-A-Video and Text2Video-Zero attend to their first
    # frame): a frame can copy what the key frame holds from wherever it is, where temporal
    # attention only sees the key frame at its own position and convolutions only nearby.
    key_frame_attn_resolutions: tuple[int, ...] = ()
    # A learned embedding per frame saying whether the frame is held (given clean: the frames a
    # long video's next clip keeps from the clip before), added to the frame embedding; trained
    # with `diffusion.context_rate` (`decomposed.videofusion_loss`), read from `cond['held']`.
    held_frames: bool = False
    dropout: float = 0.0
    scale_shift: bool = False
    zero_init: bool = True
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    num_groups: int = 32
    norm_eps: float = 1e-5
    num_classes: int = 0
    text_dim: int = 0
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    attention_impl: str | None = None
    conv_impl: str = "auto"  # 'auto', 'native' or 'matmul_wgrad' (see layers.LayerOpts)
    remat: bool = False  # As UNet2DConfig.remat.
