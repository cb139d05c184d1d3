"""vfjax's command line.

    python -m vfjax.main --config=configs/default.py --workdir=runs/default [--mode=train]

Modes: `train` (default; rerunning with the same workdir resumes), `sample` (videos from the
latest checkpoint's EMA parameters, long videos included), `evaluate` (FVD/KVD/IS under a named
protocol), `prepare` (build a real data set from `data.manual_dir` into `data.data_dir`). Any
config field can be overridden: `--config.batch_size=32 --config.diffusion.lam=0.25`.
"""

from absl import app, flags
from ml_collections import config_flags

from vfjax import cli

config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory of the run (checkpoints, logs, samples).")
flags.DEFINE_enum("mode", "train", ["train", "sample", "evaluate", "prepare"], "What to do.")
FLAGS = flags.FLAGS


def run(config, workdir: str | None, mode: str) -> dict:
    """Runs one mode; returns its summary (metrics, paths)."""
    from vfjax import distributed

    distributed.initialize()
    if mode == "prepare":
        from vfjax import data

        data.validate(config.data)
        stats = data.prepare(config.data)
        print(data.format_stats(stats))
        return stats
    if not workdir:
        raise ValueError(f"--workdir is required for --mode={mode}.")
    if mode == "train":
        from vfjax import train

        return train.train(config, workdir)
    if mode == "sample":
        from vfjax import sample

        return sample.sample(config, workdir)
    from vfjax.evaluation import evaluate

    return evaluate.evaluate(config, workdir)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    cli.quiet_libraries()
    cli.run_guarded(run, FLAGS.config, FLAGS.workdir, FLAGS.mode)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
