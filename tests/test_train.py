"""Training end to end: sharded step equivalence, preemption, bad input, the CLI. (Exact resume,
across process counts: test_multiprocess.py.)"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import imageio.v3 as iio
import jax
import numpy as np
import pytest

from tests.helpers import DEFAULT, ROOT, final_state, tiny
from vfjax import checkpointing, run_setup, sharding, steps, train
from vfjax import config as vfc
from vfjax import state as state_lib


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_sharded_step_matches_single_device():
    c = tiny()
    rng = np.random.default_rng(0)
    batch = {
        "video": rng.uniform(-1, 1, (8, 4, 16, 16, 1)).astype(np.float32),
        "label": np.zeros((8,), np.int32),
    }
    results = {}
    for name, devices, (d, f) in [("single", jax.devices()[:1], (1, 1)), ("2x4", None, (2, 4))]:
        c.mesh.data, c.mesh.fsdp = d, f
        mesh = sharding.make_mesh(c.mesh, devices)
        setup = state_lib.build_setup(c, mesh)
        state = state_lib.create_state(setup, 0)
        report = sharding.memory_report(state, mesh)
        step = steps.compile_train_step(setup, c, batch)
        global_batch = jax.device_put(batch, sharding.batch_sharding(mesh))
        losses = []
        for _ in range(2):
            state, metrics = step(state, global_batch)
            losses.append(float(metrics["loss"]))
        results[name] = (losses, jax.device_get(state.params), report)
        print(name, "bytes per device:", report)
    (l1, p1, r1), (l8, p8, r8) = results["single"], results["2x4"]
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), p1, p8)
    # Parameters and optimizer state are really split over fsdp=4 (small vectors stay whole).
    assert r8["params"] < r1["params"] / 3 and r8["opt_state"] < r1["opt_state"] / 3


def _cli(workdir, *overrides, config=DEFAULT + ":runlocal"):
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "vfjax.main", f"--config={config}", f"--workdir={workdir}"]
    return cmd + list(overrides), env


def test_preemption_saves_current_step_and_resumes(tmp_path, caplog):
    """SIGTERM mid-run (here sent to this very process) saves the current step and stops; the
    rerun continues from it."""
    workdir = str(tmp_path / "run")
    metrics_path = os.path.join(workdir, "metrics.jsonl")

    def preempt_after_three_steps():
        deadline = time.time() + 300
        while time.time() < deadline:
            if os.path.exists(metrics_path) and len(open(metrics_path).readlines()) >= 3:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=preempt_after_three_steps, daemon=True)
    killer.start()
    result = train.train(
        tiny(total_steps=1000, log_every_steps=1, checkpoint_every_steps=500), workdir
    )
    killer.join()
    assert result.get("preempted")
    stopped_at = _metrics(workdir)[-1]["step"]
    assert 3 <= stopped_at < 1000
    ckpts = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), writer=False)
    assert ckpts.latest_step() == stopped_at
    ckpts.close()

    with caplog.at_level(logging.INFO):
        train.train(tiny(total_steps=stopped_at + 2, log_every_steps=1), workdir)
    assert f"Resuming from the checkpoint of step {stopped_at}" in caplog.text
    assert [m["step"] for m in _metrics(workdir)] == list(range(1, stopped_at + 3))


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"diffusion.lam": 1.5}, r"diffusion\.lam must lie in \[0, 1\]"),
        ({"data.name": "kinetics"}, "Unknown data set"),
        ({"data.num_frames": 0}, "num_frames must be a positive integer"),
        ({"mesh.data": 3, "mesh.fsdp": 1}, "does not match the 8 devices"),
        ({"batch_size": 6}, "does not divide over the 8 devices"),
    ],
)
def test_bad_config_is_refused_before_work(tmp_path, fields, message):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text("earlier run")
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message) as err:
        train.train(tiny(**fields), str(workdir))
    assert "\n" not in str(err.value)
    assert time.perf_counter() - start < 20  # Refused before compiling anything.
    assert (workdir / "config.json").read_text() == "earlier run"
    assert sorted(os.listdir(workdir)) == ["config.json"]


def test_workdir_that_is_a_file_is_refused_by_the_cli(tmp_path):
    path = tmp_path / "not_a_dir"
    path.write_text("precious")
    cmd, env = _cli(str(path))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("vfjax: error:") and "is a file" in last
    assert path.read_text() == "precious"


def test_nonfinite_loss_stops_with_last_checkpoint_intact(tmp_path, monkeypatch):
    """Corrupt data (NaN pixels from step 5 on) makes the loss NaN: the run stops with a clear
    error, the bad updates are not applied and the last checkpoint stays good."""
    real_loader = train.data_lib.create_loader

    class CorruptLoader:
        def __init__(self, loader, start):
            self.loader, self.step = loader, start
            self.get_state, self.set_state = loader.get_state, loader.set_state

        def __iter__(self):
            return self

        def __next__(self):
            batch, self.step = next(self.loader), self.step + 1
            video = train.data_lib.to_model_input(batch["video"])  # Floats can hold NaN.
            if self.step >= 5:
                video = np.full_like(video, np.nan)
            return {**batch, "video": video}

    def corrupt_loader(*args, **kwargs):
        return CorruptLoader(real_loader(*args, **kwargs), kwargs.get("start_step", 0))

    monkeypatch.setattr(train.data_lib, "create_loader", corrupt_loader)
    workdir = str(tmp_path / "run")
    config = tiny(total_steps=40, checkpoint_every_steps=2, log_every_steps=3)
    with pytest.raises(FloatingPointError, match="NaN/Inf at step 5;") as err:
        train.train(config, workdir)
    assert "last good checkpoint (step 4)" in str(err.value)
    params, data_state = final_state(workdir, tiny())
    assert data_state["step"] == 4
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def test_sampling_restores_the_parameters_alone(tmp_path):
    """`run_setup.restore_ema` reads the EMA (or raw) parameters of a checkpoint without its
    optimizer state: the same values as a full restore, in the run's shardings."""
    workdir = str(tmp_path / "run")
    config = tiny(total_steps=2, checkpoint_every_steps=2)
    train.train(config, workdir)
    config = run_setup.prepare_config(config)
    setup = state_lib.build_setup(config, sharding.make_mesh(config.mesh))
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), writer=False)
    full, _ = ckpt.restore(setup.abstract_state, 2)
    ckpt.close()
    for use_ema, expected in ((True, full.ema), (False, full.params)):
        config.sampling.use_ema = use_ema
        params, step = run_setup.restore_ema(config, setup, workdir)
        assert step == 2
        jax.tree.map(np.testing.assert_array_equal, params, expected)
        shardings = jax.tree.map(lambda a: a.sharding, setup.abstract_state.ema)
        assert jax.tree.map(lambda a: a.sharding, params) == shardings
    # The two parts differ (after 2 steps the average lags the parameters).
    pairs = zip(jax.tree.leaves(full.ema), jax.tree.leaves(full.params), strict=True)
    assert any(not np.allclose(e, p) for e, p in pairs)


def test_logged_learning_rates_follow_each_optimizers_own_step(tmp_path):
    """With base pretraining the residual generator's optimizer sits out the first steps, so its
    warm-up starts with the joint phase: the logged `lr_residual` (and `lr`, the residual
    generator's) follows its own step count, `lr_base` the run's."""
    workdir = str(tmp_path / "run")
    config = tiny(total_steps=5, base_pretrain_steps=2, log_every_steps=1)
    train.train(config, workdir)
    rows = _metrics(workdir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    # Step s updates with the schedule at its optimizer's count before it: s - 1 for the base
    # generator's, s - 3 for the residual generator's once it joins at step 3 (0 until then).
    schedule = state_lib.lr_schedule(config.optim, config.total_steps)
    base = [float(schedule(s - 1)) for s in range(1, 6)]
    residual = [float(schedule(max(s - 3, 0))) for s in range(1, 6)]
    lr = config.optim.lr
    assert residual == pytest.approx([0.0, 0.0, 0.0, lr / 2, lr])  # Warm-up over 2 steps.
    np.testing.assert_allclose([r["lr_base"] for r in rows], base, rtol=1e-6)
    np.testing.assert_allclose([r["lr_residual"] for r in rows], residual, rtol=1e-6)
    np.testing.assert_allclose([r["lr"] for r in rows], residual, rtol=1e-6)


def test_base_frozen_after_its_pretraining(tmp_path):
    """`optim.freeze_base` with base pretraining: the base generator learns in its pretraining
    phase and stays as it left it through the joint phase, while the residual generator learns;
    the logged `lr_base` says so. Without a trained base to keep, the setting is refused."""
    workdir = str(tmp_path / "run")
    fields = dict(base_pretrain_steps=2, log_every_steps=1, checkpoint_every_steps=1)
    config = tiny(total_steps=4, keep_checkpoints=5, **{"optim.freeze_base": True}, **fields)
    train.train(config, workdir)
    setup = state_lib.build_setup(run_setup.prepare_config(config), sharding.make_mesh(config.mesh))
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), writer=False)
    params = {s: jax.device_get(ckpt.restore(setup.abstract_state, s)[0].params) for s in (1, 2, 4)}
    ckpt.close()

    def changed(net, a, b):
        return any(
            not np.array_equal(x, y)
            for x, y in zip(
                jax.tree.leaves(params[a][net]), jax.tree.leaves(params[b][net]), strict=True
            )
        )

    assert changed("base", 1, 2)  # Pretraining moves it.
    assert not changed("base", 2, 4)  # The joint phase does not.
    assert changed("residual", 2, 4)
    # Warm-up from 0 over 2 steps, then nothing once frozen.
    lr = config.optim.lr
    assert [r["lr_base"] for r in _metrics(workdir)] == pytest.approx([0.0, lr / 2, 0.0, 0.0])
    with pytest.raises(ValueError, match="freeze_base"):
        vfc.validate(tiny(**{"optim.freeze_base": True}))


@pytest.mark.parametrize(
    "net_names,fields,expected",
    [
        (("base", "residual"), {}, {"lr_base": 0.5, "lr_residual": 2.0, "lr": 2.0}),
        (
            ("base", "residual"),
            {"optim.freeze_base": True},
            {"lr_base": 0.0, "lr_residual": 2.0, "lr": 2.0},
        ),
        (("base",), {}, {"lr_base": 0.5, "lr": 0.5}),  # The image model.
        (("residual",), {}, {"lr_residual": 2.0, "lr": 2.0}),  # The VDM baseline.
    ],
)
def test_learning_rates_apply_each_generators_multiplier(net_names, fields, expected):
    """The rate each optimizer applies after warm-up, in units of `optim.lr`: the generator's
    multiplier, 0 for a frozen base generator, and a rate only for a generator the model has;
    `lr` is the residual generator's, or the base generator's where it is the only one."""
    config = tiny(**{"optim.base_lr_mult": 0.5, "optim.residual_lr_mult": 2.0, **fields})
    params = {net: {"kernel": np.ones((2, 2), np.float32)} for net in net_names}
    tx = state_lib.make_optimizer(config.optim, config.total_steps)
    opt_state = tx.init(params)
    for _ in range(config.optim.warmup_steps):
        _, opt_state = tx.update(params, opt_state, params)
    rates = state_lib.learning_rates(config.optim, config.total_steps, opt_state, net_names)
    assert {k: float(v) / config.optim.lr for k, v in rates.items()} == pytest.approx(expected)


@pytest.mark.xdist_group("default_config")
def test_readme_main_command_end_to_end(tmp_path):
    """The README's main command, shortened by config overrides."""
    workdir = str(tmp_path / "default")
    cmd = [
        sys.executable,
        "-m",
        "vfjax.main",
        f"--config={DEFAULT}",
        f"--workdir={workdir}",
        "--config.total_steps=4",
        "--config.log_every_steps=2",
        "--config.checkpoint_every_steps=4",
        "--config.sample_every_steps=4",
        "--config.sampling.num_steps=3",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [m["step"] for m in _metrics(workdir)] == [2, 4]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))
    gif = os.path.join(workdir, "samples", "step_0000004.gif")
    frames = iio.imread(gif)
    assert frames.shape[0] == 8 and frames.shape[-1] in (3, 4)
    assert os.path.getsize(os.path.join(workdir, "samples", "step_0000004.mp4")) > 0
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
    # The preview's measures: the frames' consistency and the synthetic set's law.
    with open(os.path.join(workdir, "samples", "step_0000004.json")) as f:
        preview = json.load(f)
    law = preview["data_law"]
    assert law["num_clips"] == 8 and 0.0 <= law["share"] <= min(law["criteria"].values())
    assert "data law obeyed by" in result.stderr
