"""Expand a config's `get_sweep()` into runs, each with its own workdir, and run or submit them.

    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation --dry-run
    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation
    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation \
        --launcher=slurm            # one sbatch job per run (launch/gpu_slurm.sh)
    python launch/sweep.py --config=configs/ablation_lambda.py --workdir=runs/ablation --summary
    python launch/sweep.py --config=configs/study.py --workdir=runs/study \
        --evaluate --results=runs/study/results --jobs=2 --report   # a whole study (study.py)

`--config` takes `path[:arg]` like vfjax.main; arguments after `--` go to every run
(`-- --config.total_steps=200`). Runs go one after another locally (`--launcher=local`; with
`--jobs=N`, N at a time, each pinned to its own cores; `--processes=P`, each as P processes
through launch/local.sh), as SLURM jobs, or on TPU pod slices
(`--launcher=tpu`, with launch/tpu_pod.sh's environment). A run whose workdir already finished
is run again only to resume; `--summary` prints the final metrics of every run in a table.

With `--evaluate` (local) each run, once trained, is evaluated (`--mode=evaluate`, and the
`--mode=sample` steps its point names under `_samples`), and leaves a small JSON of its results
in `--results` (`study.result_record`: config, seed, steps, wall times, every measure); a run
whose result is there is done and skipped, so the sweep resumes where it stopped. `--report`
then writes the study's report from those JSONs (`launch/study.py`).
"""

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import study  # noqa: E402  (launch/study.py, beside this file)

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
        fields = {f: v for f, v in point.items() if not f.startswith("_")}
        # `_workdir_of`: another point's run (evaluated again, e.g. under another seed).
        run_dir = str(fileio.join(workdir, point.get("_workdir_of", name)))
        args = [f"--config={config_arg}", f"--workdir={run_dir}"]
        args += vfc.override_flags(fields) + list(extra)
        runs.append(
            {
                "name": name,
                "workdir": run_dir,
                "fields": fields,
                "args": args,
                "arm": point.get("_arm", name),
                "samples": list(point.get("_samples", [])),
                "train": point.get("_train", True),
            }
        )
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


def _timed(cmd: list[str], run: dict, phase: str, pin: str | None) -> int:
    """Runs `cmd` (pinned to the cores `pin` with taskset when given), adding its wall time to
    the run's `sweep_times.json` (seconds per phase, summed over every launch: a resumed run's
    time is the sum of its parts)."""
    if pin:
        cmd = ["taskset", "-c", pin, *cmd]
    start = time.time()
    log = fileio.path(run["workdir"]).parent / f"{run['name']}.{phase}.log"
    fileio.path(run["workdir"]).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        code = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    times_path = fileio.join(run["workdir"], "sweep_times.json")
    times = fileio.read_json(times_path) if times_path.exists() else {}
    times[phase] = times.get(phase, 0.0) + (time.time() - start)
    if fileio.path(run["workdir"]).exists():
        fileio.write_json(times_path, times)
    return code


def _main_command(processes: int) -> list[str]:
    """vfjax.main as one process, or as `processes` over loopback (launch/local.sh: the pod's
    multi-controller path on this host)."""
    if processes == 1:
        return [sys.executable, "-m", "vfjax.main"]
    local = os.path.join(REPO, "launch", "local.sh")
    return ["env", f"PYTHON={sys.executable}", "bash", local, str(processes), "--"]


def run_and_evaluate(
    run: dict, results: str, config_arg: str, pin: str | None, processes: int = 1
) -> str | None:
    """Trains (or resumes) one run, evaluates it, runs its sampling steps and writes its result
    JSON; returns None when done, else the step that failed."""
    main = _main_command(processes)
    if run["train"] and _timed(main + run["args"], run, "train", pin):
        return "train"
    if not study.has_evaluation(run["workdir"], run["fields"]):
        if _timed(main + run["args"] + ["--mode=evaluate"], run, "evaluate", pin):
            return "evaluate"
    for i, sampling in enumerate(run["samples"]):
        if study.has_sample(run["workdir"], sampling):
            continue
        flags = vfc.override_flags(sampling["fields"])
        if _timed(main + run["args"] + ["--mode=sample", *flags], run, f"sample{i}", pin):
            return f"sample {sampling['name']}"
        study.record_sample(run["workdir"], sampling)
    record = study.result_record(run, config_arg)
    fileio.write_json(fileio.join(results, f"{run['name']}.json"), record)
    return None


def _slots(jobs: int, cores: str) -> list[str | None]:
    """The core set of each of `jobs` parallel slots (`cores`: 'A;B' lists them; empty: split
    this machine's cores evenly, or no pinning for one job)."""
    if cores:
        slots = cores.split(";")
        if len(slots) != jobs:
            raise ValueError(f"--cores names {len(slots)} core sets for --jobs={jobs}.")
        return slots
    if jobs == 1:
        return [None]
    count = os.cpu_count() or jobs
    if count < jobs:
        raise ValueError(f"--jobs={jobs} needs at least {jobs} cores; this machine has {count}.")
    per = count // jobs
    return [f"{i * per}-{(i + 1) * per - 1}" if per > 1 else str(i) for i in range(jobs)]


def evaluate_all(
    runs: list[dict], results: str, config_arg: str, jobs: int, cores: str, processes: int = 1
) -> list:
    """Every run not yet done (no result JSON), `jobs` at a time, each as `processes` processes;
    returns the failures."""
    todo = [r for r in runs if not fileio.path(fileio.join(results, f"{r['name']}.json")).exists()]
    done = len(runs) - len(todo)
    print(f"sweep: {done} of {len(runs)} runs done, {len(todo)} to go", flush=True)
    failed, lock = [], threading.Lock()
    queue = list(todo)

    def worker(pin):
        while True:
            with lock:
                if not queue:
                    return
                run = queue.pop(0)
            print(f"sweep: start {run['name']} (cores {pin or 'all'})", flush=True)
            start = time.time()
            try:
                error = run_and_evaluate(run, results, config_arg, pin, processes)
            except Exception as e:  # One run's fault must not stop the others' worker.
                error = f"its result ({type(e).__name__}: {e})"
            with lock:
                if error:
                    failed.append(run["name"])
                    print(f"sweep: {run['name']} failed at {error}", flush=True)
                else:
                    print(f"sweep: {run['name']} done in {time.time() - start:.0f} s", flush=True)

    threads = [threading.Thread(target=worker, args=(pin,)) for pin in _slots(jobs, cores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="Sweep config, path[:arg].")
    parser.add_argument("--workdir", required=True, help="Parent of the runs' workdirs.")
    parser.add_argument("--launcher", choices=["local", "slurm", "tpu"], default="local")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands only.")
    parser.add_argument("--summary", action="store_true", help="Print the runs' final metrics.")
    parser.add_argument(
        "--evaluate", action="store_true", help="Local: train, evaluate, write result JSONs."
    )
    parser.add_argument("--results", default="", help="Result JSONs (default WORKDIR/results).")
    parser.add_argument("--jobs", type=int, default=1, help="--evaluate: runs at once.")
    parser.add_argument("--cores", default="", help="--evaluate: core sets per job, 'A;B'.")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="--evaluate: each run as this many processes (launch/local.sh).",
    )
    parser.add_argument(
        "--report", action="store_true", help="Write the study report from the result JSONs."
    )
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    results = args.results or str(fileio.join(args.workdir, "results"))
    try:
        runs = expand(args.config, args.workdir, extra)
        if args.evaluate and args.launcher != "local":
            raise ValueError("--evaluate runs locally (--launcher=local).")
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}.")
        if args.processes < 1:
            raise ValueError(f"--processes must be >= 1, got {args.processes}.")
        if args.evaluate:
            _slots(args.jobs, args.cores)
        if args.report:
            study.load_study(args.config)
    except (ValueError, FileNotFoundError) as e:
        print(f"sweep: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.summary:
        print(summary(runs))
        return 0
    failed = []
    if args.evaluate and not args.dry_run:
        failed = evaluate_all(runs, results, args.config, args.jobs, args.cores, args.processes)
    elif not (args.report and not args.evaluate):
        for i, run in enumerate(runs, 1):
            cmd = command(run, args.launcher)
            print(f"[{i}/{len(runs)}] {run['name']}: {shlex.join(cmd)}", flush=True)
            if args.dry_run:
                continue
            if subprocess.run(cmd, cwd=REPO).returncode != 0:
                failed.append(run["name"])
        if not args.dry_run and args.launcher == "local":
            print(summary(runs))
    if args.report and not args.dry_run:
        paths = study.write_report(args.config, results, runs)
        print(f"sweep: report {paths[0]} ({len(paths) - 1} plots)")
    if failed:
        print(f"sweep: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
