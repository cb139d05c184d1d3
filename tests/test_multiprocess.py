"""Every mode as several processes (`launch/local.sh 2`, one fake CPU device each) against the
same run in one process of 8 devices; a workdir on a bucket; preemption, kills inside a save, a
damaged checkpoint, and failures on one process. (The process launches are few and each does
much: they dominate this module's time.)"""

import glob
import io
import json
import os
import re
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from tests import gcs_emulator
from tests.helpers import (
    ROOT,
    TWO_PROCESS_MESH,
    final_state,
    launch,
    launch_env,
    read_metrics,
    tiny,
    tiny_cli_args,
)
from vfjax import sample, sharding, train
from vfjax import state as state_lib
from vfjax.evaluation import evaluate

BUCKET = "vfjax-test"
# A preview inside the run (step 2) and one at its end (step 3); the 8 preview videos and the
# evaluation's batches of 8 are split over all devices (8 here, on the tiny config's 2x4 mesh,
# whose train step the other tests compile too; 2 on 2 processes); 5 of 8 evaluated clips are
# valid.
RUN = {
    "eval.protocol": "cpu",
    "total_steps": 3,
    "sample_every_steps": 2,
    "log_every_steps": 1,
    "checkpoint_every_steps": 2,
    "sampling.num_videos": 8,
    "sampling.batch_size": 8,
    "eval.num_generated": 5,
    "eval.num_real": 5,
    "eval.batch_size": 8,
}


def _files(root) -> set[str]:
    """Relative paths of the files under a local `root`, checkpoint internals left out."""
    out = set()
    for path in glob.glob(os.path.join(root, "**"), recursive=True):
        rel = os.path.relpath(path, root)
        if os.path.isfile(path) and not rel.startswith("checkpoints/"):
            out.add(rel)
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The run in this process (8 devices): train with two previews, sample, evaluate."""
    root = tmp_path_factory.mktemp("one_process")
    config = tiny(**RUN, **{"eval.cache_dir": str(root / "cache")})
    workdir = str(root / "run")
    train.train(config, workdir)
    sample.sample(config, workdir)
    evaluate.evaluate(config, workdir)
    return workdir


def test_every_mode_on_two_processes_and_a_bucket_equals_one_process(one_process, tmp_path):
    """train (previews inside and at the end), sample and evaluate as 2 processes, with the
    workdir and the feature cache in a bucket: every file lands there, and each equals the
    1-process run's. Data parallel only on 2 processes: on this CPU every collective costs
    milliseconds across processes, and sampling with fsdp-sharded parameters gathers them layer
    by layer."""
    with gcs_emulator.start(BUCKET) as env:
        cache = {"eval.cache_dir": f"gs://{BUCKET}/cache"}
        args = tiny_cli_args(**{**RUN, **TWO_PROCESS_MESH, **cache})
        for mode in ("train", "sample", "evaluate"):
            rc, logs, _ = launch(
                tmp_path, mode, 2, [*args, f"--workdir=gs://{BUCKET}/run", f"--mode={mode}"], env
            )
            assert rc == 0, logs["launcher"][-3000:] + logs["process_1.log"][-3000:]
        names = set(gcs_emulator.list_objects(env, BUCKET))

        def read(rel: str) -> bytes:
            return gcs_emulator.read_object(env, BUCKET, f"run/{rel}")

        # Every file of the 1-process workdir, and the checkpoints and the feature cache.
        expected = {n for n in _files(one_process) if not n.startswith("events.out")}
        stored = {n[len("run/") :] for n in names if n.startswith("run/") and not n.endswith("/")}
        assert expected <= stored, expected - stored
        assert any(n.startswith("events.out.tfevents") for n in stored)
        for step in (2, 3):
            assert f"checkpoints/{step}/commit_success.txt" in stored
        assert any(n.startswith("cache/") and n.endswith(".npy") for n in names)
        assert not os.path.exists(os.path.join(ROOT, "gs:"))

        # Losses, previews, samples and the evaluation equal the 1-process run's.
        one = read_metrics(one_process)
        two = {r["step"]: r for r in map(json.loads, read("metrics.jsonl").splitlines())}
        assert sorted(one) == sorted(two) == [1, 2, 3]
        np.testing.assert_allclose(
            [two[s]["loss"] for s in (1, 2, 3)], [one[s]["loss"] for s in (1, 2, 3)], rtol=2e-5
        )
        for rel in sorted(n for n in expected if n.endswith(".npy")):  # Previews and samples.
            a = np.load(os.path.join(one_process, rel))
            b = np.load(io.BytesIO(read(rel)))
            np.testing.assert_allclose(b.astype(np.float32), a.astype(np.float32), atol=2e-3)
        for rel in sorted(n for n in expected if n.endswith(".json") and n != "config.json"):
            with open(os.path.join(one_process, rel)) as f:
                a = json.load(f)
            _assert_close(json.loads(read(rel)), a, rel)


def _assert_close(b, a, where: str, volatile=("paths", "seconds", "real_features_cached")):
    """JSON values equal, numbers within float tolerance (the 2-process run sums in another
    order), keys in `volatile` (paths, timings) skipped."""
    if isinstance(a, dict):
        keys = set(a) - set(volatile)
        assert keys == set(b) - set(volatile), (where, sorted(keys ^ (set(b) - set(volatile))))
        for k in keys:
            _assert_close(b[k], a[k], f"{where}.{k}", volatile)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(y, x, f"{where}[{i}]", volatile)
    elif isinstance(a, float) and not isinstance(a, bool):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=2e-4, err_msg=where)
    else:
        assert a == b, (where, a, b)


def _checkpoint_dirs(workdir) -> list[str]:
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def test_preemption_kill_inside_a_save_and_a_damaged_checkpoint_on_two_processes(tmp_path):
    """1 process trains steps 1-2; then 2 processes: a run killed by SIGKILL while its last
    checkpoint is being written; a rerun after the newest complete checkpoint was damaged (named,
    set aside, the one before restored), sent SIGTERM mid-run (both processes save one step, the
    same, and stop); 1 process finishes. The losses equal a straight 1-process run's at every
    step, and the final parameters and data position its final ones.
    (Steps on 2 processes of this CPU cost seconds each: the launches run few of them.)"""
    # The tiny config's constant rate (not the default's cosine): the runs below stop at
    # different `total_steps`, which a cosine schedule would stretch.
    fields = {"log_every_steps": 1, "checkpoint_every_steps": 3, "keep_checkpoints": 3}
    straight, run = str(tmp_path / "straight"), str(tmp_path / "run")
    train.train(tiny(total_steps=10, **fields), straight)
    train.train(tiny(total_steps=2, **fields), run)
    # On 2 processes the parameters are split over both (fsdp): each writes its half of every
    # checkpoint and reads it back.
    fsdp = {"mesh.data": 1, "mesh.fsdp": 2}
    args = [*tiny_cli_args(total_steps=8, **fields, **fsdp), f"--workdir={run}"]

    # SIGKILL both right after the end-of-run save of step 8 started: its files are half
    # written (the periodic saves at 3 and 6 went through).
    hooks = {"VFJAX_TEST_KILL_IN_SAVE": "8"}
    rc, logs, _ = launch(tmp_path, "sigkill", 2, args, hooks)
    assert rc != 0
    assert "Resuming from the checkpoint of step 2" in logs["process_0.log"]
    left = _checkpoint_dirs(run)
    assert "8" not in left and any(d.startswith("8.") and "tmp" in d for d in left), left
    assert {"3", "6"} <= set(left)

    # Damage the newest checkpoint (every data file truncated, as a partial copy leaves it).
    data_files = [
        p
        for p in glob.glob(os.path.join(run, "checkpoints", "6", "**"), recursive=True)
        if os.path.isfile(p) and "/d/" in p
    ]
    assert data_files
    for path in data_files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    # The rerun sets it aside and resumes from step 3; SIGTERM to every process once it has
    # logged step 5: both save one step, the same, and stop.
    log_dir = tmp_path / "damaged_then_sigterm"
    launcher = subprocess.Popen(
        ["bash", "launch/local.sh", "2", "--", *args],
        cwd=ROOT,
        env=launch_env(LOG_DIR=str(log_dir)),
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 300
    while _logged_after_resume(log_dir / "process_0.log") < 5 and time.time() < deadline:
        if launcher.poll() is not None:
            break
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)  # local.sh passes it to both processes.
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr.decode()[-3000:]
    logs = [open(log_dir / f"process_{i}.log").read() for i in (0, 1)]
    damage_lines = [line for line in logs[0].splitlines() if "damaged" in line]
    assert any("checkpoint of step 6" in line for line in damage_lines), damage_lines
    assert "Resuming from the checkpoint of step 3" in logs[0]
    stopped = {int(m) for log in logs for m in re.findall(r"Preempted at step (\d+)", log)}
    assert len(stopped) == 1, stopped  # The same step on both processes.
    (stop,) = stopped
    assert 5 <= stop < 8, stop
    left = _checkpoint_dirs(run)
    assert "6.damaged" in left  # Kept, renamed.
    assert str(stop) in left and max(read_metrics(run)) == stop
    assert not [d for d in left if "tmp" in d]

    # Back to one process for the last steps.
    train.train(tiny(total_steps=10, **fields), run)
    a, b = read_metrics(straight), read_metrics(run)
    assert sorted(a) == sorted(b) == list(range(1, 11))
    np.testing.assert_allclose([b[s]["loss"] for s in a], [a[s]["loss"] for s in a], rtol=2e-5)
    # And the final parameters and data position (the 2-process steps sum in another order).
    (pa, da), (pb, db) = final_state(straight, tiny(**fields)), final_state(run, tiny(**fields))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5), pa, pb)
    assert da == db and da["step"] == 10


def _logged_after_resume(log_path) -> int:
    """The last step a launched process has logged (clu's `[step] loss=...` lines) since it
    resumed from a checkpoint; 0 before that."""
    try:
        text = open(log_path).read()
    except FileNotFoundError:
        return 0
    _, found, after = text.partition("Resuming from the checkpoint of step")
    steps = [int(m) for m in re.findall(r"\[(\d+)\] .*loss=", after)] if found else []
    return max(steps, default=0)


def test_a_failure_on_one_process_stops_both_with_its_error(tmp_path):
    """A bad value: both processes refuse it in one line. One process that cannot open its
    data: the other, waiting in its first collective, stops within seconds with that error."""
    workdir = f"--workdir={tmp_path / 'run'}"
    rc, logs, seconds = launch(
        tmp_path, "bad", 2, [*tiny_cli_args(**TWO_PROCESS_MESH, **{"diffusion.lam": 1.5}), workdir]
    )
    assert rc != 0 and seconds < 60, seconds
    for i in (0, 1):
        errors = [x for x in logs[f"process_{i}.log"].splitlines() if "vfjax: error:" in x]
        assert errors and all("diffusion.lam must lie in [0, 1]" in x for x in errors), errors

    env = {"VFJAX_TEST_FAIL_PROCESS": "1"}
    rc, logs, seconds = launch(
        tmp_path, "one", 2, [*tiny_cli_args(**TWO_PROCESS_MESH), workdir], env
    )
    assert rc != 0
    message = "test: this process cannot open its data"
    assert f"vfjax: error: {message}" in logs["process_1.log"]
    assert f"vfjax: error: process 1: {message}" in logs["process_0.log"]
    # Stopped in seconds: without the error passed on, process 0 would wait in its first
    # collective until JAX's heartbeat timeout (100 s) gave up on process 1.
    assert seconds < 60, seconds


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
