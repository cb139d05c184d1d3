"""UCF101 (13,320 action videos, 101 classes) with its official train/test splits 1-3.

Expected in `manual_dir`, extracted (the `UCF101/` folder of the archive, or its contents):

    UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    ucfTrainTestlist/classInd.txt       "1 ApplyEyeMakeup"
    ucfTrainTestlist/trainlist0K.txt    "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    ucfTrainTestlist/testlist0K.txt     "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"

or the original downloads `UCF101.rar` and `UCF101TrainTestSplits-RecognitionTask.zip`, which are
unpacked into the tfds download folder (the .rar needs the `rarfile` package and an `unrar`
tool). Labels are the 0-based order of classInd.txt. One config per (resolution, split):
`ucf101/64_split1` holds the 'train' and 'test' splits of official split 1.
"""

import os
import zipfile

from vfjax.data.builders import base

_VIDEOS = "UCF-101"
_LISTS = "ucfTrainTestlist"
_RAR = "UCF101.rar"
_SPLITS_ZIP = "UCF101TrainTestSplits-RecognitionTask.zip"


class Ucf101(base.VideoBuilder, skip_registration=True):
    """UCF101 from local files; see the module docstring for the expected layout."""

    name = "ucf101"
    DESCRIPTION = "UCF101 action recognition videos (Soomro et al., 2012), official splits."

    def __init__(self, *, ucf_split: int = 1, resolution: int, **kwargs):
        if ucf_split not in (1, 2, 3):
            raise ValueError(f"UCF101 has official splits 1, 2 and 3, not {ucf_split!r}.")
        self.ucf_split = ucf_split
        super().__init__(
            resolution=resolution, config_name=f"{resolution}_split{ucf_split}", **kwargs
        )

    def content_options(self) -> dict:
        return {**super().content_options(), "ucf_split": self.ucf_split}

    def find_videos(self, manual_dir: str, extract_dir: str) -> base.Layout:
        base.require_dir(manual_dir, "UCF101 manual_dir")
        videos_dir, lists_dir = _locate(manual_dir, extract_dir)
        class_names = _read_class_index(os.path.join(lists_dir, "classInd.txt"))
        class_of = {name.lower(): i for i, name in enumerate(class_names)}
        resolver = _PathResolver(videos_dir)
        splits, missing = {}, {}
        for split in ("train", "test"):
            list_path = os.path.join(lists_dir, f"{split}list0{self.ucf_split}.txt")
            if not os.path.isfile(list_path):
                raise ValueError(f"UCF101 split list {list_path} is missing; re-extract the lists.")
            entries, absent = [], []
            for relpath in _read_split_list(list_path):
                class_name = relpath.split("/")[0].lower()
                if class_name not in class_of:
                    raise ValueError(f"{list_path}: class of {relpath!r} is not in classInd.txt.")
                path = resolver.find(relpath)
                if path is None:
                    absent.append(relpath)
                    continue
                entries.append(base.VideoEntry(path, relpath, label=class_of[class_name]))
            splits[split], missing[split] = entries, absent
        if not any(splits.values()):
            raise ValueError(f"None of the videos listed in {lists_dir} is under {videos_dir}.")
        return base.Layout(splits=splits, class_names=class_names, missing=missing)


def _locate(manual_dir: str, extract_dir: str) -> tuple[str, str]:
    """Finds (UCF-101 folder, split-list folder), unpacking the original archives if needed."""
    roots = (manual_dir, os.path.join(manual_dir, "UCF101"), extract_dir)
    videos = _first_dir(os.path.join(root, _VIDEOS) for root in roots)
    lists = _first_dir(os.path.join(root, _LISTS) for root in roots)
    rar, splits_zip = os.path.join(manual_dir, _RAR), os.path.join(manual_dir, _SPLITS_ZIP)
    if videos is None and lists is None and not (os.path.isfile(rar) or os.path.isfile(splits_zip)):
        raise ValueError(
            f"{manual_dir} holds no UCF101: expected {_VIDEOS}/<Class>/*.avi and {_LISTS}/ "
            f"(or {_RAR} and {_SPLITS_ZIP})."
        )
    if lists is None:
        if not os.path.isfile(splits_zip):
            raise ValueError(
                f"UCF101 split lists missing: put {_LISTS}/ or {_SPLITS_ZIP} in {manual_dir}."
            )
        with zipfile.ZipFile(splits_zip) as archive:
            archive.extractall(extract_dir)
        lists = os.path.join(extract_dir, _LISTS)
    if videos is None:
        if not os.path.isfile(rar):
            raise ValueError(f"UCF101 videos missing: put {_VIDEOS}/ or {_RAR} in {manual_dir}.")
        _extract_rar(rar, extract_dir)
        videos = os.path.join(extract_dir, _VIDEOS)
    for path in (videos, lists):
        base.require_dir(path, "UCF101 archive contents")
    return videos, lists


def _first_dir(paths) -> str | None:
    return next((path for path in paths if os.path.isdir(path)), None)


def _extract_rar(path: str, extract_dir: str) -> None:
    try:
        import rarfile  # Optional: only this path needs it.
    except ImportError:
        raise ValueError(
            f"Found {path} but cannot unpack .rar here: `pip install rarfile` (plus an `unrar` "
            f"tool), or extract it yourself (`unrar x {_RAR}`) and point manual_dir at the result."
        ) from None
    try:
        with rarfile.RarFile(path) as archive:
            archive.extractall(extract_dir)
    except rarfile.Error as e:
        raise ValueError(
            f"Cannot unpack {path} ({e}); install `unrar`, or extract it (`unrar x {_RAR}`)."
        ) from e


def _read_class_index(path: str) -> list[str]:
    """classInd.txt ("1 ApplyEyeMakeup" per line) -> class names in label order."""
    if not os.path.isfile(path):
        raise ValueError(f"UCF101 class index {path} is missing; re-extract the split lists.")
    pairs = []
    with open(path) as f:
        for line in f:
            if line.strip():
                number, name = line.split()
                pairs.append((int(number), name))
    return [name for _, name in sorted(pairs)]


def _read_split_list(path: str) -> list[str]:
    """Relative video paths of a train/test list; the train lists' trailing label is ignored
    because the class folder gives the same label for both lists."""
    with open(path) as f:
        return [line.split()[0].replace("\\", "/") for line in f if line.strip()]


class _PathResolver:
    """Finds listed videos, also where the file name's case differs from the list's.

    The UCF101 lists spell some names differently from the files (HandStandPushups vs
    HandstandPushups); the lower-cased index of the folder is built only when first needed.
    """

    def __init__(self, root: str):
        self._root = root
        self._by_lower = None

    def find(self, relpath: str) -> str | None:
        path = os.path.join(self._root, relpath)
        if os.path.isfile(path):
            return path
        if self._by_lower is None:
            self._by_lower = {}
            for dirpath, _, filenames in os.walk(self._root):
                for name in filenames:
                    full = os.path.join(dirpath, name)
                    self._by_lower[os.path.relpath(full, self._root).lower()] = full
        return self._by_lower.get(relpath.lower())
