"""Multi-process runs on this CPU: launch/local.sh, process-count changes, fsdp memory."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers import ROOT, tiny, tiny_cli_args
from vfjax import sharding, train
from vfjax import state as state_lib


def _losses(workdir) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), "a step was logged twice (more than one writer?)"
    return {r["step"]: r["loss"] for r in rows}


def test_one_to_two_to_one_processes_match_an_uninterrupted_run(tmp_path):
    """k steps in 1 process (8 devices), k more in 2 processes of 4 devices started by
    launch/local.sh (restoring the 1-process checkpoint), k more in 1 process (restoring the
    2-process checkpoint): the losses equal those of 3k straight steps in 1 process."""
    k = 2
    fields = {"log_every_steps": 1, "checkpoint_every_steps": k}
    straight, moved = str(tmp_path / "straight"), str(tmp_path / "moved")
    train.train(tiny(total_steps=3 * k, **fields), straight)
    train.train(tiny(total_steps=k, **fields), moved)

    env = {**os.environ, "DEVICES_PER_PROCESS": "4", "PYTHON": sys.executable}
    env["LOG_DIR"] = str(tmp_path / "logs")
    cmd = ["bash", "launch/local.sh", "2", "--", *tiny_cli_args(total_steps=2 * k, **fields)]
    cmd.append(f"--workdir={moved}")
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    logs = {name: open(tmp_path / "logs" / name).read() for name in os.listdir(tmp_path / "logs")}
    assert result.returncode == 0, result.stderr[-2000:] + logs.get("process_1.log", "")[-2000:]
    assert "Process 1 of 2: 4 local devices, 8 in all" in logs["process_1.log"]
    assert f"Resuming from the checkpoint of step {k}" in logs["process_0.log"]

    train.train(tiny(total_steps=3 * k, **fields), moved)
    a, b = _losses(straight), _losses(moved)
    assert sorted(a) == sorted(b) == list(range(1, 3 * k + 1))
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=2e-5)


def _state_bytes(data: int, fsdp: int) -> dict[str, int]:
    c = tiny(**{"mesh.data": data, "mesh.fsdp": fsdp, "model.base.channels": 32})
    c.model.residual.channels = 32
    mesh = sharding.make_mesh(c.mesh)
    setup = state_lib.build_setup(c, mesh)
    state = state_lib.create_state(setup, 0)
    return sharding.memory_report(state, mesh), state, mesh


def test_fsdp_cuts_bytes_per_device_about_eightfold():
    replicated, _, _ = _state_bytes(8, 1)
    sharded, state, mesh = _state_bytes(1, 8)
    print("data=8:", replicated, "\nfsdp=8:", sharded)
    for part in ("params", "opt_state", "ema"):
        ratio = replicated[part] / sharded[part]
        assert 6.5 < ratio <= 8.0, (part, ratio)
    # The guard: nothing large stays replicated; with a tiny limit the replicated vectors
    # (norm scales, biases) are reported, by path.
    sharding.check_sharded(state.params, mesh, 1 << 20)
    with pytest.raises(ValueError, match="stay replicated under mesh.fsdp=8"):
        sharding.check_sharded(state.params, mesh, 64)
    assert jax.device_count() == 8
