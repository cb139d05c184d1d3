"""Multi-process runs: start-up, getting global arrays to the host, and stopping together.

`initialize()` calls `jax.distributed.initialize()` when the environment describes a
multi-process run, and does nothing for a single process:
  - TPU pod slices and SLURM jobs (`SLURM_NTASKS` > 1) are detected by JAX itself;
  - anything else sets `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES`
    and `JAX_PROCESS_ID` (what `launch/local.sh` does for N processes on this machine).
On CPU, `JAX_NUM_CPU_DEVICES` sets the devices per process and collectives go over gloo.

A failure on one process stops all of them within seconds (`stop_all`): the failing process
posts its one-line error to the coordination service's key-value store under every other
process's key, and a watcher thread in each of them, waiting on its key, prints it and ends its
process. Without this, the others would wait in their next collective (or in JAX's shutdown
barrier) for minutes.
"""

import atexit
import logging
import os
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

_STOP_KEY = "vfjax/stop/{}"  # Per process: another process's failure, or "exit" at the end.
_ACK_DIR = "vfjax/stop_ack/"
_EXITED_DIR = "vfjax/exited/"
_EXIT = "exit"
_WATCH_POLL_MS = 60_000
_ACK_WAIT_S = 5.0
_watcher: threading.Thread | None = None
_stopping = threading.Event()  # This process is stopping with its own error.


def _cpu_only() -> bool:
    return os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu"


# XLA:CPU's own flag for intra-op (Eigen) threads in each device's computation.
_SINGLE_THREADED_OPS = "--xla_cpu_multi_thread_eigen=false"


def split_cpu(devices: int) -> bool:
    """Splits a host's CPU into `devices` JAX devices that each run their share of the batch on
    one thread (XLA's intra-op threads off), before JAX starts its backends; returns whether it
    did. For small models on XLA:CPU this is faster than one device spreading each operation over
    every core (the default's train step on 2 cores: 0.52 s -> 0.42 s, PERFORMANCE.md, "Where the
    step time goes"). Left alone where the device count is already set (`JAX_NUM_CPU_DEVICES`,
    the launchers' and tests' setting, or a device count in `XLA_FLAGS`), for `devices` < 2, and
    once the backends are running. Only the CPU backend reads either setting: a GPU or TPU
    host's devices are unchanged."""
    flags_env = os.environ.get("XLA_FLAGS", "")
    if devices < 2 or "JAX_NUM_CPU_DEVICES" in os.environ or "device_count" in flags_env:
        return False
    try:
        jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError:  # Backends already started (a notebook that ran JAX before).
        return False
    if "multi_thread_eigen" not in flags_env:
        os.environ["XLA_FLAGS"] = f"{flags_env} {_SINGLE_THREADED_OPS}".strip()
    return True


def initialize() -> None:
    """Joins the multi-process run described by the environment, if any (idempotent)."""
    if jax.distributed.is_initialized():
        return
    num_cpu = os.environ.get("JAX_NUM_CPU_DEVICES")
    if num_cpu:
        jax.config.update("jax_num_cpu_devices", int(num_cpu))
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ
    tpu_pod = len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
    if not (address or slurm or tpu_pod):
        return
    if _cpu_only():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if address:
        num = int(os.environ["JAX_NUM_PROCESSES"])
        pid = int(os.environ["JAX_PROCESS_ID"])
        jax.distributed.initialize(address, num_processes=num, process_id=pid)
    else:
        jax.distributed.initialize()
    logging.info(
        "Process %d of %d: %d local devices, %d in all",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    _start_failure_watcher()


def is_main() -> bool:
    """Whether this is process 0, the one that writes files."""
    return jax.process_index() == 0


_BARRIER_TIMEOUT_MS = 60 * 60 * 1000
_barriers: dict[str, int] = {}


def barrier(name: str) -> None:
    """Waits until every process got here (no-op for one process).

    Through the coordination service, not a collective: it waits as long as a slow process
    needs (an hour at most), where a collective's first use on CPU gives up after 30 s.
    """
    if jax.process_count() == 1:
        return
    count = _barriers[name] = _barriers.get(name, 0) + 1  # Each use of a name is its own.
    _client().wait_at_barrier(f"vfjax/{name}/{count}", _BARRIER_TIMEOUT_MS)


def compile_aligned(jitted, *args, name: str):
    """`jitted` compiled ahead of time for `args`, once every process has compiled it.

    Processes compile at different speeds (one finds the program in the compilation cache,
    another does not); the first collective of a program run before the others have compiled
    it can time out (CPU collectives wait 30 s). Waiting here, together, avoids that.
    """
    compiled = jitted.lower(*args).compile()
    barrier(f"compiled {name}")
    return compiled


def _leaf_signature(x) -> tuple:
    """What `jax.jit` compiles apart in one argument leaf: its abstract value (shape, dtype, weak
    type; a Python scalar's value is not part of it) and the sharding of a `jax.Array` committed
    to one. An uncommitted array (on the default device) or a NumPy one goes where the program
    puts it, as jit does."""
    committed = isinstance(x, jax.Array) and x.committed
    return jax.typeof(x), x.sharding if committed else None


class AlignedJit:
    """A jitted function that compiles each new argument signature with `compile_aligned`: a
    signature is what `jax.jit` compiles a new program for (the arguments' tree, and per leaf
    `_leaf_signature`), so arrays of the same shapes but other shardings get their own program."""

    def __init__(self, jitted, name: str):
        self.jitted = jitted
        self.name = name
        self._compiled: dict = {}

    def lower(self, *args):
        return self.jitted.lower(*args)

    def __call__(self, *args):
        leaves, tree = jax.tree.flatten(args)
        signature = (tree, tuple(_leaf_signature(x) for x in leaves))
        if signature not in self._compiled:
            self._compiled[signature] = compile_aligned(self.jitted, *args, name=self.name)
        return self._compiled[signature](*args)


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of a global array on the host of every process.

    An array split over devices of other processes is gathered over the network (a collective:
    every process must call this); one whose shards are all here, or that is replicated, is read
    locally.
    """
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def local_rows(x: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """The rows (first axis) of `x` held by this process, and their global indices.

    For a batch split over the devices of all processes, every process reads only its own share
    (no network); rows replicated on several local devices are returned once.
    """
    if x.is_fully_replicated:
        return np.asarray(jax.device_get(x)), np.arange(x.shape[0])
    rows = {}
    for shard in x.addressable_shards:
        start = shard.index[0].start or 0
        if start not in rows:
            rows[start] = np.asarray(shard.data)
    starts = sorted(rows)
    data = np.concatenate([rows[s] for s in starts])
    index = np.concatenate([np.arange(s, s + len(rows[s])) for s in starts])
    return data, index


def _client():
    from jax._src import distributed as jax_distributed  # The coordination service's client.

    return jax_distributed.global_state.client


def _start_failure_watcher() -> None:
    global _watcher
    if _watcher is not None or jax.process_count() == 1:
        return
    _watcher = threading.Thread(target=_watch_failures, name="vfjax-failure-watch", daemon=True)
    _watcher.start()
    # Registered after jax.distributed's own exit handler, so it runs first (LIFO), while the
    # coordination service is still up.
    atexit.register(_stop_watcher)


def _watch_failures() -> None:
    """Waits on this process's stop key: another process's failure ends this process too."""
    client = _client()
    key = _STOP_KEY.format(jax.process_index())
    while True:
        try:
            message = client.blocking_key_value_get(key, _WATCH_POLL_MS)
        except Exception as e:  # Timed out (nothing posted), or the service is gone.
            if "DEADLINE_EXCEEDED" in str(e) or "timed out" in str(e).lower():
                continue
            logging.debug("Failure watcher stopped: %s", e)
            return
        if message == _EXIT:
            return
        try:
            client.key_value_set(f"{_ACK_DIR}{jax.process_index()}", "1")
        except Exception:  # The failing process may be gone already: nothing to tell it.
            pass
        if _stopping.is_set():  # Failing too, with its own error: the main thread reports it.
            return
        _report(f"vfjax: error: {message}")
        _exit(2)


def _stop_watcher() -> None:
    """Wakes the watcher with "exit" and waits for it: a thread still blocked in the
    coordination client when Python shuts down aborts the process."""
    if _watcher is None or not _watcher.is_alive():
        return
    try:
        _client().key_value_set(_STOP_KEY.format(jax.process_index()), _EXIT)
    except Exception:  # Already posted (a failure elsewhere is being handled) or service gone.
        pass
    _watcher.join(timeout=10)


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
        try:
            handler.flush()
        except Exception:  # A closed stream on the way out: nothing left to flush there.
            pass
    sys.stdout.flush()
    sys.stderr.flush()


def _exit(code: int) -> None:
    """Ends the process now, skipping JAX's shutdown barrier (which would wait for the processes
    that are stuck or gone). Process 0 hosts the coordination service and leaves last: were it
    to go first, JAX would abort the others with a fatal error of its own before they print
    theirs."""
    _flush_logs()
    if jax.process_count() > 1:
        try:
            client = _client()
            client.key_value_set(f"{_EXITED_DIR}{jax.process_index()}", "1")
            deadline = time.time() + _ACK_WAIT_S
            others = jax.process_count() - 1
            while jax.process_index() == 0 and time.time() < deadline:
                if len(client.key_value_dir_get(_EXITED_DIR)) > others:
                    break
                time.sleep(0.05)
        except Exception:  # The service is gone: nothing to wait for.
            pass
    os._exit(code)


def _report(line: str) -> None:
    _flush_logs()  # What the logs hold so far comes before the error line.
    print(line, file=sys.stderr, flush=True)


def stop_all(message: str, code: int) -> None:
    """Ends this process with `message` (one line), and every other process of the run with it.

    Single process: `sys.exit(code)` after printing. Several: posts `message` for the other
    processes' watchers, waits a few seconds for them to read it, then exits without JAX's
    shutdown barrier.
    """
    line = f"vfjax: error: {message}"
    if jax.process_count() == 1 or not jax.distributed.is_initialized():
        print(line, file=sys.stderr, flush=True)
        sys.exit(code)
    _stopping.set()
    _report(line)
    client = _client()
    me = jax.process_index()
    others = [i for i in range(jax.process_count()) if i != me]
    for i in others:
        try:
            client.key_value_set(_STOP_KEY.format(i), f"process {me}: {message}")
        except Exception:  # Another process failed first, or the service is gone.
            pass
    try:
        deadline = time.time() + _ACK_WAIT_S
        while time.time() < deadline and len(client.key_value_dir_get(_ACK_DIR)) < len(others):
            time.sleep(0.05)
    except Exception:  # The service is gone: no one is left to acknowledge; exit anyway.
        pass
    _exit(code)
