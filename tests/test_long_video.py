"""Long videos from the trained tiny model: what they cost in compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import CLASS_FIELDS, tiny
from vfjax import long_video, sample

pytestmark = pytest.mark.xdist_group("class_run")  # Shares the class_run fixture (conftest).


def test_long_video_compiles_each_sampling_program_once(class_run):
    """A long video of 3 clips ('continue', the default) and its independent-clips reference
    share one sampler of single clips: its two programs (a clip alone, a clip holding frames)
    compile once each, not the first of them again for the reference."""
    compiled = []

    def listener(event: str, seconds: float, **kwargs) -> None:
        del seconds
        name = kwargs.get("fun_name", "")
        if event == "/jax/core/compile/backend_compile_duration" and "sample_videos" in name:
            compiled.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fields = {"sampling.num_frames": 6, "sampling.label": 1}
        out = sample.sample(tiny(**CLASS_FIELDS, **fields), class_run)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert out["long_method"] == "continue" and out["clips"] == 3
    assert len(compiled) == 2, compiled


@pytest.mark.parametrize("anchored", [False, True])
def test_continuation_clips_read_the_first_key_frame_when_anchored(anchored):
    """`sampling.long_anchor`: every continuation clip gets the first clip's key frame as its
    `key_reference` (without it, the condition it was given: here none); the held frames are the
    video's last ones either way. A recording clip sampler stands in for the model."""
    config = tiny(**{"sampling.long_anchor": anchored})
    n = config.data.num_frames
    calls = []

    def clip_sampler(params, base_rng, residual_rng, cond, known):
        del params, base_rng, residual_rng
        calls.append((cond, known))
        start = 100.0 * len(calls)  # Frame values that say which call drew them.
        frames = start + jnp.arange(n, dtype=jnp.float32)
        return jnp.broadcast_to(frames[None, :, None, None, None], (2, n, 4, 4, 1))

    held_count, key = long_video.overlap_of(config), n // 2  # Up to the key frame.
    step = n - held_count
    total = n + 2 * step  # Three clips.
    video = long_video.make_long_sampler(config, None, 2, total, clip_sampler)(
        None, jax.random.key(0), jax.random.key(1), None
    )
    assert video.shape == (2, total, 4, 4, 1) and len(calls) == 3
    assert calls[0] == (None, None)
    first_key = np.asarray(video[:, key])
    assert np.all(first_key == 100.0 + key)
    for j, (cond, (values, mask)) in enumerate(calls[1:], start=1):
        np.testing.assert_array_equal(np.asarray(mask), np.arange(n) < held_count)
        end = n + (j - 1) * step
        held = np.asarray(video[:, end - held_count : end])
        np.testing.assert_array_equal(np.asarray(values[:, :held_count]), held)
        if anchored:
            assert set(cond) == {"key_reference"}
            np.testing.assert_array_equal(np.asarray(cond["key_reference"]), first_key)
        else:
            assert cond is None


@pytest.fixture(scope="module")
def key_attention_run(tmp_path_factory) -> str:
    """The tiny config with attention to the key frame on its one level, trained 3 steps (its
    zero-initialised attention output then no longer zero)."""
    from vfjax import train

    workdir = str(tmp_path_factory.mktemp("key_attention") / "run")
    train.train(tiny(**KEY_ATTENTION, total_steps=3, checkpoint_every_steps=3), workdir)
    return workdir


KEY_ATTENTION = {"model.residual.key_frame_attn_resolutions": (16,)}


def test_anchored_long_video_end_to_end(key_attention_run):
    """`sampling.long_anchor` from the sample command: the first clip is the plain one's, the
    frame generated after it changes, the name says so; a config whose levels have no attention
    to the key frame is refused before sampling."""

    def long_video(anchored):
        fields = {**KEY_ATTENTION, "sampling.num_frames": 5, "sampling.long_anchor": anchored}
        out = sample.sample(tiny(**fields), key_attention_run)
        assert out["clips"] == 2 and out["long_video"]["clip_starts"] == [4]
        return out["paths"][0], np.load(out["paths"][0][: -len(".gif")] + ".npy")

    (plain_path, plain), (anchored_path, anchored) = long_video(False), long_video(True)
    assert "_anchored" in anchored_path and "_anchored" not in plain_path
    plain, anchored = plain.astype(np.float32), anchored.astype(np.float32)
    np.testing.assert_array_equal(anchored[:, :4], plain[:, :4])
    assert np.abs(anchored[:, 4:] - plain[:, 4:]).mean() > 1e-4
    with pytest.raises(ValueError, match="sampling.long_anchor needs"):
        sample.sample(tiny(**{"sampling.long_anchor": True}), key_attention_run)


HELD = {"diffusion.context_rate": 0.5, "model.residual.held_frames": True}


def test_held_context_run_trains_and_continues_with_its_held_frames_shown(tmp_path, monkeypatch):
    """A run trained with held frames (`diffusion.context_rate`) trains under `train.train` and
    makes a long video whose continuation clips are sampled with the held frames shown
    (`sampling.sample(show_known=True)`); its first clip, holding nothing, is sampled as before."""
    from vfjax import train
    from vfjax.diffusion import sampling

    workdir = str(tmp_path / "run")
    train.train(tiny(**HELD, total_steps=2, checkpoint_every_steps=2), workdir)
    calls = []
    original = sampling.sample

    def recording(*args, **kwargs):
        calls.append((kwargs.get("known") is not None, kwargs.get("show_known", False)))
        return original(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample", recording)
    out = sample.sample(tiny(**HELD, **{"sampling.num_frames": 5}), workdir)
    assert out["clips"] == 2 and out["long_video"]["clip_starts"] == [4]
    assert (True, True) in calls and (False, False) in calls
    assert all(known == shown for known, shown in calls)
    video = np.load(out["paths"][0][: -len(".gif")] + ".npy")
    assert video.shape[1] == 5
