"""Frame-consistency measures of videos: a flicker, a jump at the key frame, a drift in
brightness, as numbers. NumPy only; videos are `[B, N, H, W, C]` in [-1, 1].

- adjacent-frame difference: mean absolute change between consecutive frames, one value per pair
  (the profile: a jump at some frame shows as a peak);
- key-frame jump ratio: the change into and out of the key frame(s) over the change between the
  other consecutive frames (about 1 for real videos; a key frame that does not follow its
  neighbours gives more);
- frame intensity: mean and standard deviation of the pixel values of each frame index.

Measures are built from per-video statistics (`video_stats`), so batches of videos seen one at a
time, or by different processes, combine exactly (`merge`). `report(stats, key_frames)` turns
them into a JSON-ready dict; `compare(generated, real)` puts a generated set beside the real one.
"""

import numpy as np


def video_stats(videos: np.ndarray) -> dict[str, np.ndarray]:
    """Per-video statistics: `diff [B, N-1]` (mean |frame[i+1] - frame[i]|), `mean [B, N]` and
    `sq [B, N]` (mean of the values and of their squares, per frame)."""
    v = np.asarray(videos, np.float32)
    if v.ndim != 5 or v.shape[1] < 2:
        raise ValueError(f"need videos [B, N >= 2, H, W, C], got shape {v.shape}")
    return {
        "diff": np.abs(np.diff(v, axis=1)).mean(axis=(2, 3, 4)),
        "mean": v.mean(axis=(2, 3, 4)),
        "sq": np.square(v).mean(axis=(2, 3, 4)),
    }


def merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The statistics of several batches as one set."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def totals(stats: dict) -> dict[str, np.ndarray]:
    """Sums over the videos and their count: fixed-size, so processes can add theirs up."""
    out = {k: stats[k].sum(axis=0) for k in ("diff", "mean", "sq")}
    out["count"] = np.asarray(stats["mean"].shape[0], np.float64)
    return out


def from_totals(t: dict) -> dict[str, np.ndarray]:
    """Statistics (of one average video, with the real count) from summed `totals`."""
    count = float(t["count"])
    out = {k: (np.asarray(t[k]) / max(count, 1.0))[None] for k in ("diff", "mean", "sq")}
    out["count"] = int(count)
    return out


def adjacent_differences(stats: dict) -> np.ndarray:
    """`[N - 1]`: mean absolute change between consecutive frames."""
    return stats["diff"].mean(axis=0)


def key_frame_jump_ratio(stats: dict, key_frames) -> float:
    """Mean change of the pairs that touch a key frame over that of the other pairs.

    Args:
      stats: `video_stats` of the videos.
      key_frames: index or indices of the key frames (several for videos made of several clips).
    """
    diffs = adjacent_differences(stats)
    n = diffs.shape[0] + 1
    keys = [key_frames] if np.isscalar(key_frames) else list(key_frames)
    if not keys or not all(0 <= k < n for k in keys):
        raise ValueError(f"key frames {keys} are not all inside videos of {n} frames")
    touching = np.zeros(n - 1, bool)
    for k in keys:
        touching[[i for i in (k - 1, k) if 0 <= i < n - 1]] = True
    if touching.all():
        raise ValueError("need a pair of frames that touches no key frame (3+ frames)")
    return float(diffs[touching].mean() / max(float(diffs[~touching].mean()), 1e-12))


def frame_intensity(stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """`([N], [N])`: mean and standard deviation of each frame index's pixel values."""
    mean = stats["mean"].mean(axis=0)
    var = np.maximum(stats["sq"].mean(axis=0) - np.square(mean), 0.0)
    return mean, np.sqrt(var)


def key_frames_of(num_frames: int, clip_frames: int, key_frame: int) -> list[int]:
    """The key frames of videos of `num_frames` made of clips of `clip_frames` (one per clip)."""
    return [
        start + key_frame
        for start in range(0, num_frames, clip_frames)
        if start + key_frame < num_frames
    ]


def report(stats: dict, key_frames) -> dict:
    """Every measure of a set of videos, JSON-ready.

    Args:
      stats: `video_stats` (or `merge`d ones) of the videos.
      key_frames: the key frame index (or indices, one per clip). For a model without a key
        frame (VDM) or for real videos, pass where VideoFusion's would be, to compare alike.
    """
    mean, std = frame_intensity(stats)
    keys = [key_frames] if np.isscalar(key_frames) else list(key_frames)
    others = np.ones(mean.shape[0], bool)
    others[keys] = False
    out = {
        "num_videos": int(stats.get("count", stats["mean"].shape[0])),
        "key_frames": [int(k) for k in keys],
        "adjacent_frame_difference": _rounded(adjacent_differences(stats)),
        "frame_mean": _rounded(mean),
        "frame_std": _rounded(std),
        "key_frame_mean": round(float(mean[keys].mean()), 5),
        "other_frames_mean": round(float(mean[others].mean()), 5),
    }
    if mean.shape[0] >= 3:
        out["key_frame_jump_ratio"] = round(key_frame_jump_ratio(stats, keys), 4)
    return out


def compare(generated: dict, real: dict) -> dict:
    """Generated and real measures side by side, with the gaps that show a flicker or a drift:
    the key frames' mean against the other frames', and every frame's mean against the real
    data's (the same frame index)."""
    gap = np.abs(np.asarray(generated["frame_mean"]) - np.asarray(real["frame_mean"]))
    return {
        "generated": generated,
        "real": real,
        "key_frame_mean_gap": round(
            abs(generated["key_frame_mean"] - generated["other_frames_mean"]), 5
        ),
        "max_frame_mean_gap_to_real": round(float(gap.max()), 5),
    }


def _rounded(values) -> list[float]:
    return [round(float(x), 5) for x in values]
