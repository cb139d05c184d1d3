"""One benchmark case in its own process, with its own time limit.

A case that crashes, runs out of memory or overruns its limit is recorded with its status and
its error line, and the caller goes on with the next: one bad case costs its limit, not the run.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

# Statuses a case ends with.
OK, FAILED, OOM, TIMEOUT, SKIPPED = "ok", "failed", "oom", "timeout", "skipped"
_OOM = re.compile(
    r"RESOURCE_EXHAUSTED|out of memory|OutOfMemoryError|Out of memory|Cannot allocate memory"
)
_ERROR = re.compile(r"error|Error|ERROR|exception|Exception|Killed")
# What libtpu prints when it starts on a host without a TPU (the deviceless compiles of `bench
# tpu`): it names an "Error" but is no failure, and would hide the line that says what failed.
_LIBTPU_STARTUP = re.compile(
    r"TPU_WORKER_HOSTNAMES|TPU_ACCELERATOR_TYPE|could not determine TPU|Source Location Trace|"
    r"libtpu_init_utils|Logging before InitGoogle"
)


def log(message: str) -> None:
    """Progress, on stderr so that a command's stdout stays its result."""
    print(message, file=sys.stderr, flush=True)


def json_file(path: str) -> Callable[[str], dict | list | None]:
    """A collector that reads the JSON file a case wrote (None when it wrote none)."""

    def collect(_output: str):
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    return collect


def last_json_line(output: str) -> dict | None:
    """A collector: the last line of the output that parses as a JSON object."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def error_line(output: str) -> str:
    """The line of a failed case's output that says what went wrong, or its last line."""
    lines = [x.strip() for x in output.splitlines() if x.strip()]
    lines = [x for x in lines if not _LIBTPU_STARTUP.search(x)]
    for line in reversed(lines):
        if _OOM.search(line):
            return line[:300]
    for line in reversed(lines):
        if _ERROR.search(line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def skipped(name: str, reason: str) -> dict:
    log(f"[{name}] skipped: {reason}")
    return {"name": name, "status": SKIPPED, "error": reason, "wall_s": 0.0, "result": None}


def run_case(
    name: str,
    argv: list[str],
    *,
    timeout_s: float,
    log_path: str,
    collect: Callable[[str], dict | list | None],
    env: dict | None = None,
    cwd: str | None = None,
) -> dict:
    """Runs `argv` (output to `log_path`) for at most `timeout_s`; returns `{name, status, error,
    wall_s, log, result}` where `result` is `collect(output)` of a case that succeeded."""
    log(f"[{name}] started (limit {timeout_s:.0f} s): {' '.join(argv)}")
    start = time.perf_counter()
    status = OK
    with open(log_path, "w") as out:
        # Its own session: on a timeout the case and anything it started are ended together.
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code, status = None, TIMEOUT
    wall = time.perf_counter() - start
    with open(log_path, errors="replace") as f:
        output = f.read()
    result, error = None, None
    if status == TIMEOUT:
        error = f"no result within {timeout_s:.0f} s"
    elif code != 0:
        error = error_line(output)
        status = OOM if _OOM.search(output) else FAILED
        if code < 0:  # Killed by a signal: the kernel's OOM killer sends SIGKILL.
            why = " (the kernel's out-of-memory killer, if the host ran out)" if code == -9 else ""
            error = f"killed by signal {-code}{why}; {error}"
    else:
        result = collect(output)
        if result is None:
            status, error = FAILED, f"exited 0 without a result; {error_line(output)}"
    log(f"[{name}] {status} in {wall:.1f} s" + (f": {error}" if error else ""))
    return {
        "name": name,
        "status": status,
        "error": error,
        "wall_s": wall,
        "log": log_path,
        "result": result,
    }
