"""`--mode=evaluate`: FVD (and KVD, IS) of a checkpoint under a named protocol.

Generated videos come from the checkpoint's EMA parameters through the same sampler as training
previews and the sample mode, in batches sharded over all devices; real clips come from the
training data pipeline under the protocol's frame count, stride and split. Both go through I3D
(and C3D for IS on UCF101) on the same mesh. Real features are cached per data set and protocol.
The result, `workdir/eval/<protocol>_<step>.json`, records everything needed to compare it.
"""

import hashlib
import json
import logging
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from vfjax import consistency, distributed, fileio, long_video, run_setup, samples
from vfjax import data as data_lib
from vfjax.evaluation import c3d, features, i3d, metrics, protocols


def _protocol(config) -> protocols.EvalProtocol:
    """The protocol of `eval.protocol` for this run, with its counts overridden by `eval.*`.

    Refuses, in one line, a protocol whose clips are of another resolution than the run's
    (`clip_resolution`; None follows the run) or whose network input is not I3D's.
    """
    if config.eval.protocol not in protocols.PROTOCOLS:
        raise ValueError(
            f"Unknown evaluation protocol {config.eval.protocol!r}; presets: "
            f"{sorted(protocols.PROTOCOLS)}."
        )
    preset = protocols.PROTOCOLS[config.eval.protocol]
    resolution = config.data.resolution
    if preset.clip_resolution not in (None, resolution):
        raise ValueError(
            f"The {preset.name} protocol compares {preset.clip_resolution}x"
            f"{preset.clip_resolution} clips and this run makes {resolution}x{resolution} ones; "
            "pick a protocol at the run's resolution (stylegan_v and cpu follow the run's)."
        )
    if preset.resolution != i3d.INPUT_SIZE:
        raise ValueError(
            f"I3D takes {i3d.INPUT_SIZE}x{i3d.INPUT_SIZE} frames, not {preset.resolution}."
        )
    overrides = {"clip_resolution": resolution}
    if config.eval.num_generated:
        overrides["num_generated"] = config.eval.num_generated
        overrides["is_num_generated"] = config.eval.num_generated
        # A smaller IS sample (a smoke run) keeps at most one split per clip.
        overrides["is_splits"] = min(preset.is_splits, config.eval.num_generated)
    if config.eval.num_real:
        overrides["num_real"] = config.eval.num_real
    return protocols.get_protocol(config.eval.protocol, **overrides)


def _labels(config, start: int, batch: int) -> np.ndarray:
    """Host arrays (the same on every process) enter the sampler replicated."""
    return (np.arange(start, start + batch) % config.model.num_classes).astype(np.int32)


def generate(config, setup, ema, count: int, num_frames: int, seed: int, captions=None):
    """Yields this process's share of the generated videos, batch by batch: `(videos [b, F, H,
    W, C] numpy, valid [b] bool)`, `count` valid videos over all processes.

    Every process runs the same sampler calls (one program, the batch split over all devices);
    each keeps only the rows its own devices made, so nothing is sampled twice or copied between
    processes. A model whose clips are shorter than `num_frames` makes each video from several
    clips, as `sampling.long_method` says (`vfjax.long_video`). A text-conditioned model is
    conditioned on the batches of caption embeddings that `captions` yields.
    """
    batch = config.eval.batch_size
    sampler = long_video.make_long_sampler(config, setup, batch, num_frames)
    made = 0
    with tqdm(total=count, desc="sampling", unit="video", disable=not distributed.is_main()) as bar:
        while made < count:
            base_rng = jax.random.fold_in(jax.random.key(seed), made)
            residual_rng = jax.random.fold_in(jax.random.key(seed + 1), made)
            cond = None
            if config.data.cond == "class":
                cond = {"label": _labels(config, made, batch)}
            elif config.data.cond == "text":
                cond = {"text": np.asarray(next(captions))}
            videos, rows = distributed.local_rows(sampler(ema, base_rng, residual_rng, cond))
            take = min(batch, count - made)
            made += take
            bar.update(take)
            yield videos, rows < take


def _protocol_loader(config, protocol, seed: int, global_batch: int, **kwargs):
    """The data pipeline under the protocol's frames, stride and split, without flips."""
    data = config.data.copy_and_resolve_references()
    data.num_frames = protocol.num_frames
    data.stride = protocol.stride_for(config.data.name)
    data.split = protocol.split_for(config.data.split)
    data.clip_sampling = protocol.real_clip_sampling
    data.random_flip = False
    return data_lib.create_loader(data, global_batch_size=global_batch, seed=seed, **kwargs)


def caption_embeddings(config, protocol, seed: int):
    """Batches of caption embeddings of the protocol split's videos, the same on every process:
    the prompts of a text-conditioned model's generated videos."""
    loader = _protocol_loader(config, protocol, seed, config.eval.batch_size)
    while True:
        yield next(loader)["text_emb"]


def real_clips(config, protocol, count: int, seed: int):
    """Yields this process's share of the real clips under the protocol's frames, stride and
    split: `(clips, valid)` batches, `count` valid clips over all processes. The clips are the
    same whatever the number of processes (the loader's global order)."""
    batch = config.eval.batch_size
    loader = _protocol_loader(
        config,
        protocol,
        seed,
        batch,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    local = batch // jax.process_count()
    rows = jax.process_index() * local + np.arange(local)
    taken = 0
    while taken < count:
        videos = next(loader)["video"]
        take = min(batch, count - taken)
        taken += take
        yield videos, rows < take


def _rgb(batches):
    """Feature networks take RGB: grey-scale videos repeat their channel."""
    for videos, valid in batches:
        yield (np.repeat(videos, 3, axis=-1) if videos.shape[-1] == 1 else videos), valid


def _cache_path(config, protocol, network):
    data_dir = str(fileio.path(config.data.data_dir)) if config.data.data_dir else ""
    key = {
        "dataset": config.data.name,
        "data_dir": data_dir,
        "synthetic": config.data.synthetic.to_dict() if config.data.name == "synthetic" else None,
        "resolution": config.data.resolution,
        "channels": config.data.channels,
        "protocol": protocols.describe(
            protocol,
            dataset=config.data.name,
            networks=[network],
            seed=0,
            checkpoint_step=0,
            training_split=config.data.split,
        ),
        "seed": config.eval.seed,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    root = config.eval.cache_dir or fileio.join(
        config.data.data_dir or "~/.cache/vfjax", "vfjax_eval_cache"
    )
    return fileio.join(root, f"{config.data.name}_{protocol.name}_{digest}.npy")


def real_features(config, protocol, network, mesh) -> tuple[np.ndarray, dict, bool]:
    """I3D features of the real clips and their frame-consistency totals, from the cache when
    this exact set was computed before (process 0 looks, and tells the others, so that all of
    them take the same path)."""
    path = _cache_path(config, protocol, network)
    stats_path = path.with_suffix(".consistency.json")
    cached = path.exists() and stats_path.exists() if distributed.is_main() else False
    if jax.process_count() > 1:
        cached = bool(multihost_utils.broadcast_one_to_all(np.int32(cached)))
    if cached:
        logging.info("Real features from the cache %s", path)
        totals = {k: np.asarray(v) for k, v in fileio.read_json(stats_path).items()}
        return fileio.load_npy(path), totals, True
    measure = _Measured()
    clips = _rgb(measure(real_clips(config, protocol, protocol.num_real, config.eval.seed)))
    feats = features.extract_features(
        network, clips, mesh, total=protocol.num_real, desc="real clips"
    )
    totals = measure.totals()
    if distributed.is_main():
        fileio.save_npy(path, feats)
        fileio.write_json(stats_path, {k: np.asarray(v).tolist() for k, v in totals.items()})
    return feats, totals, False


class _FirstVideos:
    """Passes batches on, keeping the first `count` valid videos of all processes (for the grid
    video written beside the result)."""

    def __init__(self, count: int):
        self.count = count
        self.videos: list[np.ndarray] = []

    def __call__(self, batches):
        for i, (videos, valid) in enumerate(batches):
            if i == 0:  # Every process takes part in the gather; only the first batch is kept.
                if jax.process_count() > 1:
                    all_videos, all_valid = multihost_utils.process_allgather((videos, valid))
                    videos_, valid_ = np.concatenate(all_videos), np.concatenate(all_valid)
                else:
                    videos_, valid_ = videos, valid
                self.videos.append(videos_[valid_][: self.count])
            yield videos, valid


class _Measured:
    """Passes batches on, adding up the frame-consistency statistics of their valid videos
    (`vfjax.consistency`); `totals()` sums them over all processes (all must call it)."""

    def __init__(self):
        self.parts: list[dict] = []

    def __call__(self, batches):
        for videos, valid in batches:
            self.parts.append(consistency.video_stats(videos[valid]))  # May hold no video.
            yield videos, valid

    def totals(self) -> dict:
        mine = consistency.totals(consistency.merge(self.parts))
        if jax.process_count() == 1:
            return mine
        return jax.tree.map(lambda x: np.asarray(x).sum(axis=0), _allgather(mine))


def _allgather(tree):
    return multihost_utils.process_allgather(jax.tree.map(np.asarray, tree))


def _check_request(config, protocol) -> bool:
    """Refuses what cannot be evaluated, before any long work; returns whether IS is computed."""
    if config.eval.batch_size % jax.process_count():
        raise ValueError(
            f"eval.batch_size={config.eval.batch_size} does not divide over the "
            f"{jax.process_count()} processes."
        )
    want_is = protocol.compute_is and config.data.name == "ucf101"
    if want_is and not (config.eval.c3d_weights and config.eval.c3d_mean):
        raise ValueError(
            "The protocol reports IS on UCF101: set eval.c3d_weights and eval.c3d_mean to TGANv2's "
            "conv3d_deepnetA_ucf.npz and mean2.npz (or pick a protocol with compute_is=False)."
        )
    return want_is


def _captions(config, protocol, seed: int):
    return caption_embeddings(config, protocol, seed) if config.data.cond == "text" else None


def generated_features(
    config, setup, ema, protocol, network, seed: int, keep: _FirstVideos, measure: _Measured
):
    """I3D features of `protocol.num_generated` generated videos."""
    videos = generate(
        config,
        setup,
        ema,
        protocol.num_generated,
        protocol.num_frames,
        seed,
        _captions(config, protocol, seed),
    )
    return features.extract_features(
        network,
        _rgb(keep(measure(videos))),
        setup.mesh,
        total=protocol.num_generated,
        desc="generated",
    )


def inception_score(config, setup, ema, protocol, seed: int) -> tuple[dict, object]:
    """C3D Inception Score of `protocol.is_num_generated` generated videos."""
    classifier = c3d.load_c3d(config.eval.c3d_weights, config.eval.c3d_mean)
    videos = generate(
        config,
        setup,
        ema,
        protocol.is_num_generated,
        c3d.NUM_FRAMES,
        seed,
        _captions(config, protocol, seed),
    )
    probs = features.extract_features(
        classifier, _rgb(videos), setup.mesh, total=protocol.is_num_generated, desc="IS"
    )
    mean, std = metrics.inception_score(probs, protocol.is_splits)
    return {"is_mean": mean, "is_std": std}, classifier


def _record(config, protocol, network, step: int, cached: bool) -> dict:
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


def _write(workdir, protocol, step: int, result: dict, grid: np.ndarray, fps: int) -> None:
    stem = fileio.join(workdir, "eval", f"{protocol.name}_{step}")
    fileio.write_json(f"{stem}.json", result)
    samples.write_samples(stem, grid, fps=fps)
    logging.info(
        "FVD %.2f%s at step %d (%s); wrote %s.json",
        result["fvd"],
        f", KVD {result['kvd']:.4f}" if "kvd" in result else "",
        step,
        protocol.name,
        stem,
    )


def _log_plan(config, protocol, step: int, want_is: bool) -> None:
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


def evaluate(config, workdir) -> dict:
    """Evaluates checkpoint `eval.step` (-1: the newest) of the run in `workdir`; returns the
    result written (by process 0) to `workdir/eval/<protocol>_<step>.json`."""
    protocol = _protocol(config)  # Refuses a bad protocol before any long work.
    config, setup = run_setup.setup_run(config, workdir)
    want_is = _check_request(config, protocol)
    network = i3d.with_preprocess(
        i3d.load_i3d(config.eval.i3d_weights), protocol.resize_method, quantize=protocol.quantize
    )
    ema, step = run_setup.restore_ema(config, setup, workdir, config.eval.step)
    _log_plan(config, protocol, step, want_is)
    start = time.time()

    seed = config.eval.seed + 1000
    first, measure = _FirstVideos(16), _Measured()
    gen_feats = generated_features(config, setup, ema, protocol, network, seed, first, measure)
    gen_totals = measure.totals()
    real_feats, real_totals, cached = real_features(config, protocol, network, setup.mesh)

    result = _record(config, protocol, network, step, cached)
    keys = long_video.generated_key_frames(config, protocol.num_frames)
    result["consistency"] = consistency.compare(
        consistency.report(consistency.from_totals(gen_totals), keys),
        consistency.report(consistency.from_totals(real_totals), keys),
    )
    result["fvd"] = metrics.frechet_distance(gen_feats, real_feats, ddof=protocol.covariance_ddof)
    if protocol.compute_kvd:
        result["kvd"] = metrics.kernel_distance(gen_feats, real_feats)
    if want_is:
        scores, classifier = inception_score(config, setup, ema, protocol, seed + 1)
        result.update(scores)
        result["feature_networks"].append(
            {
                "name": classifier.name,
                "weights": [{"file": f, "sha256": h} for f, h in classifier.weights],
            }
        )
    elif protocol.compute_is:
        result["is_skipped"] = "IS uses a UCF101 classifier (C3D); not defined for this data set."
    result["seconds"] = time.time() - start
    if distributed.is_main():
        _write(workdir, protocol, step, result, np.concatenate(first.videos), config.sampling.fps)
    return result
