"""TPU programs compiled on any host, no TPU needed: a config's train step and sampler for a named
TPU topology, with the mesh and shardings the run would use there.

    python -m vfjax.bench tpu --config=configs/ucf101_64.py --topology=v5e:4x4 --batches=64,128
    python -m vfjax.bench tpu --config=configs/ucf101_64.py --topology=v5p:2x2x1 --slices=2
    python -m vfjax.bench tpu --config=configs/ucf101_64.py --topology=v5e:2x2 --remat=both

With `libtpu` installed (`pip install "jax[tpu]==<jax's version>"`), JAX describes the devices of
any TPU slice (`jax.experimental.topologies`) on a CPU-only host and XLA compiles for them
ahead of time, as maxtext's `train_compile.py` does before any TPU is reserved. Nothing runs:
the figures are what the TPU compiler says (per device: `memory_analysis()`, and XLA's TPU cost
model through `cost_analysis()`: FLOPs and bytes accessed) and what follows from the chips'
datasheets (`CHIPS`): the step-time lower bound of the roofline (the larger of the FLOPs at the
chip's peak and the bytes at its memory bandwidth), the MFU ceiling it implies, and the chip-hours
of the config's `total_steps`. The largest per-chip batch that fits comes from two compiles
(device memory is a fixed part plus a part per video), with and without rematerialisation
(`model.*.remat`).

The backend stays the CPU (`JAX_PLATFORMS=cpu`): the topology's devices are used for compiling
only, so nothing else in the process (or in a test suite around it) runs on or waits for a TPU.
"""

import dataclasses
import glob
import gzip
import hashlib
import importlib.metadata
import json
import math
import os
import sys
import time

import jax
import numpy as np

from vfjax import fileio, run_setup, steps
from vfjax import flops as flops_lib
from vfjax.bench import compiled as compiled_lib
from vfjax.bench import hlo, isolate, measure

GB = 1e9


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU chip's datasheet figures (Google Cloud TPU documentation, "System architecture":
    dense bf16 peak, HBM capacity and bandwidth)."""

    name: str
    peak_flops: float  # bf16, per chip
    hbm_bytes: float
    hbm_bandwidth: float  # bytes/s


CHIPS = {
    "v4": Chip("TPU v4", 275e12, 32 * 2**30, 1.2e12),
    "v5e": Chip("TPU v5e", 197e12, 16 * 2**30, 819e9),
    "v5p": Chip("TPU v5p", 459e12, 95 * 2**30, 2.765e12),
    "v6e": Chip("TPU v6e (Trillium)", 918e12, 32 * 2**30, 1.64e12),
}
# Headroom for what the compiled program's memory analysis does not hold (the runtime, input
# buffers in flight, fragmentation).
USABLE_FRACTION = 0.9


def chip_of(topology: str) -> Chip:
    """The chip of a topology name `GEN:AxB[xC]` (e.g. `v5e:4x4`, `v5p:2x2x1`)."""
    generation = topology.split(":")[0]
    if generation not in CHIPS or ":" not in topology:
        raise ValueError(
            f"Unknown TPU topology {topology!r}; name one as GENERATION:AxB[xC] with the "
            f"generation one of {sorted(CHIPS)} (e.g. v5e:4x4, v5p:2x2x1)."
        )
    return CHIPS[generation]


def topology_devices(topology: str, slices: int = 1) -> list:
    """The devices of `slices` slices of `topology`, for compiling (no TPU needed)."""
    chip_of(topology)
    # libtpu takes a machine-wide lock file when it loads, as if it were to run on the chips;
    # compiling needs no chips, and without this a second process that compiles (a test worker,
    # a sweep's other job) fails while the first one lives.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    # A v4 chip's two TensorCores run as one device ("megacore"), as a v4 runtime gives them
    # and as jax's meshes require; libtpu's default description lists each core as a device.
    chip_config = {"chip_config_name": "megacore"} if topology.startswith("v4:") else {}
    try:
        desc = topologies.get_topology_desc(
            platform="tpu", topology_name=topology, num_slices=slices, **chip_config
        )
    except Exception as e:  # libtpu missing, or a topology it does not know: one line.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"Cannot describe TPU topology {topology!r} x{slices}: {first} (is libtpu "
            "installed? pip install 'jax[tpu]' at this jax version)"
        ) from e
    return list(desc.devices)


def chips_in(devices) -> int:
    """Chips among the devices (a description that lists each of a v4 chip's two cores as a
    device has twice as many devices as chips)."""
    coords = {(getattr(d, "slice_index", 0), *tuple(d.coords)[:3]) for d in devices}
    return len(coords)


def spec_of(config, batch: int) -> dict:
    n, r, c = config.data.num_frames, config.data.resolution, config.data.channels
    spec = {
        "video": jax.ShapeDtypeStruct((batch, n, r, r, c), np.uint8),
        "label": jax.ShapeDtypeStruct((batch,), np.int32),
    }
    if config.data.cond == "text":
        spec["text_emb"] = jax.ShapeDtypeStruct((batch, 1, config.model.text_dim), np.float32)
    return spec


def _traffic(text: str) -> dict:
    """Shares of the bytes of a compiled program (its HLO `text`), as laid out in the TPU's tiles,
    by kind of operation and by vfjax source, and the share that is tile padding (`bench.hlo`)."""
    ops = hlo.operations(text)
    laid_out = sum(op["bytes"] for op in ops) or 1
    return {
        "bytes_by_kind": dict(hlo.bytes_by(ops, "kind")),
        "bytes_by_source": dict(hlo.bytes_by(ops, "source")),
        # The share of the bytes that is tile padding, and where it is.
        "tile_padding_share": 1 - sum(op["logical_bytes"] for op in ops) / laid_out,
        "tile_padding_by_source": dict(hlo.bytes_by(ops, "source", top=6, padding=True)),
    }


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else (cost or {})
    out = {
        "xla_flops_per_device": float(cost.get("flops", math.nan)),
        "bytes_accessed_per_device": float(cost.get("bytes accessed", math.nan)),
    }
    # XLA's own estimate of the best possible time; negative where its model does not cover an
    # operation of the program (then only the roofline below is given).
    optimal = cost.get("optimal_seconds")
    out["xla_optimal_s"] = float(optimal) if optimal is not None and optimal > 0 else None
    return out


def _setup(config, devices, batch: int, remat: bool):
    config = config.copy_and_resolve_references()
    config.batch_size = batch
    config.model.conv_impl = "native"
    config.model.base.remat = config.model.residual.remat = remat
    config.sampling.num_steps = 1  # One evaluation per call: the loop's body.
    return run_setup.setup_run(config, None, with_data=False, devices=devices)


def program_id(lowered, topology: str, slices: int) -> str:
    """What names a TPU program before it is compiled: the lowered module's text without source
    locations, the slice, and the compiler (jax's and libtpu's versions, libtpu's flags). Two
    configs with one id compile to one program: `sky_128` and `taichi_128` are `ucf101_128`'s
    (their data sets differ, not their networks or batches)."""
    try:
        libtpu = importlib.metadata.version("libtpu")
    except importlib.metadata.PackageNotFoundError:
        libtpu = "none"
    digest = hashlib.sha256()
    for part in (
        lowered.as_text(debug_info=False),
        f"{topology} x{slices}",
        os.environ.get("LIBTPU_INIT_ARGS", ""),
        jax.__version__,
        libtpu,
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def lower_train(config, devices, batch: int, remat: bool = False):
    """`(config, setup, lowered)`: the train step of `compile_train`, lowered only (about 20 s
    for a paper config, where its compile takes 25 to 50 minutes)."""
    config, setup = _setup(config, devices, batch, remat)
    return config, setup, steps.lower_train_step(setup, config, spec_of(config, batch))


def compile_train(
    config,
    devices,
    batch: int,
    remat: bool = False,
    hlo_path: str | None = None,
    where: tuple[str, int] | None = None,
    same_as=None,
) -> dict:
    """The train step of `config` at global `batch`, compiled for `devices`: per-device memory,
    XLA's TPU cost analysis, model FLOPs, compile seconds, where the bytes go; with `hlo_path`,
    the compiled program's HLO text written there, gzipped (tens of MB of text for a paper
    config: what `bench.hlo` reads, kept for a closer look). With `where` (the topology and
    slice count), the result names its program (`program_id`); with `same_as` too (a function
    of a program id and batch giving an earlier result of that program, or None), a program
    compiled before is not compiled again: its result comes back with `same_program_as`."""
    config, setup, lowered = lower_train(config, devices, batch, remat)
    program = program_id(lowered, *where) if where else None
    earlier = same_as(program, batch) if same_as and program else None
    if earlier:
        return {**earlier, "program": program}
    t0 = time.perf_counter()
    compiled = lowered.compile()
    seconds = time.perf_counter() - t0
    text = compiled.as_text()  # Tens of MB for a paper config: read once.
    if hlo_path:
        fileio.write_bytes(hlo_path, gzip.compress(text.encode()))
    step_fn = _step_fn(setup, config)
    return {
        "batch": batch,
        "remat": remat,
        "compile_s": round(seconds, 1),
        **({"program": program} if program else {}),
        "memory": compiled_lib.memory(compiled),
        "model_flops": flops_lib.model_flops(step_fn, setup.abstract_state, spec_of(config, batch)),
        **_cost(compiled),
        **_traffic(text),
    }


def earlier_programs(
    folder: str,
    topology: str,
    slices: int,
    remat: bool,
    own_json: str | None = None,
    step: str = "train",
):
    """The `same_as` of `compile_train` (of `compile_sampler` with `step='sample_step'`) for
    the case JSONs in `folder` (a table's OUT): the result of a program id and batch from a
    JSON of the same topology, slices, remat and libtpu flags, with `same_program_as` naming
    the JSON that compiled it (`own_json`, the case's own earlier result, comes back as it is).
    Results written before they carried ids match nothing: which program they hold is not
    known."""

    def same_as(program: str, batch: int) -> dict | None:
        for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
            result = isolate.json_file(path)("")
            if not isinstance(result, dict) or "cases" not in result:
                continue
            if (result.get("topology"), result.get("slices")) != (topology, slices):
                continue
            if result.get("libtpu_flags", "") != os.environ.get("LIBTPU_INIT_ARGS", ""):
                continue
            for case in result["cases"]:
                found = case.get(step)
                if not found or case["train"]["remat"] != remat:
                    continue
                if (found["batch"], found.get("program")) != (batch, program):
                    continue
                if own_json and os.path.abspath(path) == os.path.abspath(own_json):
                    return dict(found)
                name = os.path.basename(path).removesuffix(".json")
                return {"same_program_as": name, **found}  # Keeps the one that compiled it.
        return None

    return same_as


def _step_fn(setup, config):
    def step(state, batch):
        return steps.train_step(state, batch, setup=setup, config=config)

    return step


def compile_sampler(
    config, devices, batch: int, where: tuple[str, int] | None = None, same_as=None
) -> dict:
    """One sampling step (the sampler's loop body: both networks once) at `batch` videos;
    `where` and `same_as` as for `compile_train`."""
    config, setup = _setup(config, devices, batch, False)
    sampler = steps.make_sampler(config, setup, batch)
    lowered = sampler.lower(*measure.abstract_sampler_args(config, setup, batch))
    program = program_id(lowered, *where) if where else None
    earlier = same_as(program, batch) if same_as and program else None
    if earlier:
        return {**earlier, "program": program}
    t0 = time.perf_counter()
    compiled = lowered.compile()
    return {
        "batch": batch,
        "compile_s": round(time.perf_counter() - t0, 1),
        **({"program": program} if program else {}),
        "memory": compiled_lib.memory(compiled),
        **_cost(compiled),
    }


def roofline(train: dict, chip: Chip, devices: int, chips: int) -> dict:
    """The step-time lower bound (FLOPs at peak, or bytes at the memory bandwidth, per device)
    and the MFU ceiling it implies for the model FLOPs."""
    per_device_peak = chip.peak_flops * chips / devices
    per_device_bandwidth = chip.hbm_bandwidth * chips / devices
    compute = train["xla_flops_per_device"] / per_device_peak
    memory = train["bytes_accessed_per_device"] / per_device_bandwidth
    bound = max(compute, memory)
    if train.get("xla_optimal_s"):
        bound = max(bound, train["xla_optimal_s"])
    return {
        "compute_bound_s": compute,
        "memory_bound_s": memory,
        "step_lower_bound_s": bound,
        "bound_by": "memory" if memory > compute else "compute",
        "mfu_ceiling": train["model_flops"] / (chips * chip.peak_flops * bound),
    }


def largest_batch(small: dict, large: dict, chip: Chip, devices: int, chips: int) -> int | None:
    """The largest global batch (a multiple of the device count) whose per-device memory fits
    `USABLE_FRACTION` of the chip's HBM, from two compiles: memory = fixed + per video x batch.
    None when memory did not grow between the two batches (too small to tell: compile larger)."""
    hbm_per_device = chip.hbm_bytes * chips / devices
    (b0, m0), (b1, m1) = [(r["batch"], r["memory"]["peak_bytes"]) for r in (small, large)]
    if b1 <= b0 or m1 <= m0:
        return None
    per_video = (m1 - m0) / (b1 - b0)
    room = USABLE_FRACTION * hbm_per_device - (m0 - per_video * b0)
    return max(int(room / per_video) // devices * devices, 0)


def analyse(
    config,
    topology: str,
    batches: list[int],
    slices: int = 1,
    remat: str = "off",
    sample: bool = True,
    hlo_dir: str | None = None,
    reuse_dir: str | None = None,
    own_json: str | None = None,
) -> dict:
    """Everything above for one config on `slices` slices of `topology`: per batch the train
    step (and with `remat='both'` or 'on' its rematerialised form) and one sampling step, the
    roofline, the chip-hours of `total_steps`, and the largest batch that fits; with `hlo_dir`,
    each train step's HLO text there (`train_b8.hlo.txt.gz`, `train_b8_remat.hlo.txt.gz`); with
    `reuse_dir`, a train step whose program a case JSON there holds is not compiled again
    (`earlier_programs`; `own_json`: where this result will be written)."""
    chip = chip_of(topology)
    devices = topology_devices(topology, slices)
    chips = chips_in(devices)
    result = {
        "topology": topology,
        "slices": slices,
        "chip": chip.name,
        "devices": len(devices),
        "chips": chips,
        "hbm_gb_per_chip": chip.hbm_bytes / GB,
        "total_steps": int(config.total_steps),
        "config_batch": int(config.batch_size),
        "libtpu_flags": os.environ.get("LIBTPU_INIT_ARGS", ""),
        "cases": [],
    }
    modes = {"off": [False], "on": [True], "both": [False, True]}[remat]
    for use_remat in modes:
        for batch in batches:
            hlo_path = None
            if hlo_dir:
                suffix = "_remat" if use_remat else ""
                hlo_path = os.path.join(hlo_dir, f"train_b{batch}{suffix}.hlo.txt.gz")
            same_as = None
            if reuse_dir:
                same_as = earlier_programs(reuse_dir, topology, slices, use_remat, own_json)
            train = compile_train(
                config, devices, batch, use_remat, hlo_path, (topology, slices), same_as
            )
            row = {"train": train}
            row["train"]["roofline"] = roofline(row["train"], chip, len(devices), chips)
            bound = row["train"]["roofline"]["step_lower_bound_s"]
            row["train"]["chip_hours"] = bound * config.total_steps * chips / 3600
            peak = row["train"]["memory"]["peak_bytes"]
            row["train"]["fits"] = peak <= USABLE_FRACTION * chip.hbm_bytes * chips / len(devices)
            row["train"]["config_run"] = config_run(row["train"], result)
            if sample and not use_remat:
                same_as = None
                if reuse_dir:
                    same_as = earlier_programs(
                        reuse_dir, topology, slices, False, own_json, step="sample_step"
                    )
                row["sample_step"] = compile_sampler(
                    config, devices, batch, (topology, slices), same_as
                )
            result["cases"].append(row)
    return with_largest_batches(result)


def config_run(train: dict, result: dict) -> dict | None:
    """The config's own run (`config_batch` videos a step for `total_steps`) at this case's
    videos a chip, on a data-parallel slice of as many chips as that batch needs: the chips and
    the chip-hours at the case's step-time bound (a data-parallel program's per-chip figures do
    not change with the slice's size, only its gradient all-reduce: PERFORMANCE.md). None
    without `config_batch`."""
    if not result.get("config_batch"):
        return None
    per_chip = train["batch"] / result["chips"]
    chips = math.ceil(result["config_batch"] / per_chip)
    seconds = train["roofline"]["step_lower_bound_s"]
    return {
        "videos_per_chip": per_chip,
        "chips": chips,
        "chip_hours": result["total_steps"] * seconds * chips / 3600,
    }


def with_largest_batches(result: dict) -> dict:
    """`result` with `largest_batch` (and `largest_batch_remat`) from its smallest and largest
    batch of each kind of train step, where it holds two batches of that kind."""
    chip = chip_of(result["topology"])
    for use_remat in (False, True):
        rows = sorted(
            (c["train"] for c in result["cases"] if c["train"]["remat"] == use_remat),
            key=lambda t: t["batch"],
        )
        if len(rows) >= 2:
            fit = largest_batch(rows[0], rows[-1], chip, result["devices"], result["chips"])
            result[f"largest_batch{'_remat' if use_remat else ''}"] = fit
    return result


def table(results: list[dict]) -> str:
    """Markdown: one row per config, topology, batch and remat (GB = 1e9 bytes, per device)."""
    lines = [
        "| config | topology (chips) | batch | remat | train GB per device (HBM) | fits | "
        "model TFLOP | lower bound ms (by) | MFU ceiling | config's run: chips, chip-hours | "
        "sampling-step GB | largest batch (remat) | compile s: train + sampling |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['topology']} | {r['error']} |" + " |" * 10)
            if not r.get("cases"):
                continue
        hbm = r["hbm_gb_per_chip"] * r["chips"] / r["devices"]
        topology = r["topology"] + (f" x{r['slices']}" if r["slices"] > 1 else "")
        largest = f"{r.get('largest_batch') or '?'} ({r.get('largest_batch_remat') or '-'})"
        for case in r["cases"]:
            t, s = case["train"], case.get("sample_step")
            roof = t["roofline"]
            cells = [
                r["config"],
                f"{topology} ({r['chips']})",
                str(t["batch"]),
                "yes" if t["remat"] else "no",
                f"{t['memory']['peak_bytes'] / GB:.2f} ({hbm:.1f})",
                "yes" if t["fits"] else "no",
                f"{t['model_flops'] / 1e12:.2f}",
                f"{roof['step_lower_bound_s'] * 1e3:.1f} ({roof['bound_by']})",
                f"{roof['mfu_ceiling']:.0%}",
                _run_cell(config_run(t, r)),
                f"{s['memory']['peak_bytes'] / GB:.2f}" if s else "-",
                largest,
                _compile_cell(t, s),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _compile_cell(train: dict, sample: dict | None) -> str:
    cell = f"{train['compile_s']:.0f}" + (f" + {sample['compile_s']:.0f}" if sample else "")
    for step, result in (("train", train), ("sampling", sample or {})):
        if result.get("same_program_as"):
            cell += f" ({step}: the program of {result['same_program_as']}, not compiled again)"
    return cell


def _run_cell(run: dict | None) -> str:
    return f"{run['chips']}, {run['chip_hours']:.0f}" if run else "?"


def case_name(
    spec: str,
    topology: str,
    slices: int,
    batch: int | None = None,
    remat: str = "off",
) -> str:
    """The file name of one case: `ucf101_64class_v5e-2x2_b8` (`_x2` for two slices, `_remat-on`
    or `_remat-both` for rematerialised steps)."""
    config = os.path.basename(spec.split(":")[0]).removesuffix(".py") + spec.partition(":")[2]
    name = f"{config}_{topology.replace(':', '-')}" + (f"_x{slices}" if slices > 1 else "")
    name += f"_b{batch}" if batch is not None else ""
    name += f"_remat-{remat}" if remat != "off" else ""
    return name.replace(",", "+").replace("=", "-")


def run_table(
    configs: list[str],
    topologies: list[str],
    batches: list[int],
    out: str,
    *,
    slices: int = 1,
    remat: str = "off",
    sample: bool = True,
    timeout_s: float = 4 * 3600,
    compile_missing: bool = True,
) -> list[dict]:
    """`analyse` of every config on every topology, one process per batch (a TPU compile of a
    paper config holds several GB and takes tens of minutes on a small host), each written to
    OUT/NAME.json as it finishes (its compiled HLO text in OUT/hlo/NAME/); then, per config and
    topology, the batches together (with the largest batch that fits) in OUT/tpu.json and
    OUT/tpu.md. A run cut short resumes: a case whose JSON in OUT holds its program (the same
    `program_id`), or any other case's JSON there that does, is not compiled again. Without
    `compile_missing` nothing is compiled: the table of the cases in OUT, the others marked."""
    for topology in topologies:  # Bad names fail here, before any compile.
        chip_of(topology)
    os.makedirs(out, exist_ok=True)
    results = []
    for spec in configs:
        for topology in topologies:
            parts, errors = [], []
            for batch in batches:
                name = case_name(spec, topology, slices, batch, remat)
                if compile_missing:
                    part, error = _table_case(
                        spec, topology, slices, batch, remat, sample, out, name, timeout_s
                    )
                else:
                    part = isolate.json_file(os.path.join(out, f"{name}.json"))("")
                    error = None if part else "not compiled"
                parts += [part] if part else []
                errors += [f"batch {batch}: {error}"] if error else []
            merged = {"config": spec, "topology": topology, "slices": slices}
            if parts:
                merged = {**parts[0], **merged, "cases": [c for p in parts for c in p["cases"]]}
                merged = with_largest_batches(merged)
            if errors:
                merged["error"] = "; ".join(errors)
            results.append(merged)
    fileio.write_text(os.path.join(out, "tpu.json"), json.dumps(results, indent=2))
    fileio.write_text(os.path.join(out, "tpu.md"), table(results))
    return results


def _table_case(spec, topology, slices, batch, remat, sample, out, name, timeout_s):
    """One batch of one config on one topology in its own process: `(result, error)`."""
    json_path = os.path.join(out, f"{name}.json")
    collect = isolate.json_file(json_path)
    earlier = collect("")
    steps_run = [step for case in (earlier or {}).get("cases", []) for step in case.values()]
    if earlier and not (steps_run and all(step.get("program") for step in steps_run)):
        # Written before results named their program: kept as it is (which program it holds,
        # and so whether the code has changed it since, is not known).
        isolate.log(f"[{name}] reusing {json_path} (compiled before program ids were kept)")
        return earlier, None
    # A JSON with program ids is taken again only where the program is still the one it holds
    # (the case lowers its program, seconds, and `--reuse_dir` finds it); a changed program
    # (the model's code, libtpu, the flags) is compiled again and the JSON replaced.
    argv = [
        sys.executable,
        "-m",
        "vfjax.bench",
        "tpu",
        f"--config={spec}",
        f"--topology={topology}",
        f"--slices={slices}",
        f"--batches={batch}",
        f"--remat={remat}",
        f"--sample={sample}",
        f"--json={json_path}",
        f"--hlo_dir={os.path.join(out, 'hlo', name)}",
        f"--reuse_dir={out}",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    log_path = os.path.join(out, f"{name}.log")
    case = isolate.run_case(
        name, argv, timeout_s=timeout_s, log_path=log_path, env=env, collect=collect
    )
    return case["result"], None if case["result"] else f"{case['status']}: {case['error']}"
