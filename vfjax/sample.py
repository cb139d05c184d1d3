"""`--mode=sample`: videos from a checkpoint's EMA parameters, long videos included.

With `sampling.num_frames` larger than the clip length, each video is made of
`ceil(num_frames / N)` clips that share one base noise while their residual noise differs (the
paper's long-video recipe), and a coherence measure across clip boundaries is written beside the
videos.
"""

import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from vfjax import checkpointing, samples, steps, train
from vfjax import state as state_lib
from vfjax.data import text


def restore_ema(config, setup: state_lib.Setup, workdir: str, step: int = -1):
    """The EMA parameters of checkpoint `step` (-1: the latest) and that step."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No checkpoint in {directory}: train first (--mode=train).")
    ckpt = checkpointing.Checkpointer(directory, every_steps=1, keep=config.keep_checkpoints)
    try:
        latest = ckpt.latest_step()
        if latest is None:
            raise FileNotFoundError(f"No checkpoint in {directory}: train first (--mode=train).")
        step = latest if step < 0 else step
        state, _ = ckpt.restore(setup.abstract_state, step)
    finally:
        ckpt.close()
    return state.ema, step


def _labels(config, start: int, batch: int) -> jax.Array:
    if config.sampling.label >= 0:
        return jnp.full((batch,), config.sampling.label, jnp.int32)
    return (jnp.arange(start, start + batch, dtype=jnp.int32)) % config.model.num_classes


def sample(config, workdir: str) -> dict:
    """Writes `sampling.num_videos` videos (and, for long videos, their coherence) to
    `workdir/samples/`; returns the paths and measures."""
    config, setup = train.setup_run(config, workdir)
    prompts = [p.strip() for p in config.sampling.prompts.split(";") if p.strip()]
    if config.data.cond == "text" and not prompts:
        raise ValueError("A text-conditioned run samples from sampling.prompts ('a;b;...').")
    ema, step = restore_ema(config, setup, workdir, config.eval.step)
    embeddings = text.encode_prompts(config.data, prompts) if prompts else None
    clip = config.data.num_frames
    total = config.sampling.num_frames or clip
    num_clips = math.ceil(total / clip)
    batch = min(config.sampling.batch_size, config.sampling.num_videos)
    sampler = steps.make_sampler(config, setup, batch, num_clips)
    seed = config.sampling.seed
    residual_seed = config.sampling.residual_seed
    residual_seed = seed + 1 if residual_seed is None else residual_seed

    videos = []
    for start in range(0, config.sampling.num_videos, batch):
        base_rng = jax.random.fold_in(jax.random.key(seed), start)
        residual_rng = jax.random.fold_in(jax.random.key(residual_seed), start)
        cond = None
        if config.data.cond == "class":
            cond = {"label": _labels(config, start, batch)}
        elif config.data.cond == "text":
            rows = np.arange(start, start + batch) % len(prompts)
            cond = {"text": jnp.asarray(embeddings[rows])}
        out = sampler(ema, base_rng, residual_rng, cond)
        videos.append(np.asarray(jax.device_get(out))[:, :total])
        logging.info("Sampled %d / %d videos", start + batch, config.sampling.num_videos)
    videos = np.concatenate(videos)[: config.sampling.num_videos]

    result = {"step": step, "num_videos": len(videos), "num_frames": total, "clips": num_clips}
    if prompts:
        result["prompts"] = [prompts[i % len(prompts)] for i in range(len(videos))]
    if jax.process_index() == 0:
        s = config.sampling
        # Every setting that changes the videos is in the name: no run overwrites another's.
        name = f"sample_{step:07d}_{total}f_seed{seed}-{residual_seed}_{s.num_steps}steps"
        name += f"_eta{s.eta:g}" + (f"_w{s.guidance_scale:g}" if config.data.cond != "none" else "")
        name += "" if s.clip_x0 else "_noclip"
        if config.data.cond == "class":
            name += f"_label{s.label}" if s.label >= 0 else "_labels"
        stem = os.path.join(workdir, "samples", name)
        result["paths"] = samples.write_samples(stem, videos, fps=config.sampling.fps)
        np.save(stem + ".npy", videos.astype(np.float16))
        if num_clips > 1:
            result["coherence"] = samples.clip_boundary_coherence(videos, clip)
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=2)
        logging.info("Wrote %s", ", ".join(result["paths"]))
    return result
