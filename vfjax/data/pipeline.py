"""The input pipeline: `create_loader(config.data, ...)` -> an iterator of local batches.

Design (exact resume, any process count). One global sequence of elements, a pure function of
the seed: record order shuffled anew each epoch and repeated forever, then a random clip of each
element (`clips.ClipSampler`), its randomness drawn from the element's position. Global batch `s`
is elements `[s * G, (s + 1) * G)`; process `p` of `P` reads only its contiguous share
`[s * G + p * L, s * G + (p + 1) * L)`, `L = G / P`, which is local batch `s * P + p` of the
sequence cut into batches of `L`. So the data at step `s` depends on the step alone: a run
resumed on another number of processes sees the same global batches, and a loader's whole state
is its step (plus settings to check that it belongs to this run).

Training reads the videos as stored, uint8, and converts them on the devices inside its step
(`pixels.to_model_input`); `DeviceBatches` puts the next global batches on the devices while
the current step runs.
"""

import collections
import dataclasses
import functools
import sys

import grain
import jax
import numpy as np

from vfjax.data import clips, pixels, storage, synthetic, text
from vfjax.data import config as config_lib

_STATE_VERSION = 1
VIDEO_DTYPES = ("float32", "uint8")


@dataclasses.dataclass
class _Plan:
    """Everything a loader needs, checked, before any batch is read."""

    source: object
    sampler: clips.ClipSampler
    fingerprint: dict  # Settings the data position depends on (saved with it).


class EpochShuffle:
    """The infinite record order: epoch e (elements [e * n, (e + 1) * n)) is a permutation of the
    n records drawn from (seed, e) alone.

    Used instead of grain's `shuffle`, whose index_shuffle costs milliseconds per element on data
    sets of a few hundred videos; a whole permutation per epoch is cheap at these sizes.
    """

    def __init__(self, num_records: int, seed: int):
        self._num_records = num_records
        self._seed = seed
        self._permutation = functools.lru_cache(maxsize=4)(self._draw_permutation)

    def _draw_permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self._seed, epoch]).permutation(self._num_records)

    def __len__(self) -> int:
        return sys.maxsize  # Repeats forever.

    def __getitem__(self, index: int) -> int:
        epoch, position = divmod(int(index), self._num_records)
        return int(self._permutation(epoch)[position])


def _model_input(batch: dict) -> dict:
    return {**batch, "video": pixels.to_model_input(batch["video"])}


class Loader:
    """Iterator of local batches: {'video': float32 [L, N, H, W, C] in [-1, 1], 'label': int32 [L]}
    (+ 'text_emb' float32 [L, S, D] with `cond='text'`), starting at global step `start_step`;
    with `video_dtype='uint8'` the videos as stored, uint8 in [0, 255].
    """

    def __init__(
        self,
        plan: _Plan,
        *,
        global_batch_size: int,
        seed: int,
        process_index: int,
        process_count: int,
        start_step: int,
        read_options: grain.ReadOptions,
        video_dtype: str = "float32",
    ):
        self._fingerprint = plan.fingerprint
        self._video_dtype = video_dtype
        self._local_batch = global_batch_size // process_count
        self._process_index = process_index
        self._process_count = process_count
        self._read_options = read_options
        # Element j reads record order[j]; its clip window and flip come from (seed, j).
        self._order = grain.MapDataset.source(EpochShuffle(len(plan.source), seed))
        elements = self._order.map(plan.source.__getitem__)
        self._elements = elements.random_map(plan.sampler, seed=seed)
        self._iterator = None
        self._start(start_step)

    def _start(self, step: int) -> None:
        self.close()
        first = step * self._process_count + self._process_index
        local_batches = self._elements.batch(self._local_batch, drop_remainder=True)
        mine = local_batches[first :: self._process_count]
        if self._video_dtype == "float32":
            mine = mine.map(_model_input)
        self._iterator = iter(mine.to_iter_dataset(self._read_options))
        self._step = step

    @property
    def step(self) -> int:
        """Global step of the next batch."""
        return self._step

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = next(self._iterator)
        self._step += 1
        return batch

    def get_state(self) -> dict:
        """JSON-serialisable position: the next step and the settings it is valid for."""
        return {**self._fingerprint, "step": self._step}

    def set_state(self, state: dict) -> None:
        """Continues at a saved position; raises ValueError if it was saved by another setup."""
        saved = {k: v for k, v in state.items() if k != "step"}
        if saved != self._fingerprint:
            diff = ", ".join(
                f"{k} {saved.get(k)!r} (saved) != {self._fingerprint.get(k)!r} (now)"
                for k in sorted(set(saved) | set(self._fingerprint))
                if saved.get(k) != self._fingerprint.get(k)
            )
            raise ValueError(
                f"The saved data position belongs to another setup: {diff}; resume with the "
                "saved settings or start a new workdir."
            )
        self._start(int(state["step"]))

    def record_indices(self, step: int) -> np.ndarray:
        """Source records this process reads at `step` ([L], in batch order)."""
        first = step * self._local_batch * self._process_count
        first += self._process_index * self._local_batch
        return np.array([self._order[first + i] for i in range(self._local_batch)])

    def close(self) -> None:
        """Stops the reader threads."""
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None


def create_loader(
    data_config,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    start_step: int = 0,
    video_dtype: str = "float32",
) -> Loader:
    """The loader of this process's share of every global batch, from `start_step` on.

    Args:
      data_config: `config.data`.
      global_batch_size: videos per step over all processes; divisible by `process_count`.
      seed: the data seed (shuffle order, clip windows, flips); taken modulo 2**32.
      process_index, process_count: this process and how many read in total.
      start_step: the global step of the first batch.
      video_dtype: 'float32', videos as the model reads them (in [-1, 1]); or 'uint8', as stored,
        for a step that converts them on the devices (`pixels.to_model_input`): a quarter of the
        bytes to move. The data position does not depend on it.

    Raises:
      ValueError: one line, for a bad config, a missing data set, or a batch size that does not
        split over the processes.
    """
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count}).")
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of the "
            f"{process_count} processes."
        )
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")
    if video_dtype not in VIDEO_DTYPES:
        raise ValueError(f"video_dtype must be one of {VIDEO_DTYPES}, got {video_dtype!r}.")
    cfg = config_lib.with_defaults(data_config)
    seed = int(seed) % 2**32
    plan = _plan(cfg)
    plan.fingerprint.update(seed=seed, global_batch_size=global_batch_size)
    workers = cfg.num_workers
    read_options = grain.ReadOptions(
        num_threads=workers, prefetch_buffer_size=max(cfg.prefetch, workers)
    )
    return Loader(
        plan,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        start_step=start_step,
        read_options=read_options,
        video_dtype=video_dtype,
    )


def _plan(cfg) -> _Plan:
    """Opens the data set of `cfg` and checks it against the config."""
    config_lib.validate(cfg)
    info = data_info(cfg)
    if cfg.cond == "class" and not info["num_classes"]:
        raise ValueError(f"data.cond='class' but {cfg.name} has no class labels.")
    if cfg.num_classes and cfg.num_classes != info["num_classes"]:
        raise ValueError(
            f"data.num_classes={cfg.num_classes} but {cfg.name} has {info['num_classes']} "
            "classes; fix it or set 0 to take it from the data set."
        )
    if cfg.cond == "text" and not info["has_text_emb"]:
        raise ValueError(
            f"data.cond='text' needs caption embeddings, which {cfg.name} lacks: run "
            "--mode=prepare with data.cond='text' and data.text_encoder set."
        )
    sampler = clips.ClipSampler(
        num_frames=cfg.num_frames,
        stride=cfg.stride,
        resolution=cfg.resolution,
        channels=cfg.channels,
        random_flip=cfg.random_flip,
    )
    if cfg.name == "synthetic":
        # Generated at the clip length: every clip is one whole synthetic video, stride unused.
        source = synthetic.synthetic_source(cfg)
    else:
        builder = storage.open_builder(cfg)
        span = clips.clip_span(cfg.num_frames, cfg.stride)
        source = clips.RecordSource(
            builder,
            storage.check_splits(builder, cfg.split),
            min_frames=span if cfg.short_video == "skip" else 0,
            text_emb=cfg.cond == "text",
        )
        if not len(source):
            raise ValueError(
                f"No video of {cfg.name} {cfg.split} has the {span} frames a clip needs; "
                "lower data.num_frames or data.stride, or use data.short_video='pad'."
            )
        if cfg.clip_sampling == "random_clip":
            source = clips.WindowSource(source, source.frame_counts(), span)
    fingerprint = {
        "version": _STATE_VERSION,
        "name": cfg.name,
        "split": cfg.split,
        "num_videos": len(source),
        "num_frames": cfg.num_frames,
        "stride": cfg.stride,
        "resolution": cfg.resolution,
        "channels": cfg.channels,
        "random_flip": cfg.random_flip,
    }
    if cfg.clip_sampling != "random_window":  # Positions saved before the option still match.
        fingerprint["clip_sampling"] = cfg.clip_sampling
    return _Plan(source=source, sampler=sampler, fingerprint=fingerprint)


def data_info(data_config) -> dict:
    """What the model and the logs need to know about the data set, read cheaply.

    Returns:
      name, num_classes, class_names, num_train_videos (videos in `data.split`), splits
      (videos per split), resolution (stored frame size), has_text_emb, text_dim (width of the
      stored caption embeddings, 0 without), text_tokens.
    """
    config_lib.validate(data_config)
    cfg = config_lib.with_defaults(data_config)
    if cfg.name == "synthetic":
        info = synthetic.synthetic_info(cfg)
        return {
            **info,
            "num_train_videos": info["num_videos"],
            "splits": {"train": info["num_videos"]},
            "has_text_emb": False,
            "text_dim": 0,
            "text_tokens": 0,
        }
    builder = storage.open_builder(cfg)
    names = storage.class_names(builder)
    splits = {name: split.num_examples for name, split in builder.info.splits.items()}
    text_info = text.read_info(str(builder.data_dir))
    return {
        "name": cfg.name,
        "num_classes": len(names),
        "class_names": names,
        "num_train_videos": sum(splits[s] for s in storage.check_splits(builder, cfg.split)),
        "splits": splits,
        "resolution": builder.info.features["video"].feature.shape[0],
        "has_text_emb": text_info is not None,
        "text_dim": int(text_info["dim"]) if text_info else 0,
        "text_tokens": int(text_info["max_tokens"]) if text_info else 0,
    }


def make_global_batch(local_batch: dict, sharding: jax.sharding.Sharding) -> dict:
    """Assembles the global batch from every process's local batch.

    Args:
      local_batch: this process's batch (numpy arrays with the batch on the first axis).
      sharding: the batch sharding, applied to every leaf (e.g. NamedSharding over the
        ('data', 'fsdp') axes for the first dimension).
    """
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


class DeviceBatches:
    """Global batches on the devices, `ahead` more of them on their way while one is used.

    Each `next` hands out the oldest batch and puts the loader's next local batch on the devices
    (`make_global_batch`); the copy runs while the step dispatched before it computes. The data
    position, `get_state`, is that of the next batch handed out, not the loader's (`ahead`
    further on): a checkpoint saved after a step resumes at the step after it.

    Args:
      loader: an iterator of local batches with `get_state()` (a `Loader`).
      sharding: the batch sharding (`make_global_batch`).
      ahead: batches in flight beyond the one handed out.
    """

    def __init__(self, loader, sharding: jax.sharding.Sharding, ahead: int = 2):
        if ahead < 0:
            raise ValueError(f"ahead must be >= 0, got {ahead}.")
        self._loader = loader
        self._local_batches = iter(loader)
        self._sharding = sharding
        self._ahead = ahead
        self._queue: collections.deque = collections.deque()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        for local_batch in self._local_batches:
            self._queue.append(make_global_batch(local_batch, self._sharding))
            if len(self._queue) > self._ahead:
                break
        if not self._queue:
            raise StopIteration
        return self._queue.popleft()

    def get_state(self) -> dict:
        """The loader's position less the batches fetched but not yet handed out."""
        state = self._loader.get_state()
        return {**state, "step": state["step"] - len(self._queue)}
