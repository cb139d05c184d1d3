"""Writing sampled videos: a grid of them as GIF (imageio) and MP4 (PyAV)."""

import math

import imageio.v3 as iio
import numpy as np

from vfjax import fileio
from vfjax.data import video_io


def to_uint8(videos: np.ndarray) -> np.ndarray:
    """[-1, 1] floats to uint8, any leading shape; one channel becomes three."""
    videos = np.asarray(videos, np.float32)
    out = np.round((np.clip(videos, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return out


def grid(
    videos: np.ndarray, columns: int | None = None, scale: int = 1, pad: int = 1
) -> np.ndarray:
    """Tiles videos `[B, N, H, W, 3]` (uint8) into one video `[N, rows*H', cols*W', 3]`."""
    b, n, h, w, c = videos.shape
    columns = columns or math.ceil(math.sqrt(b))
    rows = math.ceil(b / columns)
    if scale > 1:
        videos = videos.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    out = np.full((n, rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i in range(b):
        r, col = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[:, y : y + h, x : x + w] = videos[i]
    return out


def write_samples(path_stem, videos: np.ndarray, fps: int = 8, scale: int = 0) -> list[str]:
    """Writes a grid of `videos` ([-1, 1], `[B, N, H, W, C]`) as `path_stem.gif` and `.mp4`
    (local or bucket paths).

    Small videos are enlarged (nearest neighbour) so the grid is at least ~256 pixels wide.
    Returns the written paths.
    """
    frames = to_uint8(videos)
    if scale <= 0:
        scale = max(1, 256 // (frames.shape[3] * math.ceil(math.sqrt(frames.shape[0]))))
    tiled = grid(frames, scale=scale)
    gif, mp4 = f"{path_stem}.gif", f"{path_stem}.mp4"
    with fileio.local_file_for_writing(gif) as local:
        iio.imwrite(local, tiled, duration=1000.0 / fps, loop=0)
    even = tiled[:, : tiled.shape[1] // 2 * 2, : tiled.shape[2] // 2 * 2]
    with fileio.local_file_for_writing(mp4) as local:
        video_io.write_video(local, even, fps=fps)
    return [gif, mp4]


def filmstrips(videos: np.ndarray, scale: int = 4, pad: int = 1) -> np.ndarray:
    """One row per video, its frames left to right: `[B, N, H, W, C]` in [-1, 1] -> one uint8
    image `[rows, cols, 3]` (enlarged `scale` times, nearest neighbour)."""
    frames = to_uint8(videos)  # [B, N, H, W, 3]
    b, n = frames.shape[:2]
    return grid(frames.reshape((b * n, 1) + frames.shape[2:]), columns=n, scale=scale, pad=pad)[0]


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Two images `[H, W, 3]` next to each other on white, top-aligned, `gap` pixels apart."""
    height = max(left.shape[0], right.shape[0])
    out = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    out[: left.shape[0], : left.shape[1]] = left
    out[: right.shape[0], left.shape[1] + gap :] = right
    return out


def write_png(path, image: np.ndarray) -> str:
    """Writes a uint8 image `[H, W, 3]` as PNG (local or bucket path); returns the path."""
    with fileio.local_file_for_writing(str(path)) as local:
        iio.imwrite(local, image, extension=".png")
    return str(path)
