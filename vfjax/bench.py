"""Benchmark a config's train step and sampler: FLOPs, compile time, step time, MFU, memory.

    python -m vfjax.bench --config=configs/ucf101_64.py [--steps=20] [--json=OUT]

Model FLOPs are the matmul and convolution FLOPs counted from the traced step (`vfjax.flops`),
the same on every backend (XLA's GPU cost analysis misses cuDNN convolutions). The step is the
real one: compiled ahead of time with the run's shardings and donated state, fed a synthetic
batch already on the devices, so the figures measure the device and not the input pipeline.
"""

import functools
import json
import statistics
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vfjax import cli, distributed, fileio, run_setup, steps
from vfjax import data as data_lib
from vfjax import flops as flops_lib
from vfjax import sharding as sharding_lib
from vfjax import state as state_lib

# Dense bf16 peak of one device, FLOP/s (vendor datasheets).
PEAK_BF16 = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}

config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_integer("steps", 10, "Timed train steps (after warm-up).")
flags.DEFINE_integer("warmup", 2, "Untimed train steps.")
flags.DEFINE_integer("sample_batch", 0, "Videos per sampling call (0: sampling.batch_size).")
flags.DEFINE_bool("sample", True, "Also benchmark the sampler (sampling.num_steps DDIM steps).")
flags.DEFINE_string("json", "", "Write the results as JSON to this path.")
FLAGS = flags.FLAGS


def device_peak(device) -> float | None:
    """bf16 peak FLOP/s of `device`, when known."""
    kind = getattr(device, "device_kind", "")
    for name, peak in PEAK_BF16.items():
        if name.lower() in kind.lower():
            return peak
    return None


def peak_memory(device, compiled) -> tuple[int | None, str]:
    """Peak device memory in bytes, and where the figure comes from."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device.memory_stats peak_bytes_in_use"
    mem = compiled.memory_analysis()
    if mem is not None:
        total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
        return int(total - mem.alias_size_in_bytes), "compiled.memory_analysis (no device stats)"
    return None, "unavailable"


def _time(fn, *args, steps: int) -> list[float]:
    times = []
    out = None
    for _ in range(steps):
        start = time.perf_counter()
        out = fn(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    return times


def bench_train(config, setup: state_lib.Setup, num_steps: int, warmup: int) -> dict:
    n, r, c = config.data.num_frames, config.data.resolution, config.data.channels
    b = config.batch_size
    # This process's share of a synthetic global batch, assembled as training does.
    local = b // jax.process_count()
    rng = np.random.default_rng(jax.process_index())
    batch = {
        "video": rng.uniform(-1, 1, (local, n, r, r, c)).astype(np.float32),
        "label": np.zeros((local,), np.int32),
    }
    if config.data.cond == "text":
        batch["text_emb"] = np.zeros((local, 1, config.model.text_dim), np.float32)
    batch = data_lib.make_global_batch(batch, sharding_lib.batch_sharding(setup.mesh))

    step_fn = functools.partial(steps.train_step, setup=setup, config=config)
    flops = flops_lib.model_flops(step_fn, setup.abstract_state, batch)
    t0 = time.perf_counter()
    compiled = steps.compile_train_step(setup, config, batch)
    compile_s = time.perf_counter() - t0
    state = state_lib.create_state(setup, config.seed)

    def run(state):
        return compiled(state, batch)

    holder = {"state": state}

    def one():
        holder["state"], metrics = run(holder["state"])
        return metrics["loss"]

    _time(one, steps=warmup)
    times = _time(one, steps=num_steps)
    median = statistics.median(times)
    device = jax.local_devices()[0]
    memory, memory_source = peak_memory(device, compiled)
    xla = compiled.cost_analysis()
    xla = xla[0] if isinstance(xla, list) else xla
    per_device = flops / setup.mesh.size / median
    peak = device_peak(device)
    return {
        "batch_size": b,
        "video_shape": [n, r, r, c],
        "model_flops_per_step": flops,
        "flops_source": "jaxpr matmul+conv count (vfjax.flops), forward+backward",
        "xla_flops_per_step": float(xla.get("flops", 0.0)) if xla else None,
        "compile_s": compile_s,
        "step_time_s": median,
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "step_times_s": times,
        "videos_per_s": b / median,
        "achieved_tflops": flops / median / 1e12,
        "achieved_tflops_per_device": per_device / 1e12,
        "peak_tflops_per_device": peak / 1e12 if peak else None,
        "mfu": per_device / peak if peak else None,
        "peak_memory_bytes": memory,
        "peak_memory_source": memory_source,
    }


def bench_sampling(config, setup: state_lib.Setup, batch: int) -> dict:
    state = state_lib.create_state(setup, config.seed)
    sampler = steps.make_sampler(config, setup, batch, num_clips=1)
    cond = None
    if config.data.cond == "class":
        cond = {"label": np.zeros((batch,), np.int32)}
    args = (state.ema, jax.random.key(0), jax.random.key(1), cond, None)
    flops = flops_lib.model_flops(
        functools.partial(
            steps.sample_videos, setup=setup, config=config, num_videos=batch, num_clips=1
        ),
        *args,
    )
    t0 = time.perf_counter()
    compiled = distributed.compile_aligned(sampler.jitted, *args, name="bench sampler")
    compile_s = time.perf_counter() - t0
    _time(compiled, *args, steps=1)
    times = _time(compiled, *args, steps=2)
    latency = statistics.median(times)
    memory, source = peak_memory(jax.local_devices()[0], compiled)
    return {
        "sample_batch": batch,
        "sample_num_steps": config.sampling.num_steps,
        "sample_model_flops": flops,
        "sample_compile_s": compile_s,
        "sample_latency_s": latency,
        "sample_videos_per_s": batch / latency,
        "sample_achieved_tflops": flops / latency / 1e12,
        "sample_peak_memory_bytes": memory,
        "sample_peak_memory_source": source,
    }


def run(config, num_steps: int, warmup: int, sample: bool, sample_batch: int) -> dict:
    config, setup = run_setup.setup_run(config, None, with_data=False)
    device = jax.local_devices()[0]
    counts = {k: int(v) for k, v in run_setup.param_counts(setup).items()}
    result = {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "num_devices": setup.mesh.size,
        "jax_version": jax.__version__,
        "model_kind": config.model.kind,
        "params": counts,
    }
    result.update(bench_train(config, setup, num_steps, warmup))
    if sample:
        batch = sample_batch or config.sampling.batch_size
        result.update(bench_sampling(config, setup, batch))
    return result


def _report(r: dict) -> str:
    lines = [
        f"device {r['device']} x{r['num_devices']}, jax {r['jax_version']}, "
        f"{r['model_kind']} {r['params']['total'] / 1e6:.1f}M params",
        f"train: batch {r['batch_size']} x {r['video_shape']}, compile {r['compile_s']:.1f} s, "
        f"step {r['step_time_s'] * 1e3:.1f} ms (min {r['step_time_min_s'] * 1e3:.1f}, "
        f"max {r['step_time_max_s'] * 1e3:.1f}), {r['videos_per_s']:.2f} videos/s",
        f"       {r['model_flops_per_step'] / 1e12:.3f} TFLOP/step (model, from the jaxpr), "
        f"{r['achieved_tflops']:.2f} TFLOP/s"
        + (f", MFU {r['mfu'] * 100:.1f}% of bf16 peak" if r["mfu"] else ", peak unknown")
        + f", peak memory {r['peak_memory_bytes'] / 2**30:.2f} GiB ({r['peak_memory_source']})",
    ]
    if "sample_latency_s" in r:
        lines.append(
            f"sample: {r['sample_num_steps']} DDIM steps x batch {r['sample_batch']}, "
            f"{r['sample_latency_s']:.2f} s, {r['sample_videos_per_s']:.2f} videos/s, "
            f"{r['sample_achieved_tflops']:.2f} TFLOP/s, peak memory "
            f"{r['sample_peak_memory_bytes'] / 2**30:.2f} GiB"
        )
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    cli.quiet_libraries()
    distributed.initialize()
    result = cli.run_guarded(
        run, FLAGS.config, FLAGS.steps, FLAGS.warmup, FLAGS.sample, FLAGS.sample_batch
    )
    if not distributed.is_main():
        return
    print(_report(result))
    if FLAGS.json:
        text = json.dumps(result, indent=2, default=lambda x: np.asarray(x).tolist())
        fileio.write_text(FLAGS.json, text)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
