"""What an evaluation says: its plan before the long work, and the result it writes.

The result records, beside the numbers, everything needed to compare them: the protocol
(`protocols.describe`), the feature networks and their weights, the model and the sampler.
"""

import logging

import numpy as np

from vfjax import fileio, long_video, samples
from vfjax.evaluation import protocols


def log_plan(config, protocol, step: int, want_is: bool) -> None:
    """What the evaluation is about to do, said before it does it (the progress bars then give
    its estimate: the I3D pass dominates, seconds per clip on a CPU)."""
    n = config.data.num_frames
    made = (
        f"as {long_video.num_clips(config, protocol.num_frames)} clips of {n} "
        f"({config.sampling.long_method})"
        if protocol.num_frames > n
        else "as one clip each"
    )
    logging.info(
        "Evaluating step %d under the %s protocol%s: %d generated videos of %d frames made %s "
        "(%d sampling steps, batches of %d) against %d real clips from %s (stride %d), I3D at "
        "%dx%d%s.",
        step,
        protocol.name,
        "" if protocol.comparable else " (not comparable with published numbers)",
        protocol.num_generated,
        protocol.num_frames,
        made,
        config.sampling.num_steps,
        config.eval.batch_size,
        protocol.num_real,
        protocol.split_for(config.data.split),
        protocol.stride_for(config.data.name),
        protocol.resolution,
        protocol.resolution,
        f"; IS over {protocol.is_num_generated} more" if want_is else "",
    )


def record(config, protocol, network, step: int, cached: bool) -> dict:
    """What the result JSON says about how its numbers were made."""
    result = protocols.describe(
        protocol,
        dataset=config.data.name,
        networks=[network],
        seed=config.eval.seed,
        checkpoint_step=step,
        training_split=config.data.split,
    )
    result.update(
        model_kind=config.model.kind,
        model_clip_frames=config.data.num_frames,
        generated_clips_per_video=long_video.num_clips(config, protocol.num_frames),
        long_method=(
            config.sampling.long_method if protocol.num_frames > config.data.num_frames else None
        ),
        generated_resolution=config.data.resolution,
        sampler={
            "num_steps": config.sampling.num_steps,
            "eta": config.sampling.eta,
            "guidance_scale": config.sampling.guidance_scale,
            "parameters": "ema" if config.sampling.use_ema else "raw",
            "condition": {
                "class": "labels cycled 0..K-1",
                "text": f"captions of random {protocol.split_for(config.data.split)} videos",
                "none": None,
            }[config.data.cond],
        },
        real_features_cached=cached,
    )
    return result


def write(workdir, protocol, step, result: dict, grid: np.ndarray, fps: int) -> None:
    """The result JSON, and the first generated videos as a grid (GIF, MP4) and as values
    (`.npy`, `[videos, frames, H, W, C]` in [-1, 1]), named `<protocol>_<step>`."""
    stem = fileio.join(workdir, "eval", f"{protocol.name}_{step}")
    fileio.write_json(f"{stem}.json", result)
    samples.write_samples(stem, grid, fps=fps)
    fileio.save_npy(f"{stem}.npy", grid.astype(np.float16))
    logging.info(
        "FVD %.2f%s at step %s (%s); wrote %s.json",
        result["fvd"],
        f", KVD {result['kvd']:.4f}" if "kvd" in result else "",
        step,
        protocol.name,
        stem,
    )
