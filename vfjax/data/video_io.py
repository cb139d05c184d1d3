"""Reading, resizing and writing videos: PyAV for video files, Pillow for frames.

One resize rule is used everywhere (prepare and load): scale the short side to the target size
with Pillow's bilinear filter, which widens its kernel when shrinking (antialiased, like
`tf.image.resize(..., antialias=True)`), then cut the centred square. This is the usual FVD
protocol preprocessing for UCF101, Sky Time-lapse and TaiChi-HD.
"""

import dataclasses
import io
import os
import re
from collections.abc import Callable

import av
import numpy as np
from PIL import Image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# A container that promises N frames but decodes fewer than this share of them is truncated.
_MIN_DECODED_SHARE = 0.9


class BadVideoError(Exception):
    """A video that cannot be used; `reason` is 'unreadable', 'truncated' or 'empty'."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass
class DecodedVideo:
    """The frames of one video after `transform`, and what the source said about itself."""

    frames: list  # One entry per frame, whatever `transform` returned.
    fps: float  # 0.0 when unknown (frame folders).
    height: int  # Original frame size.
    width: int


def natural_key(name: str) -> list:
    """Sort key that puts 'frame_2' before 'frame_10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_video_file(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def resize_short_side_crop(image: Image.Image, size: int) -> Image.Image:
    """Scales the short side of `image` to `size` (bilinear, antialiased), then centre-crops."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Applies `resize_short_side_crop` to uint8 frames [N, H, W, 3] -> [N, size, size, 3]."""
    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([np.asarray(resize_short_side_crop(Image.fromarray(f), size)) for f in frames])


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG (or PNG) bytes -> uint8 [H, W, 3]."""
    with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as image:
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def read_video_file(path: str, transform: Callable[[Image.Image], object]) -> DecodedVideo:
    """Decodes every frame of a video file with PyAV and applies `transform` to each.

    Frames are transformed as they are decoded, so a long video never sits in memory at full
    size.

    Raises:
      BadVideoError: the file cannot be opened or decoded ('unreadable'), holds no frame
        ('empty'), or decodes clearly fewer frames than its header declares ('truncated').
    """
    frames = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise BadVideoError("unreadable", f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            declared = stream.frames
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            height, width = stream.codec_context.height, stream.codec_context.width
            for frame in container.decode(stream):
                frames.append(transform(frame.to_image()))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise BadVideoError("unreadable", f"{path}: {e}") from e
    if not frames:
        raise BadVideoError("empty", f"{path}: no frame could be decoded")
    if declared and len(frames) < _MIN_DECODED_SHARE * declared:
        raise BadVideoError(
            "truncated", f"{path}: decoded {len(frames)} of {declared} declared frames"
        )
    return DecodedVideo(frames=frames, fps=fps, height=height, width=width)


def read_frame_folder(path: str, transform: Callable[[Image.Image], object]) -> DecodedVideo:
    """Reads a folder of frame images in natural name order, applying `transform` to each.

    Raises:
      BadVideoError: an image cannot be decoded ('unreadable') or there is none ('empty').
    """
    names = sorted((n for n in os.listdir(path) if is_image_file(n)), key=natural_key)
    if not names:
        raise BadVideoError("empty", f"{path}: no frame images")
    frames, size = [], None
    for name in names:
        try:
            with Image.open(os.path.join(path, name)) as image:
                image = image.convert("RGB")
        except OSError as e:
            raise BadVideoError("unreadable", f"{os.path.join(path, name)}: {e}") from e
        size = size or image.size
        frames.append(transform(image))
    return DecodedVideo(frames=frames, fps=0.0, height=size[1], width=size[0])


def read_video(path: str, transform: Callable[[Image.Image], object]) -> DecodedVideo:
    """A video file or a folder of frames, see `read_video_file` and `read_frame_folder`."""
    if os.path.isdir(path):
        return read_frame_folder(path, transform)
    return read_video_file(path, transform)


def write_video(path: str, frames: np.ndarray, fps: float = 25.0) -> None:
    """Encodes uint8 frames [N, H, W, 3] (even H and W) to a video file with PyAV.

    The codec follows the extension: H.264 for .mp4/.mov/.mkv, MPEG-4 part 2 for .avi, VP9 for
    .webm.
    """
    codec = {".avi": "mpeg4", ".webm": "libvpx-vp9"}.get(os.path.splitext(path)[1].lower())
    codec = codec or "libx264"
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=round(fps))
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            packets = stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24"))
            container.mux(packets)
        container.mux(stream.encode())
