"""The built-in synthetic data set: bright shapes moving over a black background.

No download: element `i` is a pure function of `(seed, i)`, drawn in NumPy on demand. Each clip
holds `num_objects` objects of one shape kind (the class: square, circle, triangle, cross; with
`color_classes`, shape and colour together). Every object moves at a constant velocity and
bounces off the walls, which a tiny video diffusion model learns within minutes on a CPU. Edges
are anti-aliased so that sub-pixel motion stays smooth down to 16x16.
"""

import numpy as np

from vfjax.data import config as config_lib

SHAPES = ("square", "circle", "triangle", "cross")
# Class colours (with `color_classes`), far apart so that they stay distinct in every channel.
CLASS_COLORS = {"red": (255, 90, 90), "green": (60, 255, 60), "blue": (90, 150, 255)}
# Colours drawn at random otherwise; all bright, also in grey scale (luma >= 130).
PALETTE = np.array(
    [
        (255, 90, 90),
        (60, 255, 60),
        (90, 150, 255),
        (255, 230, 40),
        (255, 60, 255),
        (40, 240, 255),
        (255, 255, 255),
        (255, 150, 40),
    ],
    dtype=np.float32,
)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class SyntheticVideos:
    """A random-access source of moving-shape clips, usable as a grain `MapDataset` source.

    Args:
      num_videos: number of distinct clips (the length of the source).
      num_frames: frames per clip.
      resolution: height and width in pixels.
      channels: 3 for RGB, 1 for grey scale.
      num_objects: objects per clip, all of the clip's shape kind.
      seed: the data set seed; clip `i` depends only on `(seed, i)`.
      color_classes: whether the class is (shape, colour) rather than the shape alone.
      min_speed, max_speed: speed range in pixels per frame, as a fraction of `resolution`.
      min_size, max_size: object half-size range, as a fraction of `resolution`.
    """

    def __init__(
        self,
        num_videos: int,
        num_frames: int,
        resolution: int,
        *,
        channels: int = 3,
        num_objects: int = 1,
        seed: int = 0,
        color_classes: bool = False,
        min_speed: float = 0.03,
        max_speed: float = 0.07,
        min_size: float = 0.14,
        max_size: float = 0.22,
    ):
        self.num_videos = num_videos
        self.num_frames = num_frames
        self.resolution = resolution
        self.channels = channels
        self.num_objects = num_objects
        self.seed = seed
        self.color_classes = color_classes
        self.speed_range = (min_speed * resolution, max_speed * resolution)
        self.size_range = (min_size * resolution, max_size * resolution)
        # Pixel centres, shaped to broadcast against per-frame object positions [N, 1, 1].
        centres = np.arange(resolution, dtype=np.float32) + 0.5
        self._xs = centres[None, None, :]
        self._ys = centres[None, :, None]

    @property
    def class_names(self) -> list[str]:
        if self.color_classes:
            return [f"{color} {shape}" for shape in SHAPES for color in CLASS_COLORS]
        return list(SHAPES)

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, index: int) -> dict:
        """Returns {'video': uint8 [N, H, W, C], 'label': int} for clip `index`."""
        index = int(index)
        if not 0 <= index < self.num_videos:
            raise IndexError(f"synthetic clip {index} out of range [0, {self.num_videos}).")
        rng = np.random.default_rng([self.seed, index])
        label = int(rng.integers(len(self.class_names)))
        if self.color_classes:
            shape = SHAPES[label // len(CLASS_COLORS)]
            class_color = np.array(list(CLASS_COLORS.values())[label % len(CLASS_COLORS)])
        else:
            shape, class_color = SHAPES[label], None
        n, res = self.num_frames, self.resolution
        # Channels first while drawing: NumPy broadcasts far faster over long inner axes than
        # over a trailing axis of 3.
        frames = np.zeros((3, n, res, res), np.float32)
        for _ in range(self.num_objects):
            size = rng.uniform(*self.size_range)
            start = rng.uniform(size, res - size, size=2)
            angle = rng.uniform(0.0, 2.0 * np.pi)
            speed = rng.uniform(*self.speed_range)
            velocity = speed * np.array([np.cos(angle), np.sin(angle)])
            color = class_color if class_color is not None else PALETTE[rng.integers(len(PALETTE))]
            centres = bouncing_path(start, velocity, size, res, n)  # [N, 2] as (x, y)
            alpha = coverage(shape, centres, size, self._xs, self._ys)  # [N, H, W]
            color = np.asarray(color, np.float32)[:, None, None, None]
            frames += alpha * (color - frames)
        if self.channels == 1:
            frames = np.tensordot(_LUMA, frames, axes=1)[None]
        # Values stay in [0, 255]: each draw is a convex mix of the frame and a colour.
        video = (frames.transpose(1, 2, 3, 0) + 0.5).astype(np.uint8)
        return {"video": video, "label": label}


def bouncing_path(start, velocity, size, resolution, num_frames) -> np.ndarray:
    """Centres [N, 2] of an object of half-size `size` moving from `start`, reflected off the
    walls (its centre stays in [size, resolution - size]).

    Free motion unfolded onto a triangle wave of period 2L, with L the room the centre has
    between the walls, is exactly the bounced motion, with no per-frame loop.
    """
    room = resolution - 2.0 * size
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    free = start - size + velocity * t
    folded = room - np.abs(np.mod(free, 2.0 * room) - room)
    return (size + folded).astype(np.float32)


def coverage(shape: str, centres, size, xs, ys) -> np.ndarray:
    """Anti-aliased coverage [N, H, W] in [0, 1] of a shape of half-size `size` at `centres`.

    Each shape is a (near-)signed distance in pixels, d < 0 inside; coverage ramps over one
    pixel around the edge. `size` is a number, or one per frame shaped `[N, 1, 1]` (how
    `vfjax.data.synthetic_law` fits frames).
    """
    dx = xs - centres[:, 0, None, None]  # [N, 1, W]
    dy = ys - centres[:, 1, None, None]  # [N, H, 1]
    if shape == "circle":
        dist = np.sqrt(dx * dx + dy * dy) - size
    elif shape == "square":
        dist = np.maximum(np.abs(dx), np.abs(dy)) - 0.8 * size
    elif shape == "triangle":
        # Apex up at (0, -size), base corners at (+-size, +size); edge normals divided by sqrt(5).
        edge = 1.0 / np.sqrt(5.0)
        dist = np.maximum(
            dy - size,
            np.maximum((-2.0 * dx - dy - size) * edge, (2.0 * dx - dy - size) * edge),
        )
    elif shape == "cross":
        arm = 0.33 * size
        horizontal = np.maximum(np.abs(dx) - size, np.abs(dy) - arm)
        vertical = np.maximum(np.abs(dx) - arm, np.abs(dy) - size)
        dist = np.minimum(horizontal, vertical)
    else:
        raise ValueError(f"Unknown synthetic shape {shape!r}; valid shapes: {', '.join(SHAPES)}.")
    return np.clip(0.5 - dist, 0.0, 1.0)


def synthetic_source(data_config) -> SyntheticVideos:
    """The synthetic source for `config.data` (its `synthetic` block, frames and resolution)."""
    cfg = config_lib.with_defaults(data_config)
    syn = cfg.synthetic
    return SyntheticVideos(
        syn.num_videos,
        cfg.num_frames,
        cfg.resolution,
        channels=cfg.channels,
        num_objects=syn.num_objects,
        seed=syn.seed,
        color_classes=syn.color_classes,
        min_speed=syn.min_speed,
        max_speed=syn.max_speed,
        min_size=syn.min_size,
        max_size=syn.max_size,
    )


def synthetic_info(data_config) -> dict:
    """Metadata of the synthetic data set: classes and size, without generating anything."""
    source = synthetic_source(data_config)
    return {
        "name": "synthetic",
        "num_classes": len(source.class_names),
        "class_names": source.class_names,
        "num_videos": len(source),
        "num_frames": source.num_frames,
        "resolution": source.resolution,
    }
