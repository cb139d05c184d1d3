"""From a stored video to a training clip: the sources the pipeline reads and the clip sampler.

Clip rule: `num_frames` frames `stride` apart, starting at a uniformly random frame among those
that leave room for the whole clip (`data.clip_sampling='random_window'`: one window per video
drawn), or at each window of every video in turn (`'random_clip'`: the windows of all videos are
the elements, `WindowSource`, so clips are uniform over all windows). A video shorter than the
clip (`(num_frames - 1) * stride + 1` frames) is, by `data.short_video`:
- 'pad' (default): read from its first frame, the missing frames repeat its last frame;
- 'skip': left out of the source (from the per-video index written at prepare time).
Frames are then resized to `resolution` if stored at another size (short side, bilinear
antialiased, centre crop: `video_io.resize_short_side_crop`), made grey scale when
`channels == 1`, and flipped left-right with probability 1/2 when `random_flip`.
"""

import dataclasses

import numpy as np

from vfjax.data import storage, text, video_io

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def clip_span(num_frames: int, stride: int) -> int:
    """Frames of source video one clip covers."""
    return (num_frames - 1) * stride + 1


class RecordSource:
    """Random access over the records of one or more splits of a prepared data set.

    Element: {'video': object array of JPEG bytes [T], 'label': int} (+ 'text_emb' when asked).

    Args:
      builder: the prepared data set (`storage.open_builder`).
      splits: split names, read one after the other.
      min_frames: records with fewer frames are left out (0 keeps all).
      text_emb: whether to add each video's caption embedding (`vfjax.data.text`), float32
        `[S, D]`.
    """

    def __init__(self, builder, splits: list[str], *, min_frames: int = 0, text_emb: bool = False):
        self._sources = [storage.open_split(builder, split) for split in splits]
        self._text = (
            [text.open_split(str(builder.data_dir), split) for split in splits]
            if text_emb
            else None
        )
        if min_frames:
            index = storage.read_index(builder)
            keep = [
                np.flatnonzero(np.asarray(index[s]["num_frames"]) >= min_frames) for s in splits
            ]
        else:
            keep = [np.arange(len(source)) for source in self._sources]
        self._split_of = np.concatenate([np.full(len(k), i) for i, k in enumerate(keep)])
        self._record_of = np.concatenate(keep).astype(np.int64)
        self._builder, self._splits = builder, splits

    def frame_counts(self) -> np.ndarray:
        """Frames of each element's video (from the index written at prepare time)."""
        index = storage.read_index(self._builder)
        counts = [np.asarray(index[s]["num_frames"], np.int64) for s in self._splits]
        return np.array(
            [counts[s][r] for s, r in zip(self._split_of, self._record_of, strict=True)]
        )

    def __len__(self) -> int:
        return len(self._record_of)

    def __getitem__(self, index: int) -> dict:
        split, position = self._split_of[index], int(self._record_of[index])
        record = self._sources[split][position]
        element = {"video": record["video"], "label": int(record["label"])}
        if self._text is not None:
            element["text_emb"] = np.asarray(self._text[split][position], np.float32)
        return element


class WindowSource:
    """Every clip window of every video of a source as an element of its own: sampling these
    uniformly draws clips uniformly among all windows of all videos (a long video gives more
    clips), where sampling the videos draws one window per video. Element: the video's element
    with `start`, the window's first frame.

    Args:
      source: the videos (an indexable of elements with a 'video').
      frame_counts: frames of each video.
      span: frames one clip covers (`clip_span`); a shorter video gives one (padded) window.
    """

    def __init__(self, source, frame_counts: np.ndarray, span: int):
        self._source = source
        windows = np.maximum(np.asarray(frame_counts, np.int64) - span + 1, 1)
        self._first = np.concatenate([[0], np.cumsum(windows)])  # Window index of each video.

    def __len__(self) -> int:
        return int(self._first[-1])

    def __getitem__(self, index: int) -> dict:
        video = int(np.searchsorted(self._first, index, side="right") - 1)
        return {**self._source[video], "start": int(index - self._first[video])}


@dataclasses.dataclass(frozen=True)
class ClipSampler:
    """grain `random_map` transform: a video element -> a uint8 clip [N, H, W, C] and its label.

    Accepts decoded videos (uint8 [T, H, W, C], the synthetic source) and stored ones (JPEG bytes
    per frame, of which only the clip's frames are decoded).
    """

    num_frames: int
    stride: int
    resolution: int
    channels: int = 3
    random_flip: bool = False

    def __call__(self, element: dict, rng: np.random.Generator) -> dict:
        video = element["video"]
        length = len(video)
        room = length - clip_span(self.num_frames, self.stride)
        if "start" in element:  # A window chosen already (`WindowSource`).
            start = element["start"]
        else:
            start = int(rng.integers(room + 1)) if room > 0 else 0
        # Past the end of a short video, np.minimum repeats its last frame ('pad').
        indices = np.minimum(start + self.stride * np.arange(self.num_frames), length - 1)
        if video.dtype == object:
            unique, positions = np.unique(indices, return_inverse=True)
            decoded = np.stack([video_io.decode_jpeg(video[i]) for i in unique])
            frames = decoded[positions]
        else:
            frames = video[indices]
        if frames.shape[1:3] != (self.resolution, self.resolution):
            frames = video_io.resize_frames(frames, self.resolution)
        if self.channels == 1 and frames.shape[-1] == 3:
            frames = np.rint(frames @ _LUMA)[..., None].astype(np.uint8)
        if self.random_flip and rng.random() < 0.5:
            frames = frames[:, :, ::-1]
        clip = {"video": np.ascontiguousarray(frames), "label": np.int32(element["label"])}
        if "text_emb" in element:
            clip["text_emb"] = element["text_emb"]
        return clip
