"""Prepared data sets on disk: where they live, how to open a split, their per-video index.

Reading needs neither TensorFlow nor the builder classes: `tfds.builder_from_directory` restores
the data set from its `dataset_info.json`, and `as_data_source` reads the array_record files.
Besides tfds' own files, prepare writes `video_index.json` next to them: for every split, the
frame count, frame rate and label of each record in storage order, read back from the written
records. Statistics come from it, and `short_video='skip'` uses it to leave out short videos
without opening them.
"""

import numpy as np
import tensorflow_datasets as tfds

from vfjax import fileio
from vfjax.data import config as config_lib

VERSION = "1.0.0"  # Must match `VideoBuilder.VERSION`.
INDEX_FILE = "video_index.json"


class EncodedFrames(tfds.decode.SkipDecoding):
    """Leaves a video's frames as JPEG bytes, so that a reader decodes only the frames it uses."""

    def decode_batch_example_np(self, serialized):
        return serialized


def config_name(cfg) -> str:
    """The tfds config directory of `cfg`: the stored resolution, plus the split for UCF101."""
    resolution = config_lib.store_resolution(cfg)
    if cfg.name == "ucf101":
        return f"{resolution}_split{cfg.ucf_split}"
    return str(resolution)


def builder_dir(cfg) -> str:
    """`<data_dir>/<name>/<config>/<version>`, where prepare writes `cfg`'s data set."""
    return str(fileio.join(config_lib.data_dir(cfg), cfg.name, config_name(cfg), VERSION))


def is_prepared(directory) -> bool:
    return fileio.join(directory, "dataset_info.json").is_file()


def open_builder(cfg) -> tfds.core.DatasetBuilder:
    """The prepared data set of `cfg`; a one-line ValueError says how to prepare a missing one."""
    directory = builder_dir(cfg)
    if not is_prepared(directory):
        raise ValueError(
            f"No prepared {cfg.name} data set at {directory}; prepare it first: python -m "
            f"vfjax.main --config=CONFIG --mode=prepare --config.data.manual_dir=YOUR_FILES "
            f"--config.data.data_dir={config_lib.data_dir(cfg)}."
        )
    return tfds.builder_from_directory(directory)


def split_names(split: str) -> list[str]:
    """'train' -> ['train']; 'train+test' -> ['train', 'test']."""
    return [part.strip() for part in split.split("+") if part.strip()]


def check_splits(builder, split: str) -> list[str]:
    names = split_names(split)
    available = sorted(builder.info.splits.keys())
    unknown = [n for n in names if n not in available]
    if not names or unknown:
        raise ValueError(
            f"data.split={split!r} is not in {builder.info.name}; available splits: "
            f"{', '.join(available)} (join several with '+')."
        )
    return names


def open_split(builder, split: str):
    """A random-access source of one split's records, frames left as JPEG bytes."""
    return builder.as_data_source(split=split, decoders={"video": EncodedFrames()})


def class_names(builder) -> list[str]:
    label = builder.info.features["label"]
    return list(label.names) if isinstance(label, tfds.features.ClassLabel) else []


def write_index(builder) -> dict:
    """Reads every record once (frames skipped) and writes `video_index.json`; returns it."""
    index = {}
    for split in builder.info.splits.keys():
        source = open_split(builder, split)
        columns = {"num_frames": [], "fps": [], "label": []}
        for i in range(len(source)):
            record = source[i]
            columns["num_frames"].append(int(record["num_frames"]))
            columns["fps"].append(round(float(record["fps"]), 3))
            columns["label"].append(int(record["label"]))
        index[split] = columns
    fileio.write_json(fileio.join(builder.data_dir, INDEX_FILE), index)  # Written whole.
    return index


def read_index(builder) -> dict:
    path = fileio.join(builder.data_dir, INDEX_FILE)
    if not path.is_file():
        raise ValueError(f"{path} is missing; run `python -m vfjax.data prepare` again to add it.")
    return fileio.read_json(path)


def dataset_stats(builder) -> dict:
    """Videos, frames, durations, classes and skipped files of every split of a prepared set."""
    index = read_index(builder)
    metadata = builder.info.metadata or {}
    skipped_by_split = metadata.get("skipped", {})
    names = class_names(builder)
    splits = {}
    for split, columns in index.items():
        frames = np.asarray(columns["num_frames"], np.int64)
        fps = np.asarray(columns["fps"], np.float64)
        timed = fps > 0
        skipped = skipped_by_split.get(split, [])
        reasons = {}
        for _, reason, _ in skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        splits[split] = {
            "videos": int(frames.size),
            "frames": int(frames.sum()),
            "min_frames": int(frames.min()) if frames.size else 0,
            "mean_frames": round(float(frames.mean()), 1) if frames.size else 0.0,
            "max_frames": int(frames.max()) if frames.size else 0,
            "duration_s": round(float((frames[timed] / fps[timed]).sum()), 2),
            "videos_without_fps": int((~timed).sum()),
            "classes": len(set(columns["label"])) if names else 0,
            "skipped": len(skipped),
            "skipped_by_reason": reasons,
            "skipped_files": [f"{path} ({reason})" for path, reason, _ in skipped],
        }
    return {
        "name": builder.info.name,
        "directory": str(builder.data_dir),
        "resolution": builder.info.features["video"].feature.shape[0],
        "num_classes": len(names),
        "class_names": names,
        "splits": splits,
        "skipped": sum(s["skipped"] for s in splits.values()),
    }
