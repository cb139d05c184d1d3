"""vfjax's benchmark command line.

    python -m vfjax.bench --config=configs/ucf101_64.py [--steps=20] [--json=OUT]
    python -m vfjax.bench suite --out=DIR [--tiny] [--cases=train_vf,sample_vf]
    python -m vfjax.bench analyse --config=configs/ucf101_128.py --batches=16,64 [--json=OUT]
    python -m vfjax.bench fit --out=DIR [--configs=...] [--batches=16,64] [--devices=1,8]
    python -m vfjax.bench efficiency [--tiny] [--json=OUT]
    python -m vfjax.bench tpu --config=configs/ucf101_64.py --topology=v5e:4x4 [--slices=2]
        [--batches=64,128] [--remat=off|on|both] [--sample=false] [--json=OUT]
    python -m vfjax.bench tpu --out=DIR --configs=configs/ucf101_64.py,configs/sky_128.py \
        --topology=v5e:2x2,v5p:2x2x1 [--batches=...] [--case_timeout_s=S]
    python -m vfjax.bench env [--json=OUT]

Without a command: run and time one config's train step and sampler (the JSON carries at least
`step_time_s`, `videos_per_s`, `model_flops_per_step`, `achieved_tflops`, `peak_memory_bytes`,
`device`). `suite`: every case of the GPU benchmark, each in its own process (`vfjax.bench.suite`).
`analyse`/`fit`: FLOPs and per-device memory from compiled programs, nothing run
(`vfjax.bench.compiled`). `tpu`: the same compiled for a TPU topology on this host, with XLA's
TPU cost model and the chip's roofline (`vfjax.bench.tpu`; needs libtpu, no TPU).
`efficiency`: the VideoFusion / VDM efficiency pair (`vfjax.bench.efficiency`). `env`: device,
library versions, XLA settings.
"""

import json

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vfjax import cli, fileio
from vfjax.bench import suite

COMMANDS = ("run", "suite", "analyse", "fit", "efficiency", "env", "tpu")

config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_integer("steps", 10, "Timed train steps (after warm-up).")
flags.DEFINE_integer("warmup", 2, "Untimed train steps.")
flags.DEFINE_bool("train", True, "Benchmark the train step.")
flags.DEFINE_bool(
    "sample", True, "Benchmark the sampler (sampling.num_steps DDIM steps); tpu: compile one step."
)
flags.DEFINE_integer("sample_batch", 0, "Videos per sampling call (0: sampling.batch_size).")
flags.DEFINE_string("json", "", "Write the result as JSON to this path.")
flags.DEFINE_string(
    "out", "", "suite, fit, tpu: the directory of the report, logs and case results."
)
flags.DEFINE_bool("tiny", False, "suite, efficiency: every case at a toy size (CPU, minutes).")
flags.DEFINE_list("cases", [], "suite: run only these cases (names or name prefixes).")
flags.DEFINE_float("budget_s", 0, "suite: cases starting after this many seconds are skipped.")
flags.DEFINE_float(
    "case_timeout_s", 0, "suite, fit, tpu --out: each case's limit (0: the case's own)."
)
flags.DEFINE_string("peer_dir", suite.PEER_DIR, "suite: the peer's scripts (torch, diffusers).")
flags.DEFINE_string("compilation_cache", "", "suite: JAX's persistent compilation cache dir.")
flags.DEFINE_list("batches", ["16", "64"], "analyse, fit, tpu: global batch sizes.")
flags.DEFINE_list(
    "configs", ["configs/ucf101_64.py", "configs/ucf101_128.py"], "fit, tpu --out: the configs."
)
flags.DEFINE_list("devices", ["1", "8"], "fit: device counts (fake CPU devices, mesh on fsdp).")
flags.DEFINE_string(
    "topology", "", "tpu: the TPU slice, GENERATION:AxB[xC], e.g. v5e:4x4 (with --out: a list)."
)
flags.DEFINE_integer("slices", 1, "tpu: slices of that topology (data spans them, over DCN).")
flags.DEFINE_enum("remat", "off", ["off", "on", "both"], "tpu: rematerialised train step.")
flags.DEFINE_bool(
    "compile_missing", True, "tpu --out: compile the cases not in DIR (false: only the table)."
)
flags.DEFINE_string("hlo_dir", "", "tpu: write each compiled train step's HLO text (gzipped) here.")
flags.DEFINE_string(
    "reuse_dir", "", "tpu: a train step whose program a case JSON here holds is not compiled again."
)
FLAGS = flags.FLAGS


def _ints(values: list[str], flag: str) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--{flag} takes integers, got {','.join(values)!r}.") from None


def _need_config(command: str):
    if FLAGS.config is None:
        raise ValueError(f"`{command}` needs --config=configs/NAME.py[:VARIANTS].")
    return FLAGS.config


def _need_out(command: str) -> str:
    if not FLAGS.out:
        raise ValueError(f"`{command}` needs --out=DIR (the report goes there).")
    return FLAGS.out


def _write_json(result) -> None:
    if FLAGS.json:
        text = json.dumps(result, indent=2, default=lambda x: np.asarray(x).tolist())
        fileio.write_text(FLAGS.json, text)


def run_command(command: str):
    """Runs `command`; returns what it prints and what its --json holds."""
    if command == "suite":
        from vfjax.bench import report as report_lib

        report = suite.run_suite(
            _need_out(command),
            tiny=FLAGS.tiny,
            only=FLAGS.cases,
            budget_s=FLAGS.budget_s,
            timeout_s=FLAGS.case_timeout_s,
            peer_dir=FLAGS.peer_dir,
            compilation_cache=FLAGS.compilation_cache,
        )
        return report_lib.markdown(report), report
    if command == "fit":
        from vfjax.bench import compiled

        rows = compiled.fit(
            FLAGS.configs,
            _ints(FLAGS.batches, "batches"),
            _ints(FLAGS.devices, "devices"),
            _need_out(command),
            FLAGS.case_timeout_s or 3600,
        )
        return compiled.fit_table(rows), rows
    if command == "efficiency":
        from vfjax.bench import efficiency

        result = efficiency.run(tiny=FLAGS.tiny)
        return efficiency.markdown(result), result

    if command == "tpu":
        import os

        # The backend stays the CPU: the topology's devices are compiled for, never run on.
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        from vfjax.bench import tpu

        if not FLAGS.topology:
            raise ValueError("`tpu` needs --topology=GENERATION:AxB[xC], e.g. v5e:4x4.")
        if FLAGS.out:  # The table: every config on every topology, one process a batch.
            results = tpu.run_table(
                FLAGS.configs,
                FLAGS.topology.split(","),
                _ints(FLAGS.batches, "batches"),
                FLAGS.out,
                slices=FLAGS.slices,
                remat=FLAGS.remat,
                sample=FLAGS.sample,
                timeout_s=FLAGS.case_timeout_s or 4 * 3600,
                compile_missing=FLAGS.compile_missing,
            )
            return tpu.table(results), results
        config = _need_config(command)
        result = tpu.analyse(
            config,
            FLAGS.topology,
            _ints(FLAGS.batches, "batches"),
            FLAGS.slices,
            FLAGS.remat,
            sample=FLAGS.sample,
            hlo_dir=FLAGS.hlo_dir or None,
            reuse_dir=FLAGS.reuse_dir or None,
            own_json=FLAGS.json or None,
        )
        result["config"] = config_flags.get_config_filename(FLAGS["config"])
        return tpu.table([result]), result

    # The commands below use this process's devices (split as the run would: `cpu_devices`).
    from vfjax import distributed

    if command == "run" and FLAGS.config is not None:
        distributed.split_cpu(FLAGS.config.get("cpu_devices", 0))
    distributed.initialize()
    if command == "env":
        from vfjax.bench import measure

        result = measure.environment()
        return json.dumps(result), result
    if command == "analyse":
        from vfjax.bench import compiled

        batches = _ints(FLAGS.batches, "batches")
        rows = compiled.analyse_batches(_need_config(command), batches)
        return compiled.fit_table([{"config": "", "status": "ok", **r} for r in rows]), rows
    from vfjax.bench import measure

    result = measure.run(
        _need_config("python -m vfjax.bench"),
        FLAGS.steps,
        FLAGS.warmup,
        FLAGS.train,
        FLAGS.sample,
        FLAGS.sample_batch,
    )
    return measure.report(result), result


def main(argv) -> None:
    if len(argv) > 2 or (len(argv) == 2 and argv[1] not in COMMANDS):
        raise app.UsageError(
            f"Unknown command {' '.join(argv[1:])!r}; the commands are {', '.join(COMMANDS)}."
        )
    command = argv[1] if len(argv) == 2 else "run"
    cli.quiet_libraries()
    text, result = cli.run_guarded(run_command, command)
    if command in ("run", "env", "analyse"):  # These use JAX here, maybe on several processes.
        from vfjax import distributed

        if not distributed.is_main():
            return
    # `suite` and `fit` leave the devices to their cases: JAX's backend is not started here.
    print(text)
    _write_json(result)


if __name__ == "__main__":
    app.run(main)
