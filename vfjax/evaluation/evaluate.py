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
import math
import os
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from vfjax import data as data_lib
from vfjax import sample as sample_lib
from vfjax import samples, steps, train
from vfjax.evaluation import c3d, features, i3d, metrics, protocols


def _protocol(config) -> protocols.EvalProtocol:
    if config.eval.protocol not in protocols.PROTOCOLS:
        raise ValueError(
            f"Unknown evaluation protocol {config.eval.protocol!r}; presets: "
            f"{sorted(protocols.PROTOCOLS)}."
        )
    preset = protocols.PROTOCOLS[config.eval.protocol]
    overrides = {"clip_resolution": config.data.resolution}
    if config.eval.num_generated:
        overrides["num_generated"] = config.eval.num_generated
        overrides["is_num_generated"] = config.eval.num_generated
        # A smaller IS sample (a smoke run) keeps at most one split per clip.
        overrides["is_splits"] = min(preset.is_splits, config.eval.num_generated)
    if config.eval.num_real:
        overrides["num_real"] = config.eval.num_real
    return protocols.get_protocol(config.eval.protocol, **overrides)


def _rgb(videos: np.ndarray) -> np.ndarray:
    """Feature networks take RGB: grey-scale videos repeat their channel."""
    return np.repeat(videos, 3, axis=-1) if videos.shape[-1] == 1 else videos


def _gather(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def generate(config, setup, ema, count: int, num_frames: int, seed: int, captions=None):
    """Yields batches of generated videos `[b, num_frames, H, W, C]` (numpy), `count` in all.

    A model whose clips are shorter than `num_frames` makes each video from several clips that
    share their base noise (the long-video sampler). A text-conditioned model is conditioned on
    the batches of caption embeddings that `captions` yields.
    """
    clip = config.data.num_frames
    num_clips = math.ceil(num_frames / clip)
    batch = config.eval.batch_size
    sampler = steps.make_sampler(config, setup, batch, num_clips)
    made = 0
    with tqdm(total=count, desc="sampling", unit="video", disable=jax.process_index() != 0) as bar:
        while made < count:
            base_rng = jax.random.fold_in(jax.random.key(seed), made)
            residual_rng = jax.random.fold_in(jax.random.key(seed + 1), made)
            cond = None
            if config.data.cond == "class":
                labels = np.arange(made, made + batch) % config.model.num_classes
                cond = {"label": jax.numpy.asarray(labels, jax.numpy.int32)}
            elif config.data.cond == "text":
                cond = {"text": jax.numpy.asarray(next(captions))}
            videos = _gather(sampler(ema, base_rng, residual_rng, cond))[:, :num_frames]
            take = min(batch, count - made)
            made += take
            bar.update(take)
            yield videos[:take]


def _protocol_loader(config, protocol, seed: int, global_batch: int, **kwargs):
    """The data pipeline under the protocol's frames, stride and split, without flips."""
    data = config.data.copy_and_resolve_references()
    data.num_frames = protocol.num_frames
    data.stride = protocol.stride_for(config.data.name)
    data.split = protocol.split
    data.random_flip = False
    return data_lib.create_loader(data, global_batch_size=global_batch, seed=seed, **kwargs)


def caption_embeddings(config, protocol, seed: int):
    """Batches of caption embeddings of the protocol split's videos, the same on every process:
    the prompts of a text-conditioned model's generated videos."""
    loader = _protocol_loader(config, protocol, seed, config.eval.batch_size)
    while True:
        yield next(loader)["text_emb"]


def real_clips(config, protocol, count: int, seed: int):
    """Yields batches of real clips under the protocol's frames, stride and split."""
    loader = _protocol_loader(config, protocol, seed, config.eval.batch_size * jax.process_count())
    taken = 0
    while taken < count:
        videos = next(loader)["video"]
        take = min(len(videos), count - taken)
        taken += take
        yield videos[:take]


def _cache_path(config, protocol, network) -> str:
    key = {
        "dataset": config.data.name,
        "data_dir": os.path.abspath(config.data.data_dir) if config.data.data_dir else "",
        "synthetic": config.data.synthetic.to_dict() if config.data.name == "synthetic" else None,
        "resolution": config.data.resolution,
        "channels": config.data.channels,
        "protocol": protocols.describe(
            protocol, dataset=config.data.name, networks=[network], seed=0, checkpoint_step=0
        ),
        "seed": config.eval.seed,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    root = config.eval.cache_dir or os.path.join(
        config.data.data_dir or os.path.expanduser("~/.cache/vfjax"), "vfjax_eval_cache"
    )
    return os.path.join(root, f"{config.data.name}_{protocol.name}_{digest}.npy")


def real_features(config, protocol, network, mesh) -> tuple[np.ndarray, bool]:
    """I3D features of the real clips, from the cache when this exact set was computed before."""
    path = _cache_path(config, protocol, network)
    if os.path.exists(path):
        logging.info("Real features from the cache %s", path)
        return np.load(path), True
    clips = (_rgb(v) for v in real_clips(config, protocol, protocol.num_real, config.eval.seed))
    feats = i3d_features(network, clips, mesh, protocol.num_real, "real clips")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, feats)
    return feats, False


def i3d_features(network, batches, mesh, total: int, desc: str) -> np.ndarray:
    return features.extract_features(network, batches, mesh, total=total, desc=desc)


def evaluate(config, workdir: str) -> dict:
    """Evaluates checkpoint `eval.step` (-1: latest) of the run in `workdir`; returns the result
    written to `workdir/eval/<protocol>_<step>.json`."""
    protocol = _protocol(config)  # Refuses a bad protocol before any long work.
    config, setup = train.setup_run(config, workdir)
    is_ucf = config.data.name == "ucf101"
    want_is = protocol.compute_is and is_ucf
    if want_is and not (config.eval.c3d_weights and config.eval.c3d_mean):
        raise ValueError(
            "The protocol reports IS on UCF101: set eval.c3d_weights and eval.c3d_mean to TGANv2's "
            "conv3d_deepnetA_ucf.npz and mean2.npz (or pick a protocol with compute_is=False)."
        )
    network = i3d.with_preprocess(
        i3d.load_i3d(config.eval.i3d_weights), protocol.resize_method, quantize=protocol.quantize
    )
    ema, step = sample_lib.restore_ema(config, setup, workdir, config.eval.step)
    start = time.time()

    gen_seed = config.eval.seed + 1000
    text_run = config.data.cond == "text"
    grid = []  # The first 16 generated videos, for the grid video.

    def keep(batches):
        for videos in batches:
            grid.append(videos[: max(16 - sum(len(g) for g in grid), 0)])
            yield _rgb(videos)

    gen_feats = i3d_features(
        network,
        keep(
            generate(
                config,
                setup,
                ema,
                protocol.num_generated,
                protocol.num_frames,
                gen_seed,
                caption_embeddings(config, protocol, gen_seed) if text_run else None,
            )
        ),
        setup.mesh,
        protocol.num_generated,
        "generated features",
    )
    real_feats, cached = real_features(config, protocol, network, setup.mesh)

    ddof = protocol.covariance_ddof
    result = protocols.describe(
        protocol,
        dataset=config.data.name,
        networks=[network],
        seed=config.eval.seed,
        checkpoint_step=step,
    )
    clips_per_video = math.ceil(protocol.num_frames / config.data.num_frames)
    result.update(
        model_kind=config.model.kind,
        model_clip_frames=config.data.num_frames,
        generated_clips_per_video=clips_per_video,
        generated_resolution=config.data.resolution,
        sampler={
            "num_steps": config.sampling.num_steps,
            "eta": config.sampling.eta,
            "guidance_scale": config.sampling.guidance_scale,
            "parameters": "ema",
            "condition": {
                "class": "labels cycled 0..K-1",
                "text": f"captions of random {protocol.split} videos",
                "none": None,
            }[config.data.cond],
        },
        real_features_cached=cached,
        fvd=metrics.frechet_distance(gen_feats, real_feats, ddof=ddof),
    )
    if protocol.compute_kvd:
        result["kvd"] = metrics.kernel_distance(gen_feats, real_feats)
    if want_is:
        classifier = c3d.load_c3d(config.eval.c3d_weights, config.eval.c3d_mean)
        probs = i3d_features(
            classifier,
            (
                _rgb(v)
                for v in generate(
                    config,
                    setup,
                    ema,
                    protocol.is_num_generated,
                    c3d.NUM_FRAMES,
                    gen_seed + 1,
                    caption_embeddings(config, protocol, gen_seed + 1) if text_run else None,
                )
            ),
            setup.mesh,
            protocol.is_num_generated,
            "IS probabilities",
        )
        result["is_mean"], result["is_std"] = metrics.inception_score(probs, protocol.is_splits)
        result["feature_networks"].append(
            {
                "name": classifier.name,
                "weights": [{"file": f, "sha256": h} for f, h in classifier.weights],
            }
        )
    elif protocol.compute_is:
        result["is_skipped"] = "IS uses a UCF101 classifier (C3D); not defined for this data set."
    result["seconds"] = time.time() - start

    if jax.process_index() == 0:
        out_dir = os.path.join(workdir, "eval")
        os.makedirs(out_dir, exist_ok=True)
        stem = os.path.join(out_dir, f"{protocol.name}_{step}")
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=2)
        samples.write_samples(stem, np.concatenate(grid), fps=config.sampling.fps)
        logging.info(
            "FVD %.2f%s at step %d (%s); wrote %s.json",
            result["fvd"],
            f", KVD {result['kvd']:.4f}" if "kvd" in result else "",
            step,
            protocol.name,
            stem,
        )
    return result
