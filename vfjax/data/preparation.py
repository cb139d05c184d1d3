"""Building a data set from the user's files: `prepare(config.data) -> statistics`.

Called by `python -m vfjax.main --mode=prepare` and `python -m vfjax.data prepare`. Every check
that can fail fast (config fields, the folder and its layout, a stored copy built with other
options) runs before any video is decoded. A data set already prepared with the same options is
reused, not rebuilt.
"""

import os

import tensorflow_datasets as tfds
from absl import logging

from vfjax import fileio
from vfjax.data import config as config_lib
from vfjax.data import storage, synthetic, text
from vfjax.data.builders import BUILDERS


def make_builder(cfg):
    """The tfds builder of `cfg` (a full data config); scans `cfg.manual_dir` on creation."""
    kwargs = dict(
        manual_dir=cfg.manual_dir,
        resolution=config_lib.store_resolution(cfg),
        min_frames=config_lib.min_frames(cfg),
        jpeg_quality=cfg.jpeg_quality,
        data_dir=config_lib.data_dir(cfg),
        workers=cfg.prepare_workers,
    )
    if cfg.name == "ucf101":
        kwargs["ucf_split"] = cfg.ucf_split
    if cfg.name == "video_folder":
        kwargs.update(folder_labels=cfg.folder_labels, captions=cfg.captions)
    return BUILDERS[cfg.name](**kwargs)


def prepare(data_config) -> dict:
    """Builds `data.name` from `data.manual_dir` into `data.data_dir`; returns its statistics.

    Returns:
      The dict of `storage.dataset_stats` (per split: videos, frames, durations, classes,
      skipped files); for the synthetic data set, its size and classes (nothing is written).

    Raises:
      ValueError: one line, for a bad config, a missing or wrongly laid out `manual_dir`, or a
        stored copy prepared with different options.
    """
    config_lib.validate(data_config)
    cfg = config_lib.with_defaults(data_config)
    if cfg.name == "synthetic":
        stats = synthetic.synthetic_info(cfg)
        logging.info("The synthetic data set is generated on the fly; nothing to prepare.")
        return stats
    if not cfg.manual_dir:
        raise ValueError(
            f"data.manual_dir is empty: point it at your {cfg.name} files to prepare them."
        )
    if not fileio.is_local(cfg.manual_dir):
        raise ValueError(
            f"data.manual_dir={cfg.manual_dir} is not on this machine: prepare decodes the video "
            "files locally; copy them here first (data.data_dir, the output, may be a bucket)."
        )
    if not os.path.isdir(os.path.expanduser(cfg.manual_dir)):
        raise ValueError(f"data.manual_dir={cfg.manual_dir} does not exist or is not a folder.")
    if cfg.cond == "text":  # The encoder must be there before hours of decoding.
        if not cfg.text_encoder:
            raise ValueError(
                "data.cond='text' needs data.text_encoder: 'minilm' or a local text model folder."
            )
        text.encoder_path(cfg.text_encoder)
    builder = make_builder(cfg)
    directory = storage.builder_dir(cfg)
    if storage.is_prepared(directory):
        _check_reusable(builder, directory)
        logging.info("Reusing the %s data set prepared at %s.", cfg.name, directory)
    else:
        logging.info("Preparing %s from %s into %s.", cfg.name, builder.manual_dir, directory)
        builder.download_and_prepare()
    stored = storage.open_builder(cfg)
    if not fileio.join(directory, storage.INDEX_FILE).is_file():
        storage.write_index(stored)
    if cfg.cond == "text":
        text.ensure_embedded(cfg)
    stats = storage.dataset_stats(stored)
    stats["text"] = text.read_info(directory)
    logging.info("%s", format_stats(stats))
    return stats


def _check_reusable(builder, directory: str) -> None:
    stored = tfds.builder_from_directory(directory).info.metadata.get("options", {})
    wanted = builder.content_options()
    if stored != wanted:
        changed = ", ".join(
            f"{k}: stored {stored.get(k)!r}, wanted {v!r}"
            for k, v in wanted.items()
            if stored.get(k) != v
        )
        raise ValueError(
            f"{directory} was prepared with other options ({changed}); delete it to rebuild, "
            "or use another data.data_dir."
        )


def format_stats(stats: dict) -> str:
    """Statistics as a few human-readable lines."""
    if "splits" not in stats:
        return (
            f"{stats['name']}: {stats['num_videos']} generated clips, {stats['num_classes']} "
            f"classes ({', '.join(stats['class_names'])})"
        )
    lines = [
        f"{stats['name']} at {stats['directory']}: {stats['resolution']}x{stats['resolution']} "
        f"frames, {stats['num_classes']} classes, {stats['skipped']} videos skipped"
    ]
    for split, s in stats["splits"].items():
        line = (
            f"  {split}: {s['videos']} videos, {s['frames']} frames "
            f"(min {s['min_frames']}, mean {s['mean_frames']}, max {s['max_frames']}), "
            f"{_duration(s['duration_s'])}"
        )
        if s["videos_without_fps"]:
            line += f" (+{s['videos_without_fps']} without frame rate)"
        line += f", {s['classes']} classes, skipped {s['skipped']}"
        if s["skipped"]:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["skipped_by_reason"].items()))
            line += f" ({reasons}): " + "; ".join(s["skipped_files"][:5])
            if s["skipped"] > 5:
                line += f"; ... ({s['skipped'] - 5} more)"
        lines.append(line)
    if stats.get("text"):
        t = stats["text"]
        lines.append(
            f"  caption embeddings: {t['encoder']} ({t['max_tokens']} tokens x {t['dim']}), "
            f"{sum(s['empty_captions'] for s in t['splits'].values())} videos without a caption"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"
