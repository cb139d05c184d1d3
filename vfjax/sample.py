"""`--mode=sample`: videos from a checkpoint's EMA parameters, long videos included.

Beside the videos (`samples/sample_*.gif|mp4|npy`), a JSON holds their frame-consistency
measures against as many real clips (on the synthetic set also the share of videos that obey its
law, `data_law`, and `*_beside_real.png` shows the first 16 beside 16 real clips); with
`sampling.num_frames` larger than the clip length, the videos are long videos
(`vfjax.long_video`) and the JSON also holds how their clips join, whether frames repeat, and how
alike their content stays.
"""

import logging

import jax
import numpy as np

from vfjax import consistency, distributed, fileio, long_video, run_setup, samples, steps
from vfjax import data as data_lib
from vfjax.data import synthetic_law, text
from vfjax.diffusion import decomposed


def _labels(config, start: int, batch: int) -> np.ndarray:
    """Host arrays (the same on every process) enter the sampler replicated."""
    if config.sampling.label >= 0:
        return np.full((batch,), config.sampling.label, np.int32)
    return np.arange(start, start + batch, dtype=np.int32) % config.model.num_classes


def sample(config, workdir: str) -> dict:
    """Writes `sampling.num_videos` videos and their measures to `workdir/samples/`; returns
    the paths and measures. With `sampling.num_frames` larger than the clip, the videos are
    long videos made by `sampling.long_method` (`vfjax.long_video`)."""
    config, setup = run_setup.setup_run(config, workdir)
    prompts = [p.strip() for p in config.sampling.prompts.split(";") if p.strip()]
    if config.data.cond == "text" and not prompts:
        raise ValueError("A text-conditioned run samples from sampling.prompts ('a;b;...').")
    ema, step = run_setup.restore_ema(config, setup, workdir, config.eval.step)
    embeddings = text.encode_prompts(config.data, prompts) if prompts else None
    clip = config.data.num_frames
    total = config.sampling.num_frames or clip
    long = total > clip
    batch = min(config.sampling.batch_size, config.sampling.num_videos)
    # One sampler of single clips for both: each of its programs compiles once.
    clips = steps.make_sampler(config, setup, batch)
    sampler = long_video.make_long_sampler(config, setup, batch, total, clips)
    reference = long_video.independent_clips(config, setup, batch, total, clips) if long else None
    seed = config.sampling.seed
    residual_seed = config.sampling.residual_seed
    residual_seed = seed + 1 if residual_seed is None else residual_seed

    videos, independent = [], []
    for start in range(0, config.sampling.num_videos, batch):
        keys = (
            jax.random.fold_in(jax.random.key(seed), start),
            jax.random.fold_in(jax.random.key(residual_seed), start),
        )
        cond = None
        if config.data.cond == "class":
            cond = {"label": _labels(config, start, batch)}
        elif config.data.cond == "text":
            rows = np.arange(start, start + batch) % len(prompts)
            cond = {"text": np.asarray(embeddings[rows])}
        videos.append(distributed.to_host(sampler(ema, *keys, cond)))
        if reference is not None:
            independent.append(distributed.to_host(reference(ema, *keys, cond)))
        logging.info("Sampled %d / %d videos", start + batch, config.sampling.num_videos)
    videos = np.concatenate(videos)[: config.sampling.num_videos]

    result = {"step": step, "num_videos": len(videos), "num_frames": total}
    if long:
        result["long_method"] = config.sampling.long_method
        result["clips"] = long_video.num_clips(config, total)
    if prompts:
        result["prompts"] = [prompts[i % len(prompts)] for i in range(len(videos))]
    if distributed.is_main():
        stem = fileio.join(workdir, "samples", _name(config, step, total, seed, residual_seed))
        result["paths"] = samples.write_samples(stem, videos, fps=config.sampling.fps)
        fileio.save_npy(f"{stem}.npy", videos.astype(np.float16))
        if long:
            real = None
            if synthetic_law.applies(config.data):  # Real videos of the same length.
                real = synthetic_law.real_clips(config.data, len(videos), total)
            result["long_video"] = consistency.long_video_report(
                videos,
                np.concatenate(independent)[: len(videos)],
                long_video.clip_starts(config, total),
                clip,
                real,
            )
        result["consistency"] = frame_consistency(config, videos)
        if synthetic_law.applies(config.data):
            result["data_law"] = data_law(config, videos)
            if not long:  # What the law measures, to the eye: filmstrips beside real clips.
                result["paths"].append(beside_real(config, videos, f"{stem}_beside_real.png"))
        fileio.write_json(f"{stem}.json", result)
        logging.info("Wrote %s", ", ".join(result["paths"]))
        _log_consistency(result["consistency"])
        if "data_law" in result:
            law = result["data_law"]
            logging.info(
                "Data law (synthetic set): %.1f%% of the generated videos obey it, %.1f%% of as "
                "many real ones; per criterion %s; shape's halves %s",
                100 * law["generated"]["share"],
                100 * law["real"]["share"],
                law["generated"]["criteria"],
                law["generated"]["shape_parts"],
            )
    return result


def _name(config, step: int, total: int, seed: int, residual_seed: int) -> str:
    """Every setting that changes the videos is in the name: no run overwrites another's."""
    s = config.sampling
    name = f"sample_{step:07d}_{total}f_seed{seed}-{residual_seed}_{s.num_steps}steps"
    name += f"_eta{s.eta:g}" + (f"_w{s.guidance_scale:g}" if config.data.cond != "none" else "")
    name += "" if s.clip_x0 else "_noclip"
    if not s.use_ema:
        name += "_raw"
    if total > config.data.num_frames:
        name += f"_{s.long_method}"
        if s.long_method == "continue":
            name += f"{long_video.overlap_of(config)}_{s.long_base}base"
            name += f"_guided{s.long_guidance:g}" if s.long_guidance > 0 else ""
            name += "_anchored" if s.get("long_anchor", False) else ""
            context = s.get("long_context_guidance", 1.0)
            name += f"_context{context:g}" if context != 1.0 else ""
    if config.data.cond == "class":
        name += f"_label{s.label}" if s.label >= 0 else "_labels"
    return name


def real_clips(config, count: int) -> np.ndarray:
    """The first `count` clips of the training data (its order at `config.seed`), as the model
    sees them: the reference of the frame-consistency measures."""
    loader = data_lib.create_loader(config.data, global_batch_size=count, seed=config.seed)
    try:
        return next(loader)["video"]
    finally:
        loader.close()


def frame_consistency(config, videos: np.ndarray) -> dict:
    """The frame-consistency measures of `videos` beside those of as many real clips (for a
    long video: of its clips, each measured as a clip of the training length)."""
    clip = config.data.num_frames
    key = decomposed.key_frame_index(clip, config.diffusion.key_frame)
    usable = videos.shape[1] // clip * clip
    clips = videos[:, :usable].reshape((-1, clip) + videos.shape[2:])
    generated = consistency.report(consistency.video_stats(clips), key)
    real = consistency.report(consistency.video_stats(real_clips(config, len(clips))), key)
    return consistency.compare(generated, real)


def data_law(config, videos: np.ndarray) -> dict:
    """The synthetic set's law (`vfjax.data.synthetic_law`) scored on the generated videos,
    whole (a long video as one), beside as many real videos of the same length; with each side's
    turns away from the walls (a long video's: also how many at its seams, the frame before each
    clip's first new one) and, for long videos, where the law breaks: over growing prefixes and
    over the clips' length of windows (`synthetic_law.long_report`)."""
    law = synthetic_law.Law.of(config.data)
    real = synthetic_law.real_clips(config.data, len(videos), videos.shape[1])
    total, n = videos.shape[1], config.data.num_frames
    seams = [s - 1 for s in long_video.clip_starts(config, total)] if total > n else None
    return {
        "generated": synthetic_law.long_report(videos, law, n, seams),
        "real": synthetic_law.long_report(real, law, n),
    }


def beside_real(config, videos: np.ndarray, path: str, count: int = 16) -> str:
    """A PNG of the first `count` videos as filmstrips (one row each, frames left to right) on
    the left, as many real clips of the synthetic set on the right; returns its path."""
    shown = videos[:count]
    real = synthetic_law.real_clips(config.data, len(shown), shown.shape[1])
    image = samples.side_by_side(samples.filmstrips(shown), samples.filmstrips(real))
    return samples.write_png(path, image)


def _log_consistency(measures: dict) -> None:
    gen, real = measures["generated"], measures["real"]
    logging.info(
        "Frame consistency (generated / real): key-frame jump ratio %s / %s, key-frame mean "
        "%.3f / %.3f, other frames' mean %.3f / %.3f",
        gen.get("key_frame_jump_ratio"),
        real.get("key_frame_jump_ratio"),
        gen["key_frame_mean"],
        real["key_frame_mean"],
        gen["other_frames_mean"],
        real["other_frames_mean"],
    )
