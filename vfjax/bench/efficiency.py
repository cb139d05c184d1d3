"""The efficiency pair (`configs/efficiency.py`, VideoFusion, and `:vdm`): what each costs, read
from the compiled programs and measured on this machine's CPU.

    python -m vfjax.bench efficiency [--tiny] [--json=OUT]

For each: the model FLOPs of a train step and of one sampling step (one evaluation of the
networks) at batch `BATCH`, the per-device peak memory of both from the compiled programs
(`vfjax.bench.compiled`, nothing run), and the latency of sampling measured on the CPU at a small
size (`LATENCY`: one video of the config's frames and resolution, a few DDIM steps, float32 as
bfloat16 is emulated on CPUs; the arms timed in turn, medians). Then VideoFusion / VDM ratios
beside the paper's 0.78 (memory) and 0.43 (latency). `--tiny`: the pair's `runlocal` variants
shrunk like the suite's toy cases (`suite.TINY_FIELDS`), the residual generator still half the
VDM's width.
"""

import os
import statistics
import time

import jax

from vfjax import config as config_lib
from vfjax import run_setup, steps
from vfjax.bench import compiled, isolate, measure
from vfjax.bench.report import PAPER_LATENCY_RATIO, PAPER_MEMORY_RATIO
from vfjax.bench.suite import ROOT, TINY_FIELDS

CONFIG = "configs/efficiency.py"
ARMS = (("videofusion", ""), ("vdm", "vdm"))
BATCH = {"full": 16, "tiny": 4}
# Sampling latency on the CPU: (videos, DDIM steps, timed calls of each arm after one warm-up).
# The toy size times the very program it analysed (found in the compilation cache, if any).
LATENCY = {"full": (1, 2, 3), "tiny": (BATCH["tiny"], 1, 2)}


def latency_sampler(config, batch: int, num_steps: int):
    """The real sampler of `config` in float32, compiled for this process's devices and run
    once (warm-up): `(compiled, args, compile_s)`."""
    config = config.copy_and_resolve_references()
    config.batch_size = batch
    config.sampling.num_steps = num_steps
    config.model.dtype = "float32"
    config, setup = run_setup.setup_run(config, None, with_data=False)
    params = measure.sampling_params(setup, config.seed)
    cond = measure.sample_cond(config, batch)
    args = (params, jax.random.key(0), jax.random.key(1), cond, None)
    t0 = time.perf_counter()
    program = steps.make_sampler(config, setup, batch).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(program(*args))
    return program, args, compile_s


def load_arm(spec: str, size: str):
    path, _, words = spec.partition(":")
    config = config_lib.load_config(os.path.join(ROOT, path), words or None)
    if size == "tiny":
        config.update_from_flattened_dict(TINY_FIELDS)
    return config


def costs(spec: str, config, size: str) -> dict:
    """Model FLOPs and per-device memory of the arm's compiled train and sampling steps."""
    t0 = time.perf_counter()
    r = compiled.analyse(config, BATCH[size])
    isolate.log(
        f"[{spec}] train step and sampling step compiled in {time.perf_counter() - t0:.0f} s"
    )
    train, sample = r["train"], r["sample_step"]
    return {
        "config": spec,
        "params": r["params"],
        "batch": r["batch"],
        "train_model_flops": train["model_flops"],
        "sample_step_model_flops": sample["model_flops"],
        "train_peak_bytes_per_device": train["memory"]["peak_bytes"],
        "train_analytic_bytes_per_device": train["analytic"]["estimate_bytes_per_device"],
        "sample_peak_bytes_per_device": sample["memory"]["peak_bytes"],
        "compile_s": train["compile_s"] + sample["compile_s"],
    }


def run(tiny: bool = False) -> dict:
    """Both arms and their ratios (VideoFusion over VDM)."""
    size = "tiny" if tiny else "full"
    batch, num_steps, repeats = LATENCY[size]
    arms, samplers = {}, {}
    for name, words in ARMS:
        words = ",".join(filter(None, [words, "runlocal" if tiny else ""]))
        spec = f"{CONFIG}:{words}" if words else CONFIG
        config = load_arm(spec, size)
        arms[name] = costs(spec, config, size)
        samplers[name] = latency_sampler(config, batch, num_steps)
    # The arms take turns, so that a change in the machine's load reaches both alike.
    times = {name: [] for name in arms}
    for _ in range(repeats):
        for name, (program, args, _) in samplers.items():
            t0 = time.perf_counter()
            jax.block_until_ready(program(*args))
            times[name].append(time.perf_counter() - t0)
    device = measure.device_name(jax.local_devices()[0])
    for name, arm in arms.items():
        latency = statistics.median(times[name])
        arm["latency"] = {
            "batch": batch,
            "num_steps": num_steps,
            "dtype": "float32",
            "device": device,
            "compile_s": samplers[name][2],
            "times_s": times[name],
            "latency_s": latency,
            "latency_per_step_s": latency / num_steps,
        }
    vf, vdm = arms["videofusion"], arms["vdm"]

    def ratio(key):
        return vf[key] / vdm[key]

    return {
        "size": size,
        "arms": arms,
        "ratios": {
            "params": vf["params"]["total"] / vdm["params"]["total"],
            "train_model_flops": ratio("train_model_flops"),
            "sample_step_model_flops": ratio("sample_step_model_flops"),
            "train_peak_memory": ratio("train_peak_bytes_per_device"),
            "train_analytic_memory": ratio("train_analytic_bytes_per_device"),
            "sample_peak_memory": ratio("sample_peak_bytes_per_device"),
            "sampling_latency_cpu": vf["latency"]["latency_s"] / vdm["latency"]["latency_s"],
        },
        "paper": {"memory": PAPER_MEMORY_RATIO, "latency": PAPER_LATENCY_RATIO},
    }


def markdown(result: dict) -> str:
    vf, vdm = result["arms"]["videofusion"], result["arms"]["vdm"]
    lat, b = vf["latency"], vf["batch"]
    rows = (  # (what, value of an arm, ratio key, paper's ratio key)
        ("parameters, M", lambda a: a["params"]["total"] / 1e6, "params", None),
        (
            f"train step TFLOP (model), batch {b}",
            lambda a: a["train_model_flops"] / 1e12,
            "train_model_flops",
            None,
        ),
        (
            f"sampling step TFLOP (model), batch {b}",
            lambda a: a["sample_step_model_flops"] / 1e12,
            "sample_step_model_flops",
            None,
        ),
        (
            "train step GB per device, compiled",
            lambda a: a["train_peak_bytes_per_device"] / 1e9,
            "train_peak_memory",
            "memory",
        ),
        (
            "train step GB per device, analytic",
            lambda a: a["train_analytic_bytes_per_device"] / 1e9,
            "train_analytic_memory",
            "memory",
        ),
        (
            "sampling step GB per device, compiled",
            lambda a: a["sample_peak_bytes_per_device"] / 1e9,
            "sample_peak_memory",
            None,
        ),
        (
            f"CPU sampling latency s, {lat['batch']} video(s), {lat['num_steps']} steps, float32",
            lambda a: a["latency"]["latency_s"],
            "sampling_latency_cpu",
            "latency",
        ),
    )
    lines = [
        f"Efficiency pair ({result['size']}): {vf['config']} vs {vdm['config']}",
        "",
        "| | VideoFusion | VDM | VideoFusion / VDM | paper |",
        "|---|---|---|---|---|",
    ]
    for what, value, ratio, paper in rows:
        paper = f"{result['paper'][paper]:.2f}" if paper else ""
        ratio = result["ratios"][ratio]
        lines.append(f"| {what} | {value(vf):.4g} | {value(vdm):.4g} | {ratio:.3f} | {paper} |")
    return "\n".join(lines) + "\n"
