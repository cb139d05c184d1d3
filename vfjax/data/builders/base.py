"""The tfds builder all vfjax video data sets share: local files in, array_record files out.

Storage: each video is one record whose frames are a `Sequence(Image(encoding_format='jpeg'))`
fed JPEG bytes we encode ourselves. That prepares and reads without TensorFlow, takes roughly a
tenth of the space of zlib-compressed raw pixels, and lets the input pipeline decode only the
frames of the clip it draws (the record keeps one JPEG per frame) instead of the whole video.
Frames are stored already resized for one training resolution (short side scaled, centre square
cut; see `vfjax.data.video_io`), one builder config per resolution: `ucf101/64_split1`,
`taichi/128`, ...

Bad data does not stop a run: a video that cannot be decoded, is truncated, has no frames, or has
fewer than `min_frames` frames is left out, logged, and listed in the data set metadata
(`metadata.json`, key `skipped`), which `vfjax.data.prepare` reports.
"""

import abc
import collections
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from absl import logging

from vfjax.data import video_io


@dataclasses.dataclass
class VideoEntry:
    """One video to store: a file or a folder of frames."""

    path: str  # Absolute path.
    relpath: str  # Relative to the user's folder; the record key and its 'path' feature.
    label: int = 0
    caption: str = ""


@dataclasses.dataclass
class Layout:
    """What a builder found in the user's folder, before anything is decoded."""

    splits: dict[str, list[VideoEntry]]
    class_names: list[str] = dataclasses.field(default_factory=list)  # Empty: unlabelled.
    missing: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # Listed, absent.


@dataclasses.dataclass
class VideoBuilderConfig(tfds.core.BuilderConfig):
    """Options that change what is stored; each resolution gets its own config directory."""

    resolution: int = 64
    min_frames: int = 16
    jpeg_quality: int = 95


class VideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base builder: subclasses say where the videos are (`find_videos`), this class stores them.

    Registration is skipped: tfds ships an `ucf101` builder of its own, and reading a prepared
    data set goes through `tfds.builder_from_directory`, which needs no registered class.

    Args:
      manual_dir: the user's folder in the data set's own layout.
      resolution: stored frame size (square).
      min_frames: shorter videos are skipped.
      jpeg_quality: JPEG quality of the stored frames.
      data_dir: the tfds directory to write to.
      workers: threads decoding videos; 0 means one per core.
      config_name: the config directory name; the resolution when empty.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: JPEG frames at one resolution, array_record."}
    DESCRIPTION = ""

    def __init__(
        self,
        *,
        manual_dir: str,
        resolution: int,
        min_frames: int,
        jpeg_quality: int = 95,
        data_dir: str,
        workers: int = 0,
        config_name: str = "",
    ):
        self.manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
        self.workers = workers or os.cpu_count() or 1
        # The folder layout is checked before tfds creates anything, so that a wrong folder
        # fails in a second with a clear message.
        extract_dir = os.path.join(data_dir, "downloads", "extracted", self.name)
        self.layout = self.find_videos(self.manual_dir, extract_dir)
        config = VideoBuilderConfig(
            name=config_name or str(resolution),
            description=f"Frames stored at {resolution}x{resolution}.",
            resolution=resolution,
            min_frames=min_frames,
            jpeg_quality=jpeg_quality,
        )
        super().__init__(data_dir=data_dir, config=config, file_format="array_record")

    @abc.abstractmethod
    def find_videos(self, manual_dir: str, extract_dir: str) -> Layout:
        """Lists the videos of each split; raises ValueError (one line) on a wrong layout.

        `extract_dir` is where archives found in `manual_dir` may be unpacked.
        """

    def content_options(self) -> dict:
        """The options a stored copy must match to be reused instead of rebuilt."""
        cfg = self.builder_config
        return {
            "resolution": cfg.resolution,
            "min_frames": cfg.min_frames,
            "jpeg_quality": cfg.jpeg_quality,
        }

    def _info(self) -> tfds.core.DatasetInfo:
        res = self.builder_config.resolution
        names = self.layout.class_names
        features = tfds.features.FeaturesDict(
            {
                "video": tfds.features.Sequence(
                    tfds.features.Image(shape=(res, res, 3), encoding_format="jpeg")
                ),
                "label": tfds.features.ClassLabel(names=names) if names else np.int64,
                "caption": tfds.features.Text(),
                "num_frames": np.int32,
                "fps": np.float32,  # 0 when unknown (frame folders).
                "height": np.int32,  # Original frame size.
                "width": np.int32,
                "path": tfds.features.Text(),
            }
        )
        metadata = tfds.core.MetadataDict(
            options=self.content_options(),
            manual_dir=self.manual_dir,
            skipped={},
        )
        return tfds.core.DatasetInfo(
            builder=self, description=self.DESCRIPTION, features=features, metadata=metadata
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything comes from `manual_dir`.
        return {
            split: self._generate_examples(split, entries)
            for split, entries in self.layout.splits.items()
        }

    def _generate_examples(self, split: str, entries: list[VideoEntry]):
        skipped = self.info.metadata["skipped"].setdefault(split, [])
        for relpath in self.layout.missing.get(split, []):
            skipped.append([relpath, "missing", "listed in the split file, not found"])
        bar = tqdm.tqdm(total=len(entries), desc=f"{self.name} {split}", unit="video")
        for entry, result in _ordered_map(self._encode_video, entries, self.workers):
            bar.update(1)
            if isinstance(result, video_io.BadVideoError):
                skipped.append([entry.relpath, result.reason, str(result)])
                logging.warning("Skipped %s video %s", result.reason, result)
                bar.set_postfix(skipped=len(skipped))
                continue
            yield entry.relpath, self._example(entry, result)
        bar.close()

    def _encode_video(self, entry: VideoEntry):
        """Decodes, resizes and JPEG-encodes one video; returns the error instead of raising."""
        cfg = self.builder_config

        def to_jpeg(image):
            image = video_io.resize_short_side_crop(image, cfg.resolution)
            return video_io.encode_jpeg(image, cfg.jpeg_quality)

        try:
            video = video_io.read_video(entry.path, to_jpeg)
        except video_io.BadVideoError as e:
            return e
        if len(video.frames) < cfg.min_frames:
            return video_io.BadVideoError(
                "too_short",
                f"{entry.path}: {len(video.frames)} frames < min_frames={cfg.min_frames}",
            )
        return video

    def _example(self, entry: VideoEntry, video: video_io.DecodedVideo) -> dict:
        return {
            "video": video.frames,
            "label": entry.label,
            "caption": entry.caption,
            "num_frames": len(video.frames),
            "fps": video.fps,
            "height": video.height,
            "width": video.width,
            "path": entry.relpath,
        }


def _ordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator[tuple]:
    """Yields (item, fn(item)) in order, with at most 2 * workers calls in flight.

    Decoding is mostly C code that releases the GIL, so threads overlap well; the bound keeps the
    encoded videos waiting for the writer few.
    """
    with futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) > 2 * workers:
                head, future = pending.popleft()
                yield head, future.result()
        while pending:
            head, future = pending.popleft()
            yield head, future.result()


def list_videos(root: str) -> list[str]:
    """Absolute paths of every video below `root`: video files, and folders holding frames.

    A folder that directly holds image files is one video (its images are the frames) and is
    not searched further. Natural order of the relative paths.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if any(video_io.is_image_file(name) for name in filenames):
            found.append(dirpath)
            dirnames.clear()
            continue
        found.extend(os.path.join(dirpath, n) for n in filenames if video_io.is_video_file(n))
    return sorted(found, key=lambda p: video_io.natural_key(os.path.relpath(p, root)))


def require_dir(path: str, what: str) -> None:
    """Raises a one-line ValueError when `path` is not a directory."""
    if not os.path.isdir(path):
        raise ValueError(f"{what}: {path} is not a directory; check data.manual_dir.")
