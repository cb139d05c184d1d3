"""Measured on the devices: a config's train step and sampler, run and timed.

The step is the real one: compiled ahead of time with the run's shardings and donated state, fed
a synthetic batch already on the devices, so the figures measure the device and not the input
pipeline. Model FLOPs are the matmul and convolution FLOPs counted from the traced step
(`vfjax.flops`), the same on every backend (XLA's GPU cost analysis misses cuDNN convolutions).
"""

import functools
import importlib.metadata
import os
import platform
import statistics
import time

import jax
import numpy as np

from vfjax import distributed, run_setup, steps
from vfjax import flops as flops_lib
from vfjax import sharding as sharding_lib
from vfjax import state as state_lib
from vfjax.models import init as init_lib

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

# Libraries whose versions a report names (distribution names; absent ones are left out).
LIBRARIES = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda13-plugin",
    "libtpu",
    "flax",
    "optax",
    "orbax-checkpoint",
    "ml-collections",
    "numpy",
    "torch",
    "diffusers",
)
# Environment variables that change what XLA compiles or how much memory it takes.
XLA_ENV_PREFIXES = ("XLA_", "JAX_", "LIBTPU_", "TF_GPU_", "NCCL_")


def device_name(device) -> str:
    return f"{device.platform}:{getattr(device, 'device_kind', '')}"


def device_peak(device) -> float | None:
    """bf16 peak FLOP/s of `device`, when known."""
    kind = getattr(device, "device_kind", "")
    for name, peak in PEAK_BF16.items():
        if name.lower() in kind.lower():
            return peak
    return None


def library_versions() -> dict[str, str]:
    """Installed versions of `LIBRARIES`, and Python's (read without importing them)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # Not installed: left out of the report.
            pass
    return versions


def xla_environment() -> dict[str, str]:
    """The XLA/JAX settings in force from the environment (`XLA_FLAGS` and the like)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(XLA_ENV_PREFIXES)}


def environment() -> dict:
    """Device, device count, library versions and XLA settings of this process."""
    device = jax.local_devices()[0]
    peak = device_peak(device)
    return {
        "device": device_name(device),
        "num_devices": jax.device_count(),
        "peak_tflops_per_device": peak / 1e12 if peak else None,
        "versions": library_versions(),
        "xla_env": xla_environment(),
    }


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
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
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
    # Assembled as `vfjax.data.make_global_batch` does, without importing the input pipeline
    # (grain, tfds): the benchmark needs none of it, and a device host may lack it.
    sharding = sharding_lib.batch_sharding(setup.mesh)
    batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

    step_fn = functools.partial(steps.train_step, setup=setup, config=config)
    flops = flops_lib.model_flops(step_fn, setup.abstract_state, batch)
    t0 = time.perf_counter()
    compiled = steps.compile_train_step(setup, config, batch)
    compile_s = time.perf_counter() - t0
    holder = {"state": state_lib.create_state(setup, config.seed)}

    def one():
        holder["state"], metrics = compiled(holder["state"], batch)
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


def sample_cond(config, batch: int) -> dict | None:
    """The condition the benchmark samples with: class 0 for class-conditional runs, else none
    (text-conditioned configs sample unconditionally)."""
    if config.data.cond == "class":
        return {"label": np.zeros((batch,), np.int32)}
    return None


def abstract_sampler_args(config, setup: state_lib.Setup, batch: int) -> tuple:
    """The arguments of `steps.make_sampler`'s program for lowering it without running it: the
    abstract EMA parameters, two keys, `sample_cond` and no known frames."""
    return (
        setup.abstract_state.ema,
        jax.random.key(0),
        jax.random.key(1),
        sample_cond(config, batch),
        None,
    )


def sampling_params(setup: state_lib.Setup, seed: int) -> dict:
    """The parameters a fresh state starts with (its EMA), already sharded, without the
    optimizer state and the second copy a whole state holds: sampling needs only these."""
    init = jax.jit(
        lambda rng: init_lib.init_params(setup.abstract_params, jax.random.fold_in(rng, 0)),
        out_shardings=setup.shardings.ema,
    )
    return init(jax.random.key(seed))


def bench_sampling(config, setup: state_lib.Setup, batch: int, repeats: int = 2) -> dict:
    params = sampling_params(setup, config.seed)
    sampler = steps.make_sampler(config, setup, batch, num_clips=1)
    args = (params, jax.random.key(0), jax.random.key(1), sample_cond(config, batch), None)
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
    times = _time(compiled, *args, steps=repeats)
    latency = statistics.median(times)
    memory, source = peak_memory(jax.local_devices()[0], compiled)
    return {
        "sample_batch": batch,
        "sample_num_steps": config.sampling.num_steps,
        "sample_model_flops": flops,
        "sample_compile_s": compile_s,
        "sample_latency_s": latency,
        "sample_latency_per_step_s": latency / config.sampling.num_steps,
        "sample_videos_per_s": batch / latency,
        "sample_achieved_tflops": flops / latency / 1e12,
        "sample_peak_memory_bytes": memory,
        "sample_peak_memory_source": source,
    }


def run(config, num_steps: int, warmup: int, train: bool, sample: bool, sample_batch: int) -> dict:
    """The benchmark of `config`: its train step (`train`) and sampler (`sample`)."""
    if not (train or sample):
        raise ValueError("Nothing to measure: --train and --sample are both false.")
    config, setup = run_setup.setup_run(config, None, with_data=False)
    env = environment()
    result = {
        "device": env["device"],
        "num_devices": setup.mesh.size,
        "jax_version": jax.__version__,
        "model_kind": config.model.kind,
        "params": {k: int(v) for k, v in run_setup.param_counts(setup).items()},
        "versions": env["versions"],
        "xla_env": env["xla_env"],
    }
    if train:
        result.update(bench_train(config, setup, num_steps, warmup))
    if sample:
        result.update(bench_sampling(config, setup, sample_batch or config.sampling.batch_size))
    return result


def report(r: dict) -> str:
    """`run`'s result as a few lines of text."""
    lines = [
        f"device {r['device']} x{r['num_devices']}, jax {r['jax_version']}, "
        f"{r['model_kind']} {r['params']['total'] / 1e6:.1f}M params"
    ]
    if "step_time_s" in r:
        lines += [
            f"train: batch {r['batch_size']} x {r['video_shape']}, compile "
            f"{r['compile_s']:.1f} s, step {r['step_time_s'] * 1e3:.1f} ms (min "
            f"{r['step_time_min_s'] * 1e3:.1f}, max {r['step_time_max_s'] * 1e3:.1f}), "
            f"{r['videos_per_s']:.2f} videos/s",
            f"       {r['model_flops_per_step'] / 1e12:.3f} TFLOP/step (model, from the jaxpr), "
            f"{r['achieved_tflops']:.2f} TFLOP/s"
            + (f", MFU {r['mfu'] * 100:.1f}% of bf16 peak" if r["mfu"] else ", peak unknown")
            + f", peak memory {r['peak_memory_bytes'] / 2**30:.2f} GiB "
            f"({r['peak_memory_source']})",
        ]
    if "sample_latency_s" in r:
        lines.append(
            f"sample: {r['sample_num_steps']} DDIM steps x batch {r['sample_batch']}, compile "
            f"{r['sample_compile_s']:.1f} s, {r['sample_latency_s']:.2f} s, "
            f"{r['sample_videos_per_s']:.2f} videos/s, {r['sample_achieved_tflops']:.2f} "
            f"TFLOP/s, peak memory {r['sample_peak_memory_bytes'] / 2**30:.2f} GiB"
        )
    return "\n".join(lines)
