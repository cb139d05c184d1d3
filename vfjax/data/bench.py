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
    """Times `batches` local batches after `warmup` ones; returns clips/s and the setup."""
    cfg = config_lib.with_defaults(data_config)
    if cfg.name != "synthetic" and not storage.is_prepared(storage.builder_dir(cfg)):
        preparation.prepare(cfg)  # Logs its statistics.
    loader = pipeline.create_loader(cfg, global_batch_size=batch_size, seed=0)
    for _ in range(warmup):
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(loader)
    seconds = time.perf_counter() - start
    loader.close()
    return {
        "name": cfg.name,
        "clip_shape": list(batch["video"].shape[1:]),
        "stride": cfg.stride,
        "batch_size": batch_size,
        "batches": batches,
        "num_workers": cfg.num_workers,
        "cpu_count": os.cpu_count(),
        "seconds": round(seconds, 3),
        "clips_per_s": round(batches * batch_size / seconds, 1),
    }
