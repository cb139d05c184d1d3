"""The two streams of videos an evaluation compares, and what is measured on their way.

Each stream yields this process's share as `(videos [b, F, H, W, C], valid [b])` batches:
generated videos from the checkpoint's sampler (`generate`; the same one training previews and
the sample mode use), real clips from the data pipeline under the protocol's frames, stride and
split (`real_clips`). The pass-through filters (`rgb`, `FirstVideos`, `Measured`, `LawCounted`)
see every batch on its way to the feature network.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from vfjax import consistency, distributed, long_video
from vfjax import data as data_lib
from vfjax.data import synthetic_law


def _labels(config, start: int, batch: int) -> np.ndarray:
    """Host arrays (the same on every process) enter the sampler replicated."""
    return (np.arange(start, start + batch) % config.model.num_classes).astype(np.int32)


def generate(config, setup, ema, protocol, count: int, num_frames: int, seed: int):
    """Yields this process's share of the generated videos, batch by batch: `(videos [b, F, H,
    W, C] numpy, valid [b] bool)`, `count` valid videos over all processes.

    Every process runs the same sampler calls (one program, the batch split over all devices);
    each keeps only the rows its own devices made, so nothing is sampled twice or copied between
    processes. A model whose clips are shorter than `num_frames` makes each video from several
    clips, as `sampling.long_method` says (`vfjax.long_video`). A text-conditioned model is
    conditioned on the captions of random videos of the protocol's split (`caption_embeddings`).
    """
    batch = config.eval.batch_size
    captions = caption_embeddings(config, protocol, seed) if config.data.cond == "text" else None
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


def rgb(batches):
    """Feature networks take RGB: grey-scale videos repeat their channel."""
    for videos, valid in batches:
        yield (np.repeat(videos, 3, axis=-1) if videos.shape[-1] == 1 else videos), valid


class FirstVideos:
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


class Measured:
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


class LawCounted:
    """Passes batches on, counting the valid videos that obey the synthetic set's law
    (`vfjax.data.synthetic_law`) and each of its criteria; with `law=None` (other data) it only
    passes them on. `totals()` sums the counts over all processes (all must call it)."""

    def __init__(self, law: synthetic_law.Law | None):
        self.law = law
        self.counts: dict | None = None

    def __call__(self, batches):
        for videos, valid in batches:
            if self.law is not None and np.any(valid):
                scores = synthetic_law.score_clips(videos[valid], self.law)
                self.counts = synthetic_law.add_counts(self.counts, synthetic_law.counts(scores))
            yield videos, valid

    def totals(self) -> dict | None:
        if self.law is None:
            return None
        mine = self.counts or synthetic_law.empty_counts()
        if jax.process_count() == 1:
            return mine
        return jax.tree.map(lambda x: np.asarray(x).sum(axis=0), _allgather(mine))


def _allgather(tree):
    return multihost_utils.process_allgather(jax.tree.map(np.asarray, tree))
