"""Long videos from a model of short clips: how the clips are made and joined.

A model trained on clips of N frames makes a video of F > N frames in one of two ways
(`sampling.long_method`):

- `'shared_base'`, the paper's recipe: all clips of a video at once, every one with the same
  base noise and its own residual noise. Clips that share the base share their content; but
  every clip's key frame (whose noise is the base noise alone) comes out the same image, and the
  clips do not join (nothing ties the last frame of one to the first of the next).
- `'continue'`: clip after clip, each new clip holding the last `overlap` frames of the video so
  far and generating the others around them (their values replace the model's estimate at every
  step: `sampling.ddim_step`'s known frames, the "replacement" of Ho et al.'s video diffusion
  models). By default the overlap reaches the key frame (`key_frame + 1` frames), so that the
  base generator, which reads the key frame alone, reads one that is already there; each clip
  then adds `N - overlap` frames. Its base noise is the first clip's (`sampling.long_base =
  'shared'`) or its own (`'new'`). With `sampling.long_guidance = w_r > 0` the generated frames
  are also steered towards the held ones by reconstruction guidance (Ho et al.'s eq. 7,
  `vfjax.diffusion.sampling.make_step`): replacement alone conditions them on the held frames'
  noisy latents only, and the clips meet with a jump. With `sampling.long_anchor` the later
  clips' attention to the key frame reads the first clip's key frame (`vfjax.models.unet3d.
  UNet3D`'s `key_reference`): their held frames say where the object is and how it moves, the
  first key frame what it looks like. A model trained with held frames
  (`diffusion.context_rate`, `model.residual.held_frames`) is shown them clean and flagged at
  every step besides (`sampling.sample`'s `show_known`, `steps.shows_held`), as in its training.

`make_long_sampler` returns one function for both; `clip_starts` says where each clip's own
frames begin (for the boundary measures of `vfjax.consistency`).
"""

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np

from vfjax import steps
from vfjax.diffusion import decomposed


def overlap_of(config) -> int:
    """Frames a continuation clip holds: `sampling.long_overlap`, or up to the key frame."""
    n = config.data.num_frames
    key = decomposed.key_frame_index(n, config.diffusion.key_frame)
    overlap = config.sampling.long_overlap or key + 1
    if not 1 <= overlap < n:
        raise ValueError(f"sampling.long_overlap must be in [1, {n - 1}], got {overlap}.")
    return overlap


def clip_starts(config, total: int) -> list[int]:
    """The frame where each clip's own frames begin, after the first clip (index 0)."""
    n = config.data.num_frames
    step = n if config.sampling.long_method == "shared_base" else n - overlap_of(config)
    return list(range(n, total, step))


def num_clips(config, total: int) -> int:
    return 1 + len(clip_starts(config, total))


def generated_key_frames(config, total: int) -> list[int]:
    """Where the base generator drew a key frame: in every clip for `'shared_base'`; in the
    first clip alone for `'continue'` (the later clips hold theirs)."""
    n = config.data.num_frames
    key = decomposed.key_frame_index(n, config.diffusion.key_frame)
    if config.sampling.long_method == "shared_base" or total <= n:
        return [s + key for s in range(0, total, n) if s + key < total]
    overlap = overlap_of(config)
    if overlap > key:
        return [key]
    # A shorter overlap leaves each continuation clip's key frame to the base generator.
    starts = [s - overlap for s in clip_starts(config, total)]
    return [key] + [s + key for s in starts if s + key < total]


def make_long_sampler(config, setup, batch: int, total: int, clip_sampler=None):
    """`(params, base_rng, residual_rng, cond) -> videos [batch, total, H, W, C]` (a global
    array, split over the devices like the sampler's), made by `sampling.long_method`.

    `clip_sampler`, `steps.make_sampler(config, setup, batch)` (made here when not given), draws
    the single clips; pass the one `independent_clips` gets and each program compiles once."""
    n = config.data.num_frames
    if config.sampling.long_method == "shared_base" and total > n:
        sampler = steps.make_sampler(config, setup, batch, math.ceil(total / n))
        return lambda params, b, r, cond: sampler(params, b, r, cond, None)[:, :total]
    sampler = steps.make_sampler(config, setup, batch) if clip_sampler is None else clip_sampler
    if total <= n:
        return lambda params, b, r, cond: sampler(params, b, r, cond, None)[:, :total]
    overlap = overlap_of(config)
    mask = np.arange(n) < overlap
    shared = config.sampling.long_base == "shared"
    anchored = config.sampling.get("long_anchor", False)
    key = decomposed.key_frame_index(n, config.diffusion.key_frame)

    clips = num_clips(config, total)

    def long_sampler(params, base_rng, residual_rng, cond):
        video = sampler(params, base_rng, residual_rng, cond, None)
        clip_cond = cond
        if anchored:
            clip_cond = {**(cond or {}), "key_reference": video[:, key]}
        for j in range(1, clips):
            # Progress, clip by clip (each clip needs the one before: waiting costs nothing).
            jax.block_until_ready(video)
            logging.info("Long video: %d of %d clips done", j, clips)
            held = video[:, -overlap:]
            values = jnp.concatenate([held, jnp.zeros_like(video[:, : n - overlap])], axis=1)
            clip = sampler(
                params,
                base_rng if shared else jax.random.fold_in(base_rng, j),
                jax.random.fold_in(residual_rng, j),
                clip_cond,
                (values, mask),
            )
            video = jnp.concatenate([video, clip[:, overlap:]], axis=1)
        return video[:, :total]

    return long_sampler


def independent_clips(config, setup, batch: int, total: int, clip_sampler=None):
    """`(params, base_rng, residual_rng, cond) -> videos`: clips drawn each with its own base
    noise, side by side: the reference of the content-consistency measure. `clip_sampler` as
    `make_long_sampler`'s."""
    n = config.data.num_frames
    sampler = steps.make_sampler(config, setup, batch) if clip_sampler is None else clip_sampler

    def reference(params, base_rng, residual_rng, cond):
        logging.info(
            "Content-consistency reference: %d clips, each with its own base noise",
            math.ceil(total / n),
        )
        clips = [
            sampler(
                params,
                jax.random.fold_in(base_rng, 1000 + j),
                jax.random.fold_in(residual_rng, 1000 + j),
                cond,
                None,
            )
            for j in range(math.ceil(total / n))
        ]
        return jnp.concatenate(clips, axis=1)[:, :total]

    return reference
