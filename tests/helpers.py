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
# devices. Every test that trains uses these, so they share one compiled train step.
TINY_FIELDS = {
    "batch_size": 8,
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
}


# The tiny config made class-conditional on the synthetic videos' four shape classes.
CLASS_FIELDS = {"data.cond": "class", "log_every_steps": 1}


def tiny(**fields):
    """The tiny config, with `fields` (dotted names) set on top."""
    c = vfc.load_config(DEFAULT, "runlocal")
    c.update_from_flattened_dict({**TINY_FIELDS, **fields})
    return c


def tiny_cli_args(**fields) -> list[str]:
    """The same config as vfjax.main arguments."""
    return [f"--config={DEFAULT}:runlocal", *vfc.override_flags({**TINY_FIELDS, **fields})]


HOOKS = os.path.join(ROOT, "tests", "hooks")


def launch_env(num: int, **env) -> dict:
    """The environment of `launch/local.sh num` in tests: 8 fake CPU devices in all, and the
    processes share their compiled programs through the persistent cache (see
    `tests/hooks/sitecustomize.py`); `env` on top."""
    return {
        **os.environ,
        "DEVICES_PER_PROCESS": str(8 // num),
        "PYTHON": sys.executable,
        "PYTHONPATH": HOOKS,
        "VFJAX_TEST_SHARED_CACHE_KEY": "1",
        **env,
    }


def launch(tmp_path, name: str, num: int, args: list[str], env: dict | None = None, timeout=600):
    """Runs `launch/local.sh num -- args` (4 fake CPU devices per process at 2 processes);
    returns `(returncode, {log name: text}, seconds)`. Logs go to `tmp_path/name/`."""
    log_dir = tmp_path / name
    full_env = launch_env(num, LOG_DIR=str(log_dir), **(env or {}))
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
