"""Small stand-ins of the real data sets, in their real on-disk layouts, for tests and benchmarks.

The videos are moving shapes (`vfjax.data.synthetic`) cropped to the requested frame size and
encoded with PyAV, or written as frame images, exactly where the real releases put theirs.
"""

import json
import os

import numpy as np
from PIL import Image

from vfjax.data import synthetic, video_io

UCF_CLASSES = ("ApplyEyeMakeup", "Basketball", "HandstandPushups")


def moving_shapes(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 frames [N, H, W, 3] of shapes moving over the frame (a crop of a square clip)."""
    side = max(height, width)
    source = synthetic.SyntheticVideos(1, num_frames, side, num_objects=2, seed=seed)
    video = source[0]["video"]
    top, left = (side - height) // 2, (side - width) // 2
    return video[:, top : top + height, left : left + width]


def write_frames(folder: str, frames: np.ndarray, ext: str = ".jpg", prefix: str = "") -> None:
    """One image per frame, named `<prefix>00001<ext>`, ...: a frame-folder video."""
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(os.path.join(folder, f"{prefix}{i:05d}{ext}"))


def write_ucf101(
    root: str,
    *,
    groups: int = 3,
    clips: int = 1,
    num_frames: int = 20,
    size: tuple = (48, 64),
    classes=UCF_CLASSES,
) -> None:
    """`root/UCF101/UCF-101/<Class>/v_<Class>_gXX_cYY.avi` and `root/UCF101/ucfTrainTestlist/`.

    In split k (1-3), group k is the test set (the real split puts 7 groups in each).
    """
    videos = os.path.join(root, "UCF101", "UCF-101")
    lists = os.path.join(root, "UCF101", "ucfTrainTestlist")
    os.makedirs(lists, exist_ok=True)
    with open(os.path.join(lists, "classInd.txt"), "w") as f:
        f.writelines(f"{i} {name}\n" for i, name in enumerate(classes, start=1))
    rows = []  # (relative path, 1-based label, group)
    for label, name in enumerate(classes, start=1):
        os.makedirs(os.path.join(videos, name), exist_ok=True)
        for group in range(1, groups + 1):
            for clip in range(1, clips + 1):
                rel = f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"
                seed = label * 1000 + group * 10 + clip
                video_io.write_video(
                    os.path.join(videos, rel), moving_shapes(num_frames, *size, seed=seed)
                )
                rows.append((rel, label, group))
    for split in (1, 2, 3):
        with open(os.path.join(lists, f"trainlist0{split}.txt"), "w") as f:
            f.writelines(f"{rel} {label}\n" for rel, label, group in rows if group != split)
        with open(os.path.join(lists, f"testlist0{split}.txt"), "w") as f:
            f.writelines(f"{rel}\n" for rel, _, group in rows if group == split)


def write_sky_timelapse(
    root: str, *, videos: int = 2, clips: int = 2, num_frames: int = 12, size: tuple = (36, 64)
) -> None:
    """`root/sky_train/<video>/<clip>/<video>_<clip>_frames_00001.jpg` (and `sky_test/`)."""
    for s, split in enumerate(("sky_train", "sky_test")):
        for v in range(videos):
            for c in range(clips):
                frames = moving_shapes(num_frames, *size, seed=1000 * s + 10 * v + c)
                name = f"video{v:03d}"
                folder = os.path.join(root, split, name, f"{name}_{c}")
                write_frames(folder, frames, ".jpg", prefix=f"{name}_{c}_frames_")


def write_taichi(
    root: str,
    *,
    videos: int = 3,
    num_frames: int = 40,
    size: tuple = (64, 64),
    png_folders: int = 1,
) -> None:
    """`root/train/<id>.mp4` and `root/test/<id>.mp4`; the last `png_folders` videos of each
    split are folders of png frames instead, as in the first-order-motion release."""
    for s, split in enumerate(("train", "test")):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        for v in range(videos):
            frames = moving_shapes(num_frames, *size, seed=100 * s + v)
            path = os.path.join(root, split, f"taichi_{v:03d}")
            if v >= videos - png_folders:
                # The release names its frame folders like the videos, "<id>.mp4/".
                write_frames(path + ".mp4", frames, ".png")
            else:
                video_io.write_video(path + ".mp4", frames)


def write_video_folder(
    root: str,
    *,
    classes=("cats", "dogs"),
    per_class: int = 3,
    num_frames: int = 24,
    size: tuple = (48, 64),
    ext: str = ".mp4",
    captions: bool = True,
) -> list[str]:
    """`root/<class>/<class>_<i><ext>` plus `root/captions.jsonl`; returns the video paths."""
    paths, rows = [], []
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            rel = os.path.join(name, f"{name}_{i}{ext}")
            frames = moving_shapes(num_frames, *size, seed=c * 100 + i)
            video_io.write_video(os.path.join(root, rel), frames)
            paths.append(os.path.join(root, rel))
            rows.append({"path": rel, "caption": f"a video of {name} number {i}"})
    if captions:
        with open(os.path.join(root, "captions.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    return paths
