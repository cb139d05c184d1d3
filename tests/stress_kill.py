"""Stress test, run by hand: SIGKILL a training run at random moments, rerun, compare losses.

    python tests/stress_kill.py --kills=20 [--processes=2] [--workdir=/tmp/stress]

A straight run of the tiny test config (checkpoints every 2 steps) gives the reference losses.
Then the same run is started again and again in a second workdir, each time killed with SIGKILL
(every process of it) at a random moment after its first logged step, which often lands while a
checkpoint is being written; the last start runs to the end. Every restart must succeed, and the
final metrics must equal the straight run's at every step. Prints one line per kill and a
summary; exits non-zero on the first failure.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.helpers import tiny_cli_args  # noqa: E402

FIELDS = {"log_every_steps": 1, "checkpoint_every_steps": 2, "total_steps": 40}


def command(workdir: str, processes: int) -> tuple[list[str], dict]:
    args = [*tiny_cli_args(**FIELDS), f"--workdir={workdir}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    if processes > 1:
        env.update(DEVICES_PER_PROCESS=str(8 // processes), PYTHON=sys.executable)
        return ["bash", "launch/local.sh", str(processes), "--", *args], env
    env["JAX_NUM_CPU_DEVICES"] = "8"
    return [sys.executable, "-m", "vfjax.main", *args], env


def losses(workdir: str) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    steps = [r["step"] for r in rows]
    if len(steps) != len(set(steps)):
        raise AssertionError(f"a step was logged twice: {steps}")
    return {r["step"]: r["loss"] for r in rows}


def logged_steps(workdir: str) -> int:
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def run_to_end(workdir: str, processes: int) -> None:
    cmd, env = command(workdir, processes)
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise AssertionError(f"run failed:\n{result.stderr[-4000:]}")


def killed_run(workdir: str, processes: int, rng: random.Random) -> str:
    """Starts the run and SIGKILLs all of its processes at a random moment after a logged step.
    Returns what happened."""
    cmd, env = command(workdir, processes)
    before = logged_steps(workdir)
    log = open(os.path.join(os.path.dirname(workdir), "last_start.log"), "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 900
    while logged_steps(workdir) <= before and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        log.close()
        if proc.returncode != 0:
            raise AssertionError(f"restart failed (rc {proc.returncode}); see {log.name}")
        return "finished before the kill"
    time.sleep(rng.uniform(0.0, 1.5))
    os.killpg(proc.pid, signal.SIGKILL)  # The launcher and every training process.
    proc.wait()
    log.close()
    ckpt = os.path.join(workdir, "checkpoints")
    tmp = [n for n in os.listdir(ckpt) if "tmp" in n] if os.path.isdir(ckpt) else []
    return f"killed after step {logged_steps(workdir)}" + (f", left {tmp}" if tmp else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--workdir", default="/tmp/vfjax-stress")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    straight = os.path.join(args.workdir, "straight")
    killed = os.path.join(args.workdir, "killed")
    t0 = time.time()
    run_to_end(straight, args.processes)
    print(f"straight run: {time.time() - t0:.0f} s", flush=True)
    inside_save = 0
    for i in range(args.kills):
        what = killed_run(killed, args.processes, rng)
        inside_save += "tmp" in what
        print(f"kill {i + 1}/{args.kills}: {what}", flush=True)
        if "finished" in what:
            shutil.rmtree(killed)  # Start over so that the remaining kills land mid-run.
    run_to_end(killed, args.processes)
    a, b = losses(straight), losses(killed)
    if sorted(a) != sorted(b):
        raise AssertionError(f"steps differ: {sorted(a)} vs {sorted(b)}")
    worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
    print(
        f"OK: {args.kills} kills ({inside_save} left a save half-written), every restart "
        f"succeeded, final losses equal the straight run's at all {len(a)} steps "
        f"(max relative difference {worst:.2e}); {time.time() - t0:.0f} s in all"
    )
    if worst > 2e-5:
        raise AssertionError("losses differ from the straight run")


if __name__ == "__main__":
    main()
