"""How fast the input pipeline delivers clips (`python -m vfjax.data bench`).

With `fake_videos`, the benchmark first writes that many moving-shape videos (default 100 frames
at 320x240, UCF101's size) into `manual_dir` as a video_folder, so that the number can be
reproduced anywhere; then it prepares the data set if needed and times the loader.
"""

import os
import time

from vfjax.data import config as config_lib
from vfjax.data import fake_data, pipeline, preparation, storage, video_io


def write_fake_videos(folder: str, count: int, num_frames: int, height: int, width: int) -> None:
    """`count` mp4 videos of moving shapes in `folder` (kept if already there)."""
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        path = os.path.join(folder, f"fake_{i:04d}.mp4")
        if not os.path.exists(path):
            video_io.write_video(path, fake_data.moving_shapes(num_frames, height, width, seed=i))


def benchmark(data_config, *, batch_size: int, batches: int, warmup: int = 2) -> dict:
    """Times `batches` local batches after `warmup` ones; returns clips/s and the setup.

    `clips_per_s` is the rate of the batches training reads (uint8 videos, converted on the
    devices); `clips_per_s_float32` that of float32 videos converted on the host (what
    evaluation reads, and what training read before).
    """
    cfg = config_lib.with_defaults(data_config)
    if cfg.name != "synthetic" and not storage.is_prepared(storage.builder_dir(cfg)):
        preparation.prepare(cfg)  # Logs its statistics.
    timed = {
        dtype: _time_loader(cfg, dtype, batch_size=batch_size, batches=batches, warmup=warmup)
        for dtype in ("uint8", "float32")
    }
    seconds, shape = timed["uint8"]
    return {
        "name": cfg.name,
        "clip_shape": shape,
        "stride": cfg.stride,
        "batch_size": batch_size,
        "batches": batches,
        "num_workers": cfg.num_workers,
        "cpu_count": os.cpu_count(),
        "seconds": round(seconds, 3),
        "clips_per_s": round(batches * batch_size / seconds, 1),
        "clips_per_s_float32": round(batches * batch_size / timed["float32"][0], 1),
    }


def _time_loader(cfg, video_dtype: str, *, batch_size: int, batches: int, warmup: int):
    """Seconds for `batches` batches of `video_dtype` videos after `warmup` ones, and the clip
    shape."""
    loader = pipeline.create_loader(
        cfg, global_batch_size=batch_size, seed=0, video_dtype=video_dtype
    )
    try:
        for _ in range(warmup):
            next(loader)
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(loader)
        return time.perf_counter() - start, list(batch["video"].shape[1:])
    finally:
        loader.close()
