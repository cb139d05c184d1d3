"""Expand a config's `get_sweep()` into runs, each with its own workdir, and run or submit them.

    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation --dry-run
    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation
    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation \
        --launcher=slurm            # one sbatch job per run (launch/gpu_slurm.sh)
    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation --summary

`--config` takes `path[:arg]` like vfjax.main; arguments after `--` go to every run
(`-- --config.total_steps=200`). Runs go one after another locally (`--launcher=local`), as
SLURM jobs, or on TPU pod slices (`--launcher=tpu`, with launch/tpu_pod.sh's environment).
A run whose workdir already finished is run again only to resume; `--summary` prints the final
metrics of every run in a table.
"""

import argparse
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from vfjax import config as vfc  # noqa: E402
from vfjax import experiments, fileio  # noqa: E402


def run_name(point: dict) -> str:
    """The point's `_name`, or a readable, filesystem-safe name from its fields:
    `diffusion.lam=0.25` -> `lam0.25`."""
    if "_name" in point:
        return str(point["_name"])
    parts = []
    for field, value in point.items():
        short = field.split(".")[-1]
        text = ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)
        parts.append(f"{short}{text}".replace("/", "_").replace(" ", ""))
    return "_".join(parts) or "base"


def expand(config_arg: str, workdir: str, extra: list[str]) -> list[dict]:
    """The runs of the sweep: name, workdir, field overrides and vfjax.main arguments."""
    path, _, arg = config_arg.partition(":")
    points = experiments.load_sweep(path, arg or None)
    runs = []
    for point in points:
        name = run_name(point)
        fields = {f: v for f, v in point.items() if f != "_name"}
        run_dir = str(fileio.join(workdir, name))
        args = [f"--config={config_arg}", f"--workdir={run_dir}"]
        args += vfc.override_flags(fields) + list(extra)
        runs.append({"name": name, "workdir": run_dir, "fields": fields, "args": args})
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep points with the same name: {names}")
    # Check every point before starting any: a bad value fails now, not hours in.
    for r in runs:
        c = vfc.load_config(path, arg or None)
        c.update_from_flattened_dict(r["fields"])
        vfc.validate(c)
    return runs


def command(run: dict, launcher: str) -> list[str]:
    main = [sys.executable, "-m", "vfjax.main"]
    if launcher == "local":
        return main + run["args"]
    if launcher == "slurm":
        return ["sbatch", f"--job-name=vfjax-{run['name']}", "launch/gpu_slurm.sh"] + run["args"]
    return ["launch/tpu_pod.sh"] + run["args"]


def summary(runs: list[dict]) -> str:
    """A table of each run's last logged metrics (and FVD when evaluated)."""
    header = ["run", "step", "loss", "loss_key", "loss_residual", "fvd"]
    rows = [header]
    for r in runs:
        row = [r["name"], "-", "-", "-", "-", "-"]
        lines = fileio.read_jsonl(fileio.join(r["workdir"], "metrics.jsonl"))
        if lines:
            last = lines[-1]
            row[1:5] = [str(last["step"])] + [
                f"{last[k]:.4f}" if k in last else "-"
                for k in ("loss", "loss_key", "loss_residual")
            ]
        eval_dir = fileio.join(r["workdir"], "eval")
        results = sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []
        if results:
            row[5] = f"{fileio.read_json(results[-1])['fvd']:.1f}"
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="Sweep config, path[:arg].")
    parser.add_argument("--workdir", required=True, help="Parent of the runs' workdirs.")
    parser.add_argument("--launcher", choices=["local", "slurm", "tpu"], default="local")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands only.")
    parser.add_argument("--summary", action="store_true", help="Print the runs' final metrics.")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    try:
        runs = expand(args.config, args.workdir, extra)
    except (ValueError, FileNotFoundError) as e:
        print(f"sweep: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.summary:
        print(summary(runs))
        return 0
    failed = []
    for i, run in enumerate(runs, 1):
        cmd = command(run, args.launcher)
        print(f"[{i}/{len(runs)}] {run['name']}: {shlex.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            failed.append(run["name"])
    if not args.dry_run and args.launcher == "local":
        print(summary(runs))
    if failed:
        print(f"sweep: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
