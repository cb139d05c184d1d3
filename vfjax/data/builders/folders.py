"""Data sets that are folders of videos: Sky Time-lapse, TaiChi-HD, and any folder of videos.

A video is a video file (mp4, avi, webm, mov, mkv, m4v) or a folder that directly holds frame
images (jpg, png, bmp, webp), read in natural name order.

- Sky Time-lapse, MDGAN layout: `sky_train/` and `sky_test/`, each innermost folder of frames
  (`sky_train/<video_id>/<clip_id>/*.jpg`) one video.
- TaiChi-HD, first-order-motion layout: `train/` and `test/`, one .mp4 or one folder of png
  frames per video.
- video_folder: split folders `train/`, `test/`, `validation/` if present, else the whole folder
  is 'train'. With `folder_labels`, the first folder below the split root names the class (when
  every video sits in one). An optional captions file maps each video's path relative to
  `manual_dir` (or to its split root) to a caption: `captions.jsonl` lines
  {"path": ..., "caption": ...}, or `captions.csv` with a `path,caption` header.
"""

import csv
import json
import os

from vfjax.data.builders import base

_SPLIT_FOLDERS = {"train": "train", "test": "test", "validation": "validation", "val": "validation"}
_CAPTION_FILES = ("captions.jsonl", "captions.csv")


def _unlabelled_splits(manual_dir: str, folders: dict[str, str], what: str) -> base.Layout:
    """Layout of data sets whose split folders hold unlabelled videos."""
    base.require_dir(manual_dir, f"{what} manual_dir")
    absent = [f for f in folders.values() if not os.path.isdir(os.path.join(manual_dir, f))]
    if absent:
        raise ValueError(
            f"{manual_dir} is not in the {what} layout: missing {', '.join(absent)}/ "
            f"(expected {', '.join(f + '/' for f in folders.values())})."
        )
    splits = {}
    for split, folder in folders.items():
        paths = base.list_videos(os.path.join(manual_dir, folder))
        splits[split] = [base.VideoEntry(p, os.path.relpath(p, manual_dir)) for p in paths]
    if not any(splits.values()):
        raise ValueError(f"No videos or frame folders found under {manual_dir} ({what} layout).")
    return base.Layout(splits=splits)


class SkyTimelapse(base.VideoBuilder, skip_registration=True):
    """Sky Time-lapse (Xiong et al., 2018) in the MDGAN layout."""

    name = "sky_timelapse"
    DESCRIPTION = "Sky Time-lapse clips (MDGAN release), one record per innermost frame folder."

    def find_videos(self, manual_dir: str, extract_dir: str) -> base.Layout:
        del extract_dir  # No archive handling: the release is a folder tree.
        root = manual_dir
        if not os.path.isdir(os.path.join(root, "sky_train")):
            nested = os.path.join(manual_dir, "sky_timelapse")
            root = nested if os.path.isdir(os.path.join(nested, "sky_train")) else manual_dir
        return _unlabelled_splits(
            root, {"train": "sky_train", "test": "sky_test"}, "Sky Time-lapse"
        )


class TaiChi(base.VideoBuilder, skip_registration=True):
    """TaiChi-HD (Siarohin et al., 2019) in the first-order-motion layout."""

    name = "taichi"
    DESCRIPTION = "TaiChi-HD videos (first-order-motion release), mp4 or png frame folders."

    def find_videos(self, manual_dir: str, extract_dir: str) -> base.Layout:
        del extract_dir  # No archive handling.
        return _unlabelled_splits(manual_dir, {"train": "train", "test": "test"}, "TaiChi-HD")


class VideoFolder(base.VideoBuilder, skip_registration=True):
    """Any folder of videos, with optional class folders and captions (see module docstring).

    Args:
      folder_labels: take the class from the first folder below the split root.
      captions: captions file, absolute or relative to `manual_dir`; "" looks for
        captions.jsonl or captions.csv in `manual_dir`.
    """

    name = "video_folder"
    DESCRIPTION = "Videos from a local folder."

    def __init__(self, *, folder_labels: bool = True, captions: str = "", **kwargs):
        self.folder_labels = folder_labels
        self.captions = captions
        super().__init__(**kwargs)

    def content_options(self) -> dict:
        # Every folder is a different data set under the same name: the source is part of it.
        return {
            **super().content_options(),
            "folder_labels": self.folder_labels,
            "captions": self.captions,
            "manual_dir": self.manual_dir,
        }

    def find_videos(self, manual_dir: str, extract_dir: str) -> base.Layout:
        del extract_dir  # No archive handling.
        base.require_dir(manual_dir, "video_folder manual_dir")
        roots = {
            split: os.path.join(manual_dir, folder)
            for folder, split in _SPLIT_FOLDERS.items()
            if os.path.isdir(os.path.join(manual_dir, folder))
        } or {"train": manual_dir}
        found = {split: base.list_videos(root) for split, root in roots.items()}
        if not any(found.values()):
            raise ValueError(f"No videos or frame folders found under {manual_dir}.")
        relative = {s: [os.path.relpath(p, roots[s]) for p in ps] for s, ps in found.items()}
        labelled = self.folder_labels and all(
            os.sep in rel for rels in relative.values() for rel in rels
        )
        class_names = sorted(
            {rel.split(os.sep)[0] for rels in relative.values() for rel in rels} if labelled else []
        )
        class_of = {name: i for i, name in enumerate(class_names)}
        captions = _read_captions(manual_dir, self.captions)
        splits = {}
        for split, paths in found.items():
            entries = []
            for path, rel in zip(paths, relative[split], strict=True):
                key = os.path.relpath(path, manual_dir)
                entries.append(
                    base.VideoEntry(
                        path,
                        key,
                        label=class_of[rel.split(os.sep)[0]] if labelled else 0,
                        caption=captions.get(key, captions.get(rel, "")),
                    )
                )
            splits[split] = entries
        return base.Layout(splits=splits, class_names=class_names)


def _read_captions(manual_dir: str, captions: str) -> dict[str, str]:
    """Relative path -> caption from a .jsonl or .csv file; {} when there is none."""
    if captions:
        path = captions if os.path.isabs(captions) else os.path.join(manual_dir, captions)
        if not os.path.isfile(path):
            raise ValueError(
                f"Captions file {path} not found; fix data.captions or leave it empty."
            )
    else:
        candidates = [os.path.join(manual_dir, name) for name in _CAPTION_FILES]
        path = next((p for p in candidates if os.path.isfile(p)), None)
        if path is None:
            return {}
    rows = []
    with open(path, newline="") as f:
        if path.endswith(".jsonl"):
            rows = [json.loads(line) for line in f if line.strip()]
        else:
            rows = list(csv.DictReader(f))
    if rows and not {"path", "caption"} <= set(rows[0]):
        raise ValueError(f"{path}: each row needs 'path' and 'caption' fields.")
    return {os.path.normpath(row["path"]): row["caption"] for row in rows}
