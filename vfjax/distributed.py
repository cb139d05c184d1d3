"""Multi-process start-up: one process per host (or per GPU), one program, global arrays.

`initialize()` calls `jax.distributed.initialize()` when the environment describes a
multi-process run, and does nothing for a single process:
  - TPU pod slices and SLURM jobs (`SLURM_NTASKS` > 1) are detected by JAX itself;
  - anything else sets `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES`
    and `JAX_PROCESS_ID` (what `launch/local.sh` does for N processes on this machine).
On CPU, `JAX_NUM_CPU_DEVICES` sets the devices per process and collectives go over gloo.
"""

import logging
import os

import jax


def _cpu_only() -> bool:
    return os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu"


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
