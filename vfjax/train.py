"""The training loop: set up, resume, compile, step, log, checkpoint, sample.

`train(config, workdir)` runs (or resumes) a run. Rerunning with the same workdir continues from
the latest checkpoint with the same parameters, optimizer state, RNG and data position, so a
resumed run continues exactly as an uninterrupted one.
"""

import contextlib
import logging
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from clu import periodic_actions

from vfjax import (
    base_checkpoint,
    checkpointing,
    consistency,
    distributed,
    fileio,
    run_setup,
    samples,
    steps,
    writers,
)
from vfjax import data as data_lib
from vfjax import sharding as sharding_lib
from vfjax import state as state_lib
from vfjax.data import synthetic_law
from vfjax.diffusion import decomposed


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
    """Samples a few videos from the EMA parameters during training (one compiled program, its
    batch split over every device of every process)."""

    def __init__(self, config, setup: state_lib.Setup, workdir):
        self.config = config
        self.dir = fileio.join(workdir, "samples")
        self.num = config.sampling.num_videos
        self.key_frame = decomposed.key_frame_index(
            config.data.num_frames, config.diffusion.key_frame
        )
        self._fn = steps.make_sampler(config, setup, self.num)
        self.law = synthetic_law.Law.of(config.data) if synthetic_law.applies(config.data) else None

    def cond(self, batch: dict | None) -> dict | None:
        kind = self.config.data.cond
        # Host arrays: the same on every process, they enter the program replicated.
        if kind == "class":
            labels = np.arange(self.num, dtype=np.int32) % self.config.model.num_classes
            return {"label": labels}
        if kind == "text" and batch is not None:
            emb = distributed.to_host(batch["text_emb"])
            return {"text": np.resize(emb, (self.num,) + emb.shape[1:])}
        return None

    def __call__(self, state, step: int, writer, batch=None) -> np.ndarray:
        """Every process calls this (the videos are gathered from all of them); process 0
        writes them (`samples/step_<step>.gif|mp4|npy`), a strip, the key-frame jump ratio and
        (synthetic data) the share obeying the data's law to TensorBoard, and those measures to
        `samples/step_<step>.json`."""
        seed = self.config.sampling.seed
        params = state.ema if self.config.sampling.use_ema else state.params
        keys = jax.random.key(seed), jax.random.key(seed + 1)
        videos = self._fn(params, *keys, self.cond(batch), None)
        videos = distributed.to_host(videos)
        if distributed.is_main():
            stem = self.dir / f"step_{step:07d}"
            paths = samples.write_samples(stem, videos, fps=self.config.sampling.fps)
            fileio.save_npy(f"{stem}.npy", videos.astype(np.float16))
            measures = consistency.report(consistency.video_stats(videos), self.key_frame)
            record = {"step": step, "consistency": measures}
            scalars = {}
            if "key_frame_jump_ratio" in measures:
                scalars["preview/key_frame_jump_ratio"] = measures["key_frame_jump_ratio"]
            if self.law is not None:
                record["data_law"] = synthetic_law.report(videos, self.law)
                scalars["preview/data_law_share"] = record["data_law"]["share"]
            fileio.write_json(f"{stem}.json", record)
            rows = [np.concatenate(list(v), axis=1) for v in samples.to_uint8(videos[:4])]
            writer.write_images(step, {"samples": np.concatenate(rows, axis=0)[None]})
            if scalars:
                writer.write_scalars(step, scalars)
            logging.info(
                "Wrote samples %s (key-frame jump ratio %s%s)",
                ", ".join(paths),
                measures.get("key_frame_jump_ratio"),
                f", data law obeyed by {record['data_law']['share']:.0%}" if self.law else "",
            )
        return videos


def train(config, workdir) -> dict:
    """Trains (or resumes) the run of `config` in `workdir` (local or bucket); returns the last
    logged metrics."""
    # ---------------------------------------------------------------- setup (cheap, checked)
    config, setup = run_setup.setup_run(config, workdir)
    workdir = fileio.path(workdir)
    if distributed.is_main():
        fileio.write_text(workdir / "config.json", config.to_json_best_effort(indent=2))
    counts = run_setup.param_counts(setup)
    logging.info("Parameters: %s", {k: f"{v / 1e6:.2f}M" for k, v in counts.items()})
    logging.info("Mesh: %s over %d devices", dict(setup.mesh.shape), setup.mesh.size)

    ckpt = checkpointing.Checkpointer(
        workdir / "checkpoints",
        every_steps=config.checkpoint_every_steps or config.total_steps,
        keep=config.keep_checkpoints,
    )
    writer, summaries = writers.create_writers(workdir, distributed.is_main())
    try:
        return _train_loop(config, setup, workdir, ckpt, writer, summaries)
    finally:
        ckpt.close()
        writer.close()


def _initial_state(config, setup, ckpt):
    """The newest checkpoint that restores (damaged ones set aside), or a fresh state."""
    restored = ckpt.restore_latest(setup.abstract_state)
    if restored is not None:
        state, data_state, step = restored
        logging.info("Resuming from the checkpoint of step %d in %s", step, ckpt.directory)
        return state, data_state
    state = state_lib.create_state(setup, config.seed)
    if config.init.base_checkpoint:
        if "base" not in state.params:
            raise ValueError(
                f"init.base_checkpoint is set but model.kind={config.model.kind!r} has no base "
                "generator."
            )
        abstract = setup.abstract_state.params["base"]
        base = base_checkpoint.load_base_params(config.init.base_checkpoint, abstract)
        params = {**state.params, "base": base}
        ema = {**state.ema, "base": jax.tree.map(jnp.copy, base)}
        state = state.replace(params=params, ema=ema)
    return state, None


def _train_loop(config, setup, workdir, ckpt, writer, summaries) -> dict:
    # ---------------------------------------------------------------- state and input
    state, data_state = _initial_state(config, setup, ckpt)
    start = int(jax.device_get(state.step))
    if distributed.is_main():
        writers.trim_metrics(workdir / "metrics.jsonl", start)
    loader = data_lib.create_loader(
        config.data,
        global_batch_size=config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        start_step=start,
        video_dtype="uint8",  # A quarter of the bytes to move; the step converts them.
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
    # The next batches are copied to the devices while a step runs; `batches.get_state()` is
    # the position of the next one handed out, what a checkpoint saves.
    batches = data_lib.DeviceBatches(loader, sharding_lib.batch_sharding(setup.mesh))
    batch = next(batches)
    clock = _TrainingClock()
    compiled = {}

    def train_step(step: int):
        """The compiled step of `step`'s phase (base pretraining, or joint)."""
        phase = steps.phase_at(config, step)
        if phase not in compiled:
            with clock.paused() as pause:
                compiled[phase] = steps.compile_train_step(setup, config, batch, phase)
            logging.info("Compiled the %s train step in %.1f s", phase, pause.seconds)
            _log_memory(compiled[phase])
        return compiled[phase]

    train_step(start + 1)
    previewer = Previewer(config, setup, workdir) if config.sample_every_steps else None

    def preview(step: int, t: float, state, batch) -> None:
        del t
        with clock.paused():
            previewer(state, step, summaries, batch)

    previews = periodic_actions.PeriodicCallback(
        every_steps=config.sample_every_steps or None,
        on_steps=[config.total_steps] if previewer else [],
        callback_fn=preview,
    )

    # ---------------------------------------------------------------- loop
    # Progress and steps/s count training time only: compiles, previews and the blocking part
    # of checkpoint saves are paused out, so the ETA does not swing around them.
    progress = periodic_actions.ReportProgress(num_train_steps=config.total_steps)
    pending, last = [], {}
    last_good_ckpt = ckpt.latest_step()
    t_log = clock()
    with _Preemption(enabled=jax.process_count() == 1) as preemption:
        for step in range(start + 1, config.total_steps + 1):
            if batch is None:
                batch = next(batches)
            state, metrics = train_step(step)(state, batch)
            pending.append(metrics)
            progress(step, t=clock())
            # Every process asks at every step (the preemption sync point is agreed on).
            stop = preemption.requested or ckpt.reached_preemption(step)
            due_log = step % config.log_every_steps == 0 or step == config.total_steps or stop
            due_save = stop or ckpt.should_save(step) or step == config.total_steps
            if due_log or due_save:
                rows = jax.device_get(pending)
                bad = [step - len(rows) + 1 + i for i, r in enumerate(rows) if not r["finite"]]
                if bad:
                    raise NonFiniteLossError(
                        f"Loss or gradients became NaN/Inf at step {bad[0]}; stopped. The last "
                        f"good checkpoint (step {last_good_ckpt}) is intact; lower optim.lr or "
                        f"check the data."
                    )
                if due_log:
                    # Phases log different terms: each is averaged over the steps that have it.
                    names = sorted({k for r in rows for k in r} - {"finite"})
                    last = {k: float(np.mean([r[k] for r in rows if k in r])) for k in names}
                    # Learning rates as applied at the logged step, not averaged.
                    last.update({k: float(v) for k, v in rows[-1].items() if k.startswith("lr")})
                    last["steps_per_sec"] = len(rows) / (clock() - t_log)
                    writer.write_scalars(step, last)
                    writer.flush()
                    last["step"] = step
                    t_log = clock()
                    pending = []
            if due_save:
                with clock.paused():
                    ckpt.save(step, state, batches.get_state(), force=True)
                last_good_ckpt = step
            previews(step, state=state, batch=batch)
            batch = None
            if stop:
                logging.warning("Preempted at step %d: checkpoint saved, stopping.", step)
                return {**last, "preempted": True}
    _log_finish(config, workdir, ckpt, last, clock)
    return last


class _TrainingClock:
    """Seconds of training: wall time less the pauses (compiles, previews, checkpoint saves)."""

    class _Pause:
        seconds = 0.0

    def __init__(self):
        self._start = time.perf_counter()
        self.paused_seconds = 0.0

    def __call__(self) -> float:
        return time.perf_counter() - self._start - self.paused_seconds

    @contextlib.contextmanager
    def paused(self):
        pause = self._Pause()
        t0 = time.perf_counter()
        try:
            yield pause
        finally:
            pause.seconds = time.perf_counter() - t0
            self.paused_seconds += pause.seconds


def _log_finish(config, workdir, ckpt, last: dict, clock: _TrainingClock) -> None:
    """The line a run ends on: its final loss and where its checkpoint and samples are."""
    step = config.total_steps
    samples_at = workdir / "samples" / f"step_{step:07d}.gif" if config.sample_every_steps else None
    logging.info(
        "Finished training at step %d: loss %.4f (last logged), %.0f s of training and %.0f s of "
        "compiles, previews and saves. Checkpoint: %s%s",
        step,
        last.get("loss", float("nan")),
        clock(),
        clock.paused_seconds,
        ckpt.directory / str(step),
        f"; samples: {samples_at}" if samples_at else "",
    )
