"""`--mode=evaluate`: FVD (and KVD, IS) of a checkpoint under a named protocol.

Generated videos come from the checkpoint's EMA parameters through the same sampler as training
previews and the sample mode, in batches sharded over all devices; real clips come from the
training data pipeline under the protocol's frame count, stride and split (`streams`). Both go
through I3D (and C3D for IS on UCF101) on the same mesh. Real features are cached per data set
and protocol. The result, `workdir/eval/<protocol>_<step>.json`, records everything needed to
compare it (`report`).

`evaluate` reads as its steps: the protocol, the run, the features of generated videos, the
features of real clips, each metric, and the written result. On the synthetic set the result also
holds the share of generated and real videos that obey the data's law (`data_law`).
"""

import hashlib
import json
import logging
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from vfjax import consistency, distributed, fileio, long_video, run_setup
from vfjax import sharding as sharding_lib
from vfjax.data import synthetic_law
from vfjax.evaluation import c3d, features, i3d, metrics, protocols, report, streams


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


def generated_features(config, setup, ema, protocol, network, seed: int, keep, measure):
    """I3D features of `protocol.num_generated` generated videos, which pass `keep` (a
    `streams.FirstVideos`) and `measure` (`streams.Measured`, `streams.LawCounted`, or both)
    on their way."""
    videos = streams.generate(
        config, setup, ema, protocol, protocol.num_generated, protocol.num_frames, seed
    )
    return features.extract_features(
        network,
        streams.rgb(keep(measure(videos))),
        setup.mesh,
        total=protocol.num_generated,
        desc="generated",
    )


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


def real_features(config, protocol, network, mesh, law) -> tuple[np.ndarray, dict, dict, bool]:
    """I3D features of the real clips, their frame-consistency totals and (with a `law`) their
    data-law counts, from the cache when this exact set was computed before (process 0 looks,
    and tells the others, so that all of them take the same path)."""
    path = _cache_path(config, protocol, network)
    stats_path = path.with_suffix(".consistency.json")
    law_path = path.with_suffix(".data_law.json")
    cached = False
    if distributed.is_main():
        cached = path.exists() and stats_path.exists() and (law is None or law_path.exists())
    if jax.process_count() > 1:
        cached = bool(multihost_utils.broadcast_one_to_all(np.int32(cached)))
    if cached:
        logging.info("Real features from the cache %s", path)
        totals = {k: np.asarray(v) for k, v in fileio.read_json(stats_path).items()}
        law_counts = None
        if law is not None:
            law_counts = {k: np.asarray(v) for k, v in fileio.read_json(law_path).items()}
        return fileio.load_npy(path), totals, law_counts, True
    measure, counted = streams.Measured(), streams.LawCounted(law)
    real = streams.real_clips(config, protocol, protocol.num_real, config.eval.seed)
    clips = streams.rgb(counted(measure(real)))
    feats = features.extract_features(
        network, clips, mesh, total=protocol.num_real, desc="real clips"
    )
    totals, law_counts = measure.totals(), counted.totals()
    if distributed.is_main():
        fileio.save_npy(path, feats)
        fileio.write_json(stats_path, {k: np.asarray(v).tolist() for k, v in totals.items()})
        if law_counts is not None:
            fileio.write_json(law_path, {k: np.asarray(v).tolist() for k, v in law_counts.items()})
    return feats, totals, law_counts, False


def distances(gen_feats: np.ndarray, real_feats: np.ndarray, protocol) -> dict:
    """FVD, and KVD when the protocol reports it, between the two sets of I3D features."""
    result = {"fvd": metrics.frechet_distance(gen_feats, real_feats, ddof=protocol.covariance_ddof)}
    if protocol.compute_kvd:
        result["kvd"] = metrics.kernel_distance(gen_feats, real_feats)
    return result


def consistency_measures(config, protocol, gen_totals: dict, real_totals: dict) -> dict:
    """Frame consistency of the generated videos beside the real clips' (`vfjax.consistency`),
    at the key frames the base generator drew."""
    keys = long_video.generated_key_frames(config, protocol.num_frames)
    return consistency.compare(
        consistency.report(consistency.from_totals(gen_totals), keys),
        consistency.report(consistency.from_totals(real_totals), keys),
    )


def inception_score(config, setup, ema, protocol, seed: int) -> tuple[dict, dict]:
    """C3D Inception Score of `protocol.is_num_generated` generated videos, and the record of
    the classifier (name and weights) for the result's feature networks."""
    classifier = c3d.load_c3d(config.eval.c3d_weights, config.eval.c3d_mean)
    videos = streams.generate(
        config, setup, ema, protocol, protocol.is_num_generated, c3d.NUM_FRAMES, seed
    )
    probs = features.extract_features(
        classifier, streams.rgb(videos), setup.mesh, total=protocol.is_num_generated, desc="IS"
    )
    mean, std = metrics.inception_score(probs, protocol.is_splits)
    network = {
        "name": classifier.name,
        "weights": [{"file": f, "sha256": h} for f, h in classifier.weights],
    }
    return {"is_mean": mean, "is_std": std}, network


def real_floor(config, workdir) -> dict:
    """The FVD (and KVD) between two disjoint sets of real clips, each of the protocol's real
    count: the first and second halves of one draw (`eval.seed`), so no clip is in both. What a
    model that draws the data itself would score: the floor its FVD is read against. Written to
    `workdir/eval/<protocol>_real_floor_seed<seed>.json`; no checkpoint is needed."""
    protocol = _protocol(config)
    config = run_setup.prepare_config(config)
    mesh = sharding_lib.make_mesh(config.mesh)
    network = i3d.with_preprocess(
        i3d.load_i3d(config.eval.i3d_weights), protocol.resize_method, quantize=protocol.quantize
    )
    law = synthetic_law.Law.of(config.data) if synthetic_law.applies(config.data) else None
    count = protocol.num_real
    start = time.time()
    halves = [streams.LawCounted(law), streams.LawCounted(law)]

    def counted(batches):
        """Counts the law on each half; a clip's global index (the loader's order: batch after
        batch, each split over the processes in turn) decides its half."""
        for number, (videos, valid) in enumerate(batches):
            local = len(valid)
            rows = (number * jax.process_count() + jax.process_index()) * local + np.arange(local)
            for half, keep in zip(halves, (rows < count, rows >= count), strict=True):
                for _ in half(iter([(videos, valid & keep)])):
                    pass
            yield videos, valid

    clips = streams.real_clips(config, protocol, 2 * count, config.eval.seed)
    feats = features.extract_features(
        network, streams.rgb(counted(clips)), mesh, total=2 * count, desc="real clips"
    )
    result = protocols.describe(
        protocol,
        dataset=config.data.name,
        networks=[network],
        seed=config.eval.seed,
        checkpoint_step=None,
        training_split=config.data.split,
    )
    result["generated"] = "real clips: the second half of the draw, disjoint from the first"
    result.update(distances(feats[count:], feats[:count], protocol))
    if law is not None:
        a, b = (h.totals() for h in halves)
        result["data_law"] = {
            "generated": synthetic_law.report_from_counts(b, law),
            "real": synthetic_law.report_from_counts(a, law),
        }
    result["seconds"] = time.time() - start
    if distributed.is_main():
        name = f"{protocol.name}_real_floor_seed{config.eval.seed}"
        fileio.write_json(fileio.join(workdir, "eval", f"{name}.json"), result)
        logging.info(
            "Real-against-real FVD %.2f (%s); wrote eval/%s.json",
            result["fvd"],
            protocol.name,
            name,
        )
    return result


def evaluate(config, workdir) -> dict:
    """Evaluates checkpoint `eval.step` (-1: the newest) of the run in `workdir`; returns the
    result written (by process 0) to `workdir/eval/<protocol>_<step>.json` (with
    `eval.generated_seed` set, `..._<step>_gen<seed>.json`). With `eval.real_floor`, the floor
    instead (`real_floor`)."""
    if config.eval.get("real_floor", False):
        return real_floor(config, workdir)
    protocol = _protocol(config)  # Refuses a bad protocol before any long work.
    config, setup = run_setup.setup_run(config, workdir)
    want_is = _check_request(config, protocol)
    network = i3d.with_preprocess(
        i3d.load_i3d(config.eval.i3d_weights), protocol.resize_method, quantize=protocol.quantize
    )
    ema, step = run_setup.restore_ema(config, setup, workdir, config.eval.step)
    report.log_plan(config, protocol, step, want_is)
    start = time.time()

    chosen = config.eval.get("generated_seed", None)
    seed = config.eval.seed + 1000 if chosen is None else chosen
    law = synthetic_law.Law.of(config.data) if synthetic_law.applies(config.data) else None
    first, measure, counted = streams.FirstVideos(16), streams.Measured(), streams.LawCounted(law)
    gen_feats = generated_features(
        config, setup, ema, protocol, network, seed, first, lambda b: counted(measure(b))
    )
    gen_totals, gen_law = measure.totals(), counted.totals()
    real_feats, real_totals, real_law, cached = real_features(
        config, protocol, network, setup.mesh, law
    )

    result = report.record(config, protocol, network, step, cached)
    result["consistency"] = consistency_measures(config, protocol, gen_totals, real_totals)
    if law is not None:
        result["data_law"] = {
            "generated": synthetic_law.report_from_counts(gen_law, law),
            "real": synthetic_law.report_from_counts(real_law, law),
        }
    result.update(distances(gen_feats, real_feats, protocol))
    if want_is:
        scores, classifier = inception_score(config, setup, ema, protocol, seed + 1)
        result.update(scores)
        result["feature_networks"].append(classifier)
    elif protocol.compute_is:
        result["is_skipped"] = "IS uses a UCF101 classifier (C3D); not defined for this data set."
    result["seconds"] = time.time() - start
    result["generated_seed"] = seed
    if distributed.is_main():
        grid = np.concatenate(first.videos)
        suffix = "" if chosen is None else f"_gen{chosen}"
        report.write(workdir, protocol, f"{step}{suffix}", result, grid, config.sampling.fps)
    return result
