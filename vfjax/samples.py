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
