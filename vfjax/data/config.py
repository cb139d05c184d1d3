"""The data config (`config.data`): defaults, and the cheap checks run before any long work.

Every function of `vfjax.data` takes the trainer's `config.data`. Fields this package uses but a
config file leaves out take the defaults below, so experiment configs only name what they change.
"""

import os

import ml_collections

from vfjax import fileio

DATASET_NAMES = ("synthetic", "ucf101", "sky_timelapse", "taichi", "video_folder")
COND_KINDS = ("none", "class", "text")
SHORT_VIDEO_RULES = ("pad", "skip")
CLIP_SAMPLINGS = ("random_window", "random_clip")


def default_config() -> ml_collections.ConfigDict:
    """Returns `config.data` with every field this package reads, at its default."""
    cfg = ml_collections.ConfigDict()
    cfg.name = "synthetic"
    cfg.num_frames = 16
    cfg.resolution = 64
    cfg.stride = 1  # Take every `stride`-th frame (TaiChi protocols use 4).
    cfg.channels = 3
    cfg.manual_dir = ""  # The user's files (prepare only).
    cfg.data_dir = ""  # The tfds directory; "" is $TFDS_DATA_DIR or ~/tensorflow_datasets.
    cfg.split = "train"  # A split name or a sum of them, e.g. "train+test".
    cfg.ucf_split = 1  # UCF101's official train/test split, 1-3.
    cfg.num_classes = 0  # 0: take it from the data set.
    cfg.cond = "none"
    # Clips longer than a video: "pad" repeats its last frame, "skip" leaves the video out.
    cfg.short_video = "pad"
    # 'random_window': each element is a video, one window at a random offset; 'random_clip':
    # each element is one window of one video, uniform over all windows of all videos.
    cfg.clip_sampling = "random_window"
    cfg.num_workers = 2  # grain reader threads.
    cfg.prefetch = 4  # Local batches read ahead.
    cfg.random_flip = False
    # Stored frame size; 0 stores at `resolution`. Loading resizes when the two differ.
    cfg.store_resolution = 0
    # Videos with fewer frames are skipped at prepare time; 0 means `num_frames`.
    cfg.min_frames = 0
    cfg.jpeg_quality = 95
    cfg.prepare_workers = 0  # Threads decoding videos at prepare time; 0: one per core.
    # video_folder: label = first folder below the split root; captions file ("" = look for
    # captions.jsonl / captions.csv in manual_dir).
    cfg.folder_labels = True
    cfg.captions = ""
    # cond='text': the caption encoder ('minilm' or a local Hugging Face model folder) and the
    # tokens per caption; prepare embeds every stored caption with it (`vfjax.data.text`).
    cfg.text_encoder = ""
    cfg.text_max_tokens = 32
    cfg.synthetic = synthetic_defaults()
    return cfg


def synthetic_defaults() -> ml_collections.ConfigDict:
    """Returns the defaults of `config.data.synthetic` (see `vfjax.data.synthetic`)."""
    cfg = ml_collections.ConfigDict()
    cfg.num_videos = 10_000
    cfg.num_objects = 1
    cfg.seed = 0
    cfg.color_classes = False  # True: class = (shape, colour) instead of shape only.
    cfg.min_speed = 0.03  # Pixels per frame, as a fraction of the resolution.
    cfg.max_speed = 0.07
    cfg.min_size = 0.14  # Object half-size, as a fraction of the resolution.
    cfg.max_size = 0.22
    return cfg


def with_defaults(data_config) -> ml_collections.ConfigDict:
    """Returns a copy of `data_config` with every missing field set to its default."""
    merged = default_config()
    given = _to_dict(data_config)
    synthetic = given.pop("synthetic", None) or {}
    merged.update(given)
    merged.synthetic.update(_to_dict(synthetic))
    return merged


def validate(data_config) -> None:
    """Checks the fields cheaply; raises ValueError with a one-line message on the first bad one."""
    cfg = with_defaults(data_config)
    if cfg.name not in DATASET_NAMES:
        raise ValueError(
            f"Unknown data set data.name={cfg.name!r}; valid names: {', '.join(DATASET_NAMES)}."
        )
    for field in ("num_frames", "resolution", "stride"):
        if not isinstance(cfg[field], int) or cfg[field] <= 0:
            raise ValueError(f"data.{field} must be a positive integer, got {cfg[field]!r}.")
    if cfg.channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 or 3, got {cfg.channels!r}.")
    if cfg.cond not in COND_KINDS:
        raise ValueError(f"data.cond must be one of {', '.join(COND_KINDS)}, got {cfg.cond!r}.")
    if cfg.clip_sampling not in CLIP_SAMPLINGS:
        raise ValueError(
            f"data.clip_sampling must be one of {', '.join(CLIP_SAMPLINGS)}, got "
            f"{cfg.clip_sampling!r}."
        )
    if cfg.short_video not in SHORT_VIDEO_RULES:
        raise ValueError(f"data.short_video must be 'pad' or 'skip', got {cfg.short_video!r}.")
    if cfg.ucf_split not in (1, 2, 3):
        raise ValueError(f"data.ucf_split must be 1, 2 or 3, got {cfg.ucf_split!r}.")
    for field in ("num_workers", "prefetch", "store_resolution", "min_frames", "prepare_workers"):
        if not isinstance(cfg[field], int) or cfg[field] < 0:
            raise ValueError(f"data.{field} must be a non-negative integer, got {cfg[field]!r}.")
    if not isinstance(cfg.text_max_tokens, int) or cfg.text_max_tokens <= 0:
        raise ValueError(
            f"data.text_max_tokens must be a positive integer, got {cfg.text_max_tokens!r}."
        )
    if cfg.cond == "text" and cfg.name == "synthetic":
        raise ValueError("data.cond='text' needs captions; the synthetic data set has none.")
    if not 1 <= cfg.jpeg_quality <= 100:
        raise ValueError(f"data.jpeg_quality must be in 1..100, got {cfg.jpeg_quality!r}.")
    if cfg.name == "synthetic":
        syn = cfg.synthetic
        if syn.num_videos <= 0 or syn.num_objects <= 0:
            raise ValueError("data.synthetic.num_videos and num_objects must be positive.")
        if not 0 < syn.min_size <= syn.max_size < 0.5:
            raise ValueError("data.synthetic needs 0 < min_size <= max_size < 0.5.")
        if not 0 <= syn.min_speed <= syn.max_speed:
            raise ValueError("data.synthetic needs 0 <= min_speed <= max_speed.")


def store_resolution(cfg) -> int:
    """The frame size a data set is stored at for this config."""
    return cfg.store_resolution or cfg.resolution


def min_frames(cfg) -> int:
    """The shortest video prepare keeps for this config."""
    return cfg.min_frames or cfg.num_frames


def data_dir(cfg) -> str:
    """The tfds directory (local or bucket), tfds' default when the config leaves it empty."""
    path = cfg.data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    return str(fileio.path(path))


def _to_dict(value) -> dict:
    if isinstance(value, ml_collections.ConfigDict):
        return value.to_dict()
    return dict(value)
