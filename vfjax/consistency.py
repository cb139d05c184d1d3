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


# ------------------------------------------------------------------------------ long videos


def boundary_ratio(stats: dict, starts: list[int]) -> float:
    """Mean change across clip boundaries (frame `s - 1` to `s` for every clip start `s`) over
    the mean change between the other consecutive frames: 1 when clips join as smoothly as
    frames follow each other inside a clip."""
    diffs = adjacent_differences(stats)
    at = np.zeros(diffs.shape[0], bool)
    at[[s - 1 for s in starts if 0 < s <= diffs.shape[0]]] = True
    if not at.any() or at.all():
        raise ValueError("need clip boundaries and frame pairs between them")
    return float(diffs[at].mean() / max(float(diffs[~at].mean()), 1e-12))


# Half a level of an 8-bit frame in [-1, 1] units: frames closer than this everywhere show as the
# same picture once written.
SAME_FRAME_ATOL = 1.0 / 255


def repeated_frames(videos: np.ndarray, atol: float = SAME_FRAME_ATOL) -> int:
    """Frames (over all videos) that repeat an earlier frame of the same video: every value
    within `atol` of it. Not bit-equality: frames that are one image in exact arithmetic (the
    key frames of clips sharing a base noise) come out of different positions of a batch a
    rounding error apart on some CPUs (measured: 2e-4 on one of 6), which would hide a repeat
    that shows."""
    count = 0
    for video in np.asarray(videos, np.float32):
        flat = video.reshape(video.shape[0], -1)
        for i in range(1, flat.shape[0]):
            count += bool(np.any(np.max(np.abs(flat[:i] - flat[i]), axis=1) <= atol))
    return count


def far_frame_distance(videos: np.ndarray, clip_frames: int) -> float:
    """Mean absolute difference between frames at least a clip apart: how much the content of a
    video changes over its length (lower: frames more alike)."""
    v = np.asarray(videos, np.float32)
    n = v.shape[1]
    pairs = [(i, j) for i in range(n) for j in range(i + clip_frames, n)]
    if not pairs:
        raise ValueError(f"videos of {n} frames have no frames {clip_frames} apart")
    return float(np.mean([np.abs(v[:, i] - v[:, j]).mean() for i, j in pairs]))


def appearance_change(videos: np.ndarray, clip_frames: int) -> float:
    """Mean absolute difference between the sorted pixel values of frames at least a clip apart:
    how much what a frame holds changes over the video, wherever it is in the frame (moving an
    object leaves its sorted values as they were; growing, dimming or reshaping it does not)."""
    v = np.asarray(videos, np.float32)
    b, n = v.shape[:2]
    ordered = np.sort(v.reshape(b, n, -1), axis=-1)  # [B, N, pixels]
    pairs = [(i, j) for i in range(n) for j in range(i + clip_frames, n)]
    if not pairs:
        raise ValueError(f"videos of {n} frames have no frames {clip_frames} apart")
    return float(np.mean([np.abs(ordered[:, i] - ordered[:, j]).mean() for i, j in pairs]))


def looped_clips(videos: np.ndarray, clip_frames: int, fraction: float = 0.25) -> int:
    """Windows of `clip_frames` frames (one per clip length, over all videos) that nearly repeat
    an earlier window of their video that they do not overlap: a mean absolute difference under
    `fraction` of the video's mean change between adjacent frames. A video that loops through
    the same clip (the paper's recipe, its key frames one image) has many; a moving object whose
    path does not retrace itself, none."""
    v = np.asarray(videos, np.float32)
    n = v.shape[1]
    count = 0
    for video in v:
        step = max(float(np.abs(np.diff(video, axis=0)).mean()), 1e-6)
        for start in range(clip_frames, n - clip_frames + 1, clip_frames):
            window = video[start : start + clip_frames]
            earlier = [
                np.abs(window - video[t : t + clip_frames]).mean()
                for t in range(0, start - clip_frames + 1)
            ]
            count += bool(earlier and min(earlier) < fraction * step)
    return count


def long_video_report(
    videos: np.ndarray,
    independent: np.ndarray,
    starts: list[int],
    clip_frames: int,
    real: np.ndarray | None = None,
) -> dict:
    """The measures written beside a long video: how its clips join, whether frames or clips
    repeat, how alike its content stays against as many clips drawn with independent base noises
    (`content_consistency` > 1: more alike than independent clips), and how much its appearance
    changes (`appearance_change`; `real`: real videos of the same length, measured alike)."""
    stats = video_stats(videos)
    far, far_independent = (
        far_frame_distance(videos, clip_frames),
        far_frame_distance(independent, clip_frames),
    )
    out = {
        "num_videos": int(np.asarray(videos).shape[0]),
        "num_frames": int(np.asarray(videos).shape[1]),
        "clip_starts": [int(s) for s in starts],
        "boundary_to_within_ratio": round(boundary_ratio(stats, starts), 4),
        "repeated_frames": repeated_frames(videos),
        "looped_clips": looped_clips(videos, clip_frames),
        "far_frame_distance": round(far, 5),
        "independent_far_frame_distance": round(far_independent, 5),
        "content_consistency": round(far_independent / max(far, 1e-12), 4),
        "appearance_change": round(appearance_change(videos, clip_frames), 5),
        "adjacent_frame_difference": _rounded(adjacent_differences(stats)),
    }
    if real is not None:
        out["real_appearance_change"] = round(appearance_change(real, clip_frames), 5)
        out["real_looped_clips"] = looped_clips(real, clip_frames)
    return out
