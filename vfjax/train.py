"""The training loop: set up, resume, compile, step, log, checkpoint, sample.

`train(config, workdir)` runs (or resumes) a run. Rerunning with the same workdir continues from
the latest checkpoint with the same parameters, optimizer state, RNG and data position, so a
resumed run continues exactly as an uninterrupted one.
"""

import json
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers, periodic_actions
from flax import nnx

from vfjax import checkpointing, samples, steps
from vfjax import config as config_lib
from vfjax import data as data_lib
from vfjax import sharding as sharding_lib
from vfjax import state as state_lib
from vfjax.models import videofusion


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN or Inf."""


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each step (save, then stop)."""

    def __init__(self, enabled: bool):
        self.requested = False
        self._enabled = enabled
        self._previous = None

    def __enter__(self):
        if not self._enabled:  # Multi-process: JAX's preemption sync point (via Orbax) decides.
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # Not the main thread: rely on Orbax's preemption check alone.
            self._previous = None
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and stopping after this step.")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def prepare_config(config):
    """Fills fields that come from the data set (class count, caption-embedding width) and
    checks the result."""
    config = config.copy_and_resolve_references()
    if config.data.cond == "class" and not config.model.num_classes:
        info = data_lib.data_info(config.data)
        if not info.get("num_classes"):
            raise ValueError(f"data.cond='class' but data set {config.data.name!r} has no classes.")
        config.model.num_classes = int(info["num_classes"])
    if config.data.cond == "text":
        info = data_lib.data_info(config.data)
        if not info["text_dim"]:
            raise ValueError(
                f"data.cond='text' but {config.data.name!r} has no caption embeddings: run "
                "--mode=prepare with data.cond='text' and data.text_encoder set."
            )
        if config.model.text_dim and config.model.text_dim != info["text_dim"]:
            raise ValueError(
                f"model.text_dim={config.model.text_dim} but the stored caption embeddings are "
                f"{info['text_dim']} wide; set 0 to take it from the data set."
            )
        config.model.text_dim = int(info["text_dim"])
    return config


def setup_run(config, workdir: str):
    """Checks the config and workdir, builds the mesh and the abstract state (cheap)."""
    config_lib.validate(config, workdir)
    config = prepare_config(config)
    mesh = sharding_lib.make_mesh(config.mesh)
    sharding_lib.check_batch(config.batch_size, mesh)
    setup = state_lib.build_setup(config, mesh)
    return config, setup


def param_counts(setup: state_lib.Setup) -> dict[str, int]:
    """Parameters per generator and in total."""
    return videofusion.count_params(nnx.to_pure_dict(setup.abstract_params))


def _write_config(config, workdir: str) -> None:
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))


def _trim_metrics(path: str, last_step: int) -> None:
    """Drops logged steps after `last_step` (a crash after the last checkpoint), so the log of
    a resumed run has each step once."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
    with open(path, "w") as f:
        f.writelines(rows)


def _log_memory(compiled) -> None:
    try:
        mem = compiled.memory_analysis()
    except Exception:  # Not every backend reports it.
        return
    if mem is not None:
        logging.info(
            "Train step memory per device: arguments %.1f MiB, outputs %.1f MiB, temporaries "
            "%.1f MiB, code %.1f MiB",
            mem.argument_size_in_bytes / 2**20,
            mem.output_size_in_bytes / 2**20,
            mem.temp_size_in_bytes / 2**20,
            mem.generated_code_size_in_bytes / 2**20,
        )


class Previewer:
    """Samples a few videos from the EMA parameters during training (one compiled program)."""

    def __init__(self, config, setup: state_lib.Setup, workdir: str):
        self.config = config
        self.dir = os.path.join(workdir, "samples")
        self.num = config.sampling.num_videos
        self._fn = steps.make_sampler(config, setup, self.num)

    def cond(self, batch: dict | None) -> dict | None:
        kind = self.config.data.cond
        if kind == "class":
            return {"label": jnp.arange(self.num, dtype=jnp.int32) % self.config.model.num_classes}
        if kind == "text" and batch is not None:
            emb = np.asarray(jax.device_get(batch["text_emb"]))
            return {"text": jnp.asarray(np.resize(emb, (self.num,) + emb.shape[1:]))}
        return None

    def __call__(self, state, step: int, writer, batch=None) -> np.ndarray:
        seed = self.config.sampling.seed
        videos = self._fn(
            state.ema, jax.random.key(seed), jax.random.key(seed + 1), self.cond(batch)
        )
        videos = np.asarray(jax.device_get(videos))
        if jax.process_index() == 0:
            paths = samples.write_samples(
                os.path.join(self.dir, f"step_{step:07d}"), videos, fps=self.config.sampling.fps
            )
            rows = [np.concatenate(list(v), axis=1) for v in samples.to_uint8(videos[:4])]
            writer.write_images(step, {"samples": np.concatenate(rows, axis=0)[None]})
            logging.info("Wrote samples %s", ", ".join(paths))
        return videos


def train(config, workdir: str) -> dict:
    """Trains (or resumes) the run of `config` in `workdir`; returns the last logged metrics."""
    # ---------------------------------------------------------------- setup (cheap, checked)
    config, setup = setup_run(config, workdir)
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    if is_main:
        _write_config(config, workdir)
    counts = param_counts(setup)
    logging.info("Parameters: %s", {k: f"{v / 1e6:.2f}M" for k, v in counts.items()})
    logging.info("Mesh: %s over %d devices", dict(setup.mesh.shape), setup.mesh.size)

    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        every_steps=config.checkpoint_every_steps or config.total_steps,
        keep=config.keep_checkpoints,
    )
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    try:
        return _train_loop(config, setup, workdir, ckpt, writer, metrics_path)
    finally:
        ckpt.close()
        writer.flush()
        writer.close()


def _initial_state(config, setup, ckpt):
    latest = ckpt.latest_step()
    if latest is not None:
        logging.info("Resuming from the checkpoint of step %d in %s", latest, ckpt.directory)
        state, data_state = ckpt.restore(setup.abstract_state, latest)
        return state, data_state
    state = state_lib.create_state(setup, config.seed)
    if config.init.base_checkpoint:
        if "base" not in state.params:
            raise ValueError(
                f"init.base_checkpoint is set but model.kind={config.model.kind!r} has no base "
                "generator."
            )
        abstract = setup.abstract_state.params["base"]
        base = checkpointing.load_base_params(config.init.base_checkpoint, abstract)
        params = {**state.params, "base": base}
        ema = {**state.ema, "base": jax.tree.map(jnp.copy, base)}
        state = state.replace(params=params, ema=ema)
    return state, None


def _train_loop(config, setup, workdir, ckpt, writer, metrics_path) -> dict:
    is_main = jax.process_index() == 0
    # ---------------------------------------------------------------- state and input
    state, data_state = _initial_state(config, setup, ckpt)
    start = int(jax.device_get(state.step))
    if is_main:
        _trim_metrics(metrics_path, start)
    loader = data_lib.create_loader(
        config.data,
        global_batch_size=config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        start_step=start,
    )
    if data_state is not None:
        loader.set_state(data_state)
    report = sharding_lib.memory_report(state, setup.mesh)
    logging.info("State per device: %s", {k: f"{v / 2**20:.2f} MiB" for k, v in report.items()})
    sharding_lib.check_sharded(state.params, setup.mesh, config.mesh.replicated_limit_bytes)
    if start >= config.total_steps:
        logging.info(
            "Step %d already reached total_steps=%d: nothing to train.", start, config.total_steps
        )
        return {"step": start}

    # ---------------------------------------------------------------- compile
    batch_sharding = sharding_lib.batch_sharding(setup.mesh)
    first = data_lib.make_global_batch(next(loader), batch_sharding)
    t0 = time.perf_counter()
    train_step = steps.compile_train_step(setup, config, first)
    logging.info("Compiled the train step in %.1f s", time.perf_counter() - t0)
    _log_memory(train_step)
    previewer = Previewer(config, setup, workdir) if config.sample_every_steps else None

    # ---------------------------------------------------------------- loop
    progress = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer)
    pending, last = [], {}
    last_good_ckpt = ckpt.latest_step()
    t_log = time.perf_counter()
    batch = first
    with _Preemption(enabled=jax.process_count() == 1) as preemption:
        for step in range(start + 1, config.total_steps + 1):
            if batch is None:
                batch = data_lib.make_global_batch(next(loader), batch_sharding)
            state, metrics = train_step(state, batch)
            pending.append(metrics)
            progress(step)
            stop = preemption.requested or ckpt.reached_preemption(step)
            due_log = step % config.log_every_steps == 0 or step == config.total_steps or stop
            due_ckpt = (
                step % max(config.checkpoint_every_steps, 1) == 0
                if config.checkpoint_every_steps
                else False
            )
            if due_log or due_ckpt:
                rows = jax.device_get(pending)
                bad = [step - len(rows) + 1 + i for i, r in enumerate(rows) if not r["finite"]]
                if bad:
                    raise NonFiniteLossError(
                        f"Loss or gradients became NaN/Inf at step {bad[0]}; stopped. The last "
                        f"good checkpoint (step {last_good_ckpt}) is intact; lower optim.lr or "
                        f"check the data."
                    )
                if due_log:
                    elapsed = time.perf_counter() - t_log
                    last = {
                        k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "finite"
                    }
                    last.update(
                        step=step, lr=float(rows[-1]["lr"]), steps_per_sec=len(rows) / elapsed
                    )
                    if is_main:
                        writer.write_scalars(step, {k: v for k, v in last.items() if k != "step"})
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(last) + "\n")
                    t_log = time.perf_counter()
                    pending = []
            if due_ckpt or stop:
                ckpt.save(step, state, loader.get_state(), force=stop)
                last_good_ckpt = step
            if previewer and step % config.sample_every_steps == 0:
                previewer(state, step, writer, batch)
            batch = None
            if stop:
                logging.warning("Preempted at step %d: checkpoint saved, stopping.", step)
                return {**last, "preempted": True}
    if ckpt.latest_step() != config.total_steps:
        ckpt.save(config.total_steps, state, loader.get_state(), force=True)
    if previewer and config.total_steps % config.sample_every_steps:
        previewer(state, config.total_steps, writer, None)
    return last
