"""Compiled, not run: the model FLOPs and per-device memory of a config's train step and of one
sampling step, for sizes that need an accelerator to run (nothing is allocated or executed).

    python -m vfjax.bench analyse --config=configs/ucf101_64.py --batches=16,64 --json=OUT
    python -m vfjax.bench fit --out=DIR      # the table: ucf101_64/128 x batch 16/64 x 1/8 devices

FLOPs: `model_flops` counts the matmuls and convolutions of the traced program (forward and
backward; analytic, identical on every backend), `xla_flops` is XLA's own cost analysis of the
compiled program (per device; it counts element-wise work too, and on GPU misses cuDNN
convolutions). Memory: the compiled program's `memory_analysis()`, per device: arguments plus
outputs minus the donated (aliased) buffers plus XLA's temporaries. Compiled for the CPU, the
buffer assignment is the CPU's, an estimate of a GPU's; convolutions are compiled as the GPU runs
them (`model.conv_impl = native`).
"""

import functools
import json
import math
import os
import sys
import time

import jax
import numpy as np

from vfjax import fileio, run_setup, steps
from vfjax import flops as flops_lib
from vfjax import state as state_lib
from vfjax.bench import isolate, measure

GB = 1e9
# Device memory of the accelerators the table is read against, in GB (datasheets).
CAPACITIES_GB = {"H100 80GB": 80, "H200 141GB": 141}
# Headroom for what XLA's analysis does not see (runtime, cuDNN workspaces, fragmentation); JAX
# itself takes 75% of a GPU unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise.
USABLE_FRACTION = 0.9


def memory(compiled) -> dict | None:
    """Per-device bytes of a compiled program (see the module docstring), or None."""
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    parts = {
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "alias_bytes": int(mem.alias_size_in_bytes),
        "temp_bytes": int(mem.temp_size_in_bytes),
    }
    parts["peak_bytes"] = (
        parts["argument_bytes"] + parts["output_bytes"] - parts["alias_bytes"] + parts["temp_bytes"]
    )
    return parts


def xla_flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def _nbytes(leaf, per_device: bool = False) -> int:
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return 0
    shape = leaf.sharding.shard_shape(leaf.shape) if per_device else leaf.shape
    return math.prod(shape) * np.dtype(leaf.dtype).itemsize


def saved_activation_bytes(config, setup, spec: dict) -> int:
    """Bytes the backward pass keeps from the forward pass: the residuals of `jax.vjp` of the
    model's loss (the parameters' bfloat16 copies included), from shapes alone. Any backend
    stores this much for a step unless it recomputes; temporaries come on top."""
    diffusion = steps.diffusion_from_config(config)
    keys = jax.random.split(jax.random.key(0), 3)

    def residuals(params, batch):
        def loss(p):
            model = state_lib.model_from(setup, p)
            cond = steps.make_cond(config, batch, keys[1])
            return model.loss(batch["video"], keys[0], diffusion, cond, keys[2])[0]

        return jax.vjp(loss, params)[1]

    tree = jax.eval_shape(residuals, setup.abstract_state.params, spec)
    return sum(_nbytes(leaf) for leaf in jax.tree.leaves(tree))


def analyse_train(config, setup) -> dict:
    n, r, c = config.data.num_frames, config.data.resolution, config.data.channels
    b = config.batch_size
    spec = {
        "video": jax.ShapeDtypeStruct((b, n, r, r, c), np.float32),
        "label": jax.ShapeDtypeStruct((b,), np.int32),
    }
    if config.data.cond == "text":
        spec["text_emb"] = jax.ShapeDtypeStruct((b, 1, config.model.text_dim), np.float32)
    step_fn = functools.partial(steps.train_step, setup=setup, config=config)
    flops = flops_lib.model_flops(step_fn, setup.abstract_state, spec)
    # The analytic estimate: state and gradients on their devices, activations over the batch's.
    state = sum(_nbytes(leaf, per_device=True) for leaf in jax.tree.leaves(setup.abstract_state))
    grads = sum(_nbytes(x, per_device=True) for x in jax.tree.leaves(setup.abstract_state.params))
    activations = saved_activation_bytes(config, setup, spec)
    t0 = time.perf_counter()
    compiled = steps.compile_train_step(setup, config, spec)
    return {
        "model_flops": flops,
        "xla_flops_per_device": xla_flops(compiled),
        "compile_s": time.perf_counter() - t0,
        "memory": memory(compiled),
        "analytic": {
            "state_bytes_per_device": state,
            "grad_bytes_per_device": grads,
            "saved_activation_bytes": activations,
            "estimate_bytes_per_device": state + grads + activations // setup.mesh.size,
        },
    }


def analyse_sampling_step(config, setup, batch: int) -> dict:
    """One DDIM step (one evaluation of the network(s)) on `batch` videos: `sampling.num_steps`
    is 1 here; the memory of the real loop is the same, its FLOPs that many times these."""
    sampler = steps.make_sampler(config, setup, batch)
    args = measure.abstract_sampler_args(config, setup, batch)
    fn = functools.partial(
        steps.sample_videos, setup=setup, config=config, num_videos=batch, num_clips=1
    )
    flops = flops_lib.model_flops(fn, *args)
    t0 = time.perf_counter()
    compiled = sampler.lower(*args).compile()
    return {
        "model_flops": flops,
        "xla_flops_per_device": xla_flops(compiled),
        "compile_s": time.perf_counter() - t0,
        "memory": memory(compiled),
    }


def analyse(config, batch: int, train: bool = True, sample: bool = True) -> dict:
    """Model FLOPs and per-device memory of `config`'s train step and sampling step at `batch`
    (global), compiled for the devices of this process, nothing run."""
    config = config.copy_and_resolve_references()
    config.batch_size = batch
    config.sampling.num_steps = 1
    config.model.conv_impl = "native"
    config, setup = run_setup.setup_run(config, None, with_data=False)
    result = {
        "batch": batch,
        "num_devices": setup.mesh.size,
        "mesh": {k: int(v) for k, v in setup.mesh.shape.items()},
        "model_kind": config.model.kind,
        "params": {k: int(v) for k, v in run_setup.param_counts(setup).items()},
        "video_shape": [config.data.num_frames, config.data.resolution, config.data.resolution],
        "device": f"{jax.devices()[0].platform} x{jax.device_count()}",
    }
    if train:
        result["train"] = analyse_train(config, setup)
    if sample:
        result["sample_step"] = analyse_sampling_step(config, setup, batch)
    return result


def analyse_batches(config, batches: list[int], progress=isolate.log) -> list[dict]:
    rows = []
    for batch in batches:
        t0 = time.perf_counter()
        rows.append(analyse(config, batch))
        progress(f"analysed batch {batch} in {time.perf_counter() - t0:.0f} s")
    return rows


# ------------------------------------------------------------------------------ the fit table


def _fit_case(spec: str, count: int, batches: list[int], out: str, timeout_s: float) -> dict:
    """`analyse` of `spec` on `count` fake CPU devices, the mesh all `fsdp`, in a subprocess
    (the device count is fixed when JAX starts); a result already in `out` is reused."""
    name = f"{os.path.basename(spec.split(':')[0])[:-3]}{spec.partition(':')[2]}_d{count}"
    json_path = os.path.join(out, f"{name}.json")
    collect = isolate.json_file(json_path)
    if collect(""):
        isolate.log(f"[{name}] reusing {json_path}")
        return {"name": name, "status": isolate.OK, "error": None, "result": collect("")}
    argv = [
        sys.executable,
        "-m",
        "vfjax.bench",
        "analyse",
        f"--config={spec}",
        f"--batches={','.join(map(str, batches))}",
        f"--json={json_path}",
        f"--config.mesh.fsdp={count}",
        "--config.mesh.data=1",
    ]
    # XLA:CPU's LLVM optimisation level changes neither buffer assignment (the memory figures)
    # nor the HLO cost analysis, and at 0 compiles these programs 1.4-3x faster.
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(count), XLA_FLAGS=flags)
    log_path = os.path.join(out, f"{name}.log")
    return isolate.run_case(
        name, argv, timeout_s=timeout_s, log_path=log_path, env=env, collect=collect
    )


def fit(
    configs: list[str], batches: list[int], device_counts: list[int], out: str, timeout_s: float
) -> list[dict]:
    """`analyse` of every config and batch on each device count, written to OUT/fit.json and
    OUT/fit.md (a run cut short resumes: results already in OUT are reused)."""
    fileio.path(out).mkdir(parents=True, exist_ok=True)
    results = []
    for spec in configs:
        for count in device_counts:
            case = _fit_case(spec, count, batches, out, timeout_s)
            rows = case.pop("result") or []
            if not rows:
                results.append({"config": spec, "num_devices": count, **case})
            results += [{"config": spec, **row, **case} for row in rows]
    fileio.write_text(os.path.join(out, "fit.json"), json.dumps(results, indent=2))
    fileio.write_text(os.path.join(out, "fit.md"), fit_table(results))
    return results


def fits(peak_bytes: int | None) -> str:
    """The accelerators of `CAPACITIES_GB` whose usable memory holds `peak_bytes`."""
    if peak_bytes is None:
        return "?"
    names = [n for n, gb in CAPACITIES_GB.items() if peak_bytes <= USABLE_FRACTION * gb * GB]
    return ", ".join(names) or "neither"


def largest_batch(row: dict, capacity_gb: float) -> int:
    """The largest global batch (a multiple of the device count) whose analytic train-step
    memory per device fits `capacity_gb` (activations grow linearly with the batch)."""
    a, n = row["train"]["analytic"], row["num_devices"]
    fixed = a["state_bytes_per_device"] + a["grad_bytes_per_device"]
    per_video = a["saved_activation_bytes"] / row["batch"] / n
    room = USABLE_FRACTION * capacity_gb * GB - fixed
    return max(int(room / per_video) // n * n, 0)


def fit_table(results: list[dict]) -> str:
    """The fit results as a markdown table (GB = 1e9 bytes, per device)."""

    def tf(part, key="model_flops"):
        return f"{part[key] / 1e12:.1f}" if part and part.get(key) is not None else "?"

    def gb(value):
        return f"{value / GB:.1f}" if value is not None else "?"

    caps = " / ".join(f"{gb} GB" for gb in CAPACITIES_GB.values())
    lines = [
        "| config | devices | batch | train TFLOP: model / XLA per device | sampling step TFLOP: "
        "model / XLA per device | train GB: compiled / analytic | sampling GB: compiled | train "
        f"fits ({USABLE_FRACTION:.0%} usable, compiled) | largest batch in {caps} (analytic) "
        "| compile s: train + sampling |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["status"] != "ok":
            lines.append(
                f"| {r['config']} | {r['num_devices']} | | {r['status']}: {r['error']} "
                "| | | | | | |"
            )
            continue
        t, s = r["train"], r["sample_step"]
        peak = t["memory"]["peak_bytes"] if t["memory"] else None
        analytic = t["analytic"]["estimate_bytes_per_device"]
        sample = s["memory"]["peak_bytes"] if s["memory"] else None
        largest = " / ".join(str(largest_batch(r, c)) for c in CAPACITIES_GB.values())
        lines.append(
            f"| {r['config']} | {r['num_devices']} | {r['batch']} | {tf(t)} / "
            f"{tf(t, 'xla_flops_per_device')} | {tf(s)} / {tf(s, 'xla_flops_per_device')} | "
            f"{gb(peak)} / {gb(analytic)} | {gb(sample)} | {fits(peak)} | {largest} | "
            f"{t['compile_s']:.0f} + {s['compile_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"
