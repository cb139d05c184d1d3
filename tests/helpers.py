"""Shared test configs: the default config shrunk until a train step compiles in seconds."""

import json
import os
import subprocess
import sys
import time

from vfjax import config as vfc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "configs", "default.py")

# On top of `configs/default.py:runlocal`: one-level generators on a 2x4 mesh of the 8 fake
# devices. Every test that trains uses these, so they share one compiled train step. A constant
# rate after the 2 warm-up steps: a cosine schedule (the default's) is compiled into the step
# with the run's length, so each run of another length (and each rerun to a later step) compiled
# its own step, half a minute each here.
TINY_FIELDS = {
    "batch_size": 8,
    "optim.schedule": "constant",
    "mesh.data": 2,
    "mesh.fsdp": 4,
    "sample_every_steps": 0,
    "model.base.channel_mult": (1,),
    "model.base.attn_resolutions": (),
    "model.base.mid_attention": False,
    "model.residual.channel_mult": (1,),
    "model.residual.attn_resolutions": (),
    "model.residual.temporal_attn_resolutions": (16,),
    "model.residual.temporal_conv_layers": 1,
    # The paper's base share: the tests exercise the decomposition with a base noise shared by
    # every frame (the default's lambda 0 leaves the other frames none; it has its own tests).
    "diffusion.lam": 0.5,
}


# The tiny config made class-conditional on the synthetic videos' four shape classes.
# The class-conditional tests' thresholds (how far guidance and classes move the samples, the
# inception score's spread) were set on a 40-step run of the epsilon target with the plain
# loss: kept so, whatever the default's recipe (the v target and min-SNR have their own tests).
CLASS_FIELDS = {
    "data.cond": "class",
    "log_every_steps": 1,
    "diffusion.prediction": "eps",
    "diffusion.min_snr_gamma": 0.0,
}


def tiny(**fields):
    """The tiny config, with `fields` (dotted names) set on top."""
    c = vfc.load_config(DEFAULT, "runlocal")
    c.update_from_flattened_dict({**TINY_FIELDS, **fields})
    return c


def tiny_cli_args(**fields) -> list[str]:
    """The same config as vfjax.main arguments."""
    return [f"--config={DEFAULT}:runlocal", *vfc.override_flags({**TINY_FIELDS, **fields})]


HOOKS = os.path.join(ROOT, "tests", "hooks")


# Fake CPU devices per launched process, and the mesh of a 2-process launch (2 devices). One
# device each, not 4: XLA:CPU runs each process's fake devices on the same 2 cores, and a train
# step of the tiny config took ~2 s on 2 processes of 4 devices against ~0.5 s on 2 of 1
# (measured here, idle machine); the launches' steps and sampling dominate test_multiprocess.
DEVICES_PER_PROCESS = 1
TWO_PROCESS_MESH = {"mesh.data": 2, "mesh.fsdp": 1}


def launch_env(**env) -> dict:
    """The environment of `launch/local.sh` in tests: `DEVICES_PER_PROCESS` fake CPU devices
    each, and the processes share their compiled programs through the persistent cache (see
    `tests/hooks/sitecustomize.py`); `env` on top."""
    return {
        **os.environ,
        "DEVICES_PER_PROCESS": str(DEVICES_PER_PROCESS),
        "PYTHON": sys.executable,
        "PYTHONPATH": HOOKS,
        "VFJAX_TEST_SHARED_CACHE_KEY": "1",
        **env,
    }


def launch(tmp_path, name: str, num: int, args: list[str], env: dict | None = None, timeout=600):
    """Runs `launch/local.sh num -- args` (`DEVICES_PER_PROCESS` fake CPU devices each);
    returns `(returncode, {log name: text}, seconds)`. Logs go to `tmp_path/name/`."""
    log_dir = tmp_path / name
    full_env = launch_env(LOG_DIR=str(log_dir), **(env or {}))
    cmd = ["bash", os.path.join(ROOT, "launch", "local.sh"), str(num), "--", *args]
    start = time.perf_counter()
    result = subprocess.run(
        cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    seconds = time.perf_counter() - start
    logs = {p.name: p.read_text() for p in sorted(log_dir.iterdir())}
    logs["launcher"] = result.stderr
    return result.returncode, logs, seconds


def final_state(workdir, config) -> tuple[dict, dict]:
    """The newest checkpoint of a local `workdir` trained with `config`: `(params, data state)`
    on the host."""
    import jax

    from vfjax import checkpointing, run_setup, sharding
    from vfjax import state as state_lib

    mesh = sharding.make_mesh(config.mesh)
    setup = state_lib.build_setup(run_setup.prepare_config(config), mesh)
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), writer=False)
    state, data_state, _ = ckpt.restore_latest(setup.abstract_state)
    ckpt.close()
    return jax.device_get(state.params), data_state


def read_metrics(workdir) -> dict[int, dict]:
    """`metrics.jsonl` of a local workdir by step; fails if a step was logged twice."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r for r in rows}
