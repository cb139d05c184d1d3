"""vfjax's command line.

    python -m vfjax.main --config=configs/default.py --workdir=runs/default [--mode=train]

Modes: `train` (default; rerunning with the same workdir resumes), `sample` (videos from the
latest checkpoint's EMA parameters, long videos included), `evaluate` (FVD/KVD/IS under a named
protocol), `prepare` (build a real data set from `data.manual_dir` into `data.data_dir`). Any
config field can be overridden, `--config.batch_size=32 --config.diffusion.lam=0.25`;
`--print_config` lists every field with its value.

Mistakes in the command (an unknown field or variant, a bad value) are refused in one line
before anything heavy is imported.
"""

import difflib
import sys

from absl import app, flags
from ml_collections import config_flags

from vfjax import cli

config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file, PATH[:VARIANTS]; any field of it can be set with "
    "--config.FIELD=VALUE (--print_config lists them).",
    lock_config=True,
)
flags.DEFINE_string("workdir", None, "Directory of the run (checkpoints, logs, samples).")
flags.DEFINE_enum("mode", "train", ["train", "sample", "evaluate", "prepare"], "What to do.")
flags.DEFINE_bool("print_config", False, "Print every config field and its value, then stop.")
FLAGS = flags.FLAGS


def _check_base_checkpoint(config, workdir: str) -> None:
    """A missing `init.base_checkpoint` in one line naming the command that converts it, before
    any long work (a run that resumes from its own checkpoints does not read it)."""
    from vfjax import fileio

    folder = config.init.base_checkpoint
    if not folder or fileio.join(workdir, "checkpoints").exists() or fileio.path(folder).exists():
        return
    how = f"; make it with: {config.init.base_conversion}" if config.init.base_conversion else ""
    raise FileNotFoundError(f"init.base_checkpoint={folder!r} does not exist{how}")


def run(config, workdir: str | None, mode: str) -> dict:
    """Runs one mode; returns its summary (metrics, paths)."""
    from vfjax import config as config_lib
    from vfjax import distributed

    if mode != "prepare":
        if not workdir:
            raise ValueError(f"--workdir is required for --mode={mode}.")
        config_lib.validate(config, workdir)  # Cheap: before the modes' heavy imports.
    if mode == "train":
        _check_base_checkpoint(config, workdir)
    distributed.split_cpu(config.get("cpu_devices", 0))
    distributed.initialize()
    if mode == "prepare":
        from vfjax import data

        data.validate(config.data)
        stats = data.prepare(config.data)
        print(data.format_stats(stats))
        return stats
    if mode == "train":
        from vfjax import train

        return train.train(config, workdir)
    if mode == "sample":
        from vfjax import sample

        return sample.sample(config, workdir)
    from vfjax.evaluation import evaluate

    return evaluate.evaluate(config, workdir)


def _fail(message: str) -> None:
    print(f"vfjax: error: {message}", file=sys.stderr)
    sys.exit(2)


def _config_arg(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _check_fields(config, argv: list[str]) -> None:
    """Refuses an override of a field the config does not have, naming the closest ones."""
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        dotted = arg[len("--config.") :].split("=", 1)[0]
        node, walked = config, []
        for name in dotted.split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if name not in keys:
                where = ".".join(walked) or "the config"
                close = difflib.get_close_matches(name, keys, n=3)
                hint = f"; did you mean {', '.join('.'.join([*walked, c]) for c in close)}?"
                _fail(
                    f"no field {dotted!r} in {where}{hint if close else ''} (--print_config "
                    "lists the fields)"
                )
            node, walked = node[name], [*walked, name]


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with the config file and its overrides checked first: a mistake is
    one line, not a traceback through ml_collections."""
    from vfjax import config as config_lib

    spec = _config_arg(argv)
    if spec:
        path, _, variants = spec.partition(":")
        try:
            config = config_lib.load_config(path, variants or None)
        except (ValueError, OSError) as e:
            _fail(f"--config={spec}: {cli.one_line(e)}")
        _check_fields(config, argv)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(cli.one_line(e))


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.print_config:
        print(FLAGS.config)
        return
    cli.quiet_libraries()
    cli.run_guarded(run, FLAGS.config, FLAGS.workdir, FLAGS.mode)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=parse_flags)
