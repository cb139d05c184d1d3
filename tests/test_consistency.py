"""The frame-consistency measures on videos whose answers are known."""

import numpy as np
import pytest

from vfjax import consistency
from vfjax.data import synthetic


def _ramp(num_videos=3, frames=8, step=0.01, size=4) -> np.ndarray:
    """Videos whose frame i is the constant `step * i`: every adjacent change is `step`."""
    values = step * np.arange(frames, dtype=np.float32)
    return np.broadcast_to(values[None, :, None, None, None], (num_videos, frames, size, size, 1))


def test_one_altered_frame_gives_the_expected_ratio():
    step, bump, key = 0.01, 0.05, 4
    videos = _ramp(step=step).copy()
    videos[:, key] += bump
    stats = consistency.video_stats(videos)
    # Into the key frame the change is step + bump, out of it bump - step: mean bump; the other
    # pairs change by step.
    np.testing.assert_allclose(
        consistency.adjacent_differences(stats),
        [step, step, step, step + bump, bump - step, step, step],
        rtol=1e-5,
    )
    assert consistency.key_frame_jump_ratio(stats, key) == pytest.approx(bump / step, rel=1e-4)
    unaltered = consistency.video_stats(_ramp(step=step))
    assert consistency.key_frame_jump_ratio(unaltered, key) == pytest.approx(1.0, rel=1e-5)


def test_intensity_and_report_fields():
    videos = _ramp(step=0.1)
    report = consistency.report(consistency.video_stats(videos), key_frames=4)
    np.testing.assert_allclose(report["frame_mean"], 0.1 * np.arange(8), atol=1e-5)
    np.testing.assert_allclose(report["frame_std"], 0.0, atol=1e-4)
    assert report["key_frame_mean"] == pytest.approx(0.4, abs=1e-5)
    others = [0.1 * i for i in range(8) if i != 4]
    assert report["other_frames_mean"] == pytest.approx(np.mean(others), abs=1e-5)
    assert report["num_videos"] == 3 and report["key_frames"] == [4]
    # Two values per pixel, +-1: std 1 at every frame.
    noise = np.where(np.arange(2 * 8 * 16).reshape(2, 8, 4, 4, 1) % 2, 1.0, -1.0)
    _, std = consistency.frame_intensity(consistency.video_stats(noise))
    np.testing.assert_allclose(std, 1.0, rtol=1e-6)


def test_compare_reports_the_gaps():
    real = consistency.report(consistency.video_stats(_ramp(step=0.1)), 4)
    shifted = _ramp(step=0.1).copy()
    shifted[:, 4] += 0.2
    generated = consistency.report(consistency.video_stats(shifted), 4)
    out = consistency.compare(generated, real)
    assert out["max_frame_mean_gap_to_real"] == pytest.approx(0.2, abs=1e-5)
    assert out["key_frame_mean_gap"] == pytest.approx(
        abs(generated["key_frame_mean"] - generated["other_frames_mean"]), abs=1e-5
    )


def test_batches_and_processes_combine_exactly():
    rng = np.random.default_rng(0)
    videos = rng.uniform(-1, 1, (10, 6, 5, 5, 3)).astype(np.float32)
    whole = consistency.report(consistency.video_stats(videos), 3)
    parts = [consistency.video_stats(videos[:4]), consistency.video_stats(videos[4:])]
    merged = consistency.report(consistency.merge(parts), 3)
    added = {
        k: a + b
        for (k, a), b in zip(
            consistency.totals(parts[0]).items(), consistency.totals(parts[1]).values(), strict=True
        )
    }
    summed = consistency.report(consistency.from_totals(added), 3)
    for other in (merged, summed):
        assert other["num_videos"] == 10
        for key in ("adjacent_frame_difference", "frame_mean", "frame_std"):
            np.testing.assert_allclose(other[key], whole[key], atol=2e-5)
        assert other["key_frame_jump_ratio"] == pytest.approx(whole["key_frame_jump_ratio"], 1e-3)


def test_real_synthetic_clips_have_a_ratio_near_one():
    source = synthetic.SyntheticVideos(256, 8, 16, channels=1, min_speed=0.06, max_speed=0.1)
    videos = np.stack([source[i]["video"] for i in range(256)]).astype(np.float32) / 127.5 - 1
    ratio = consistency.key_frame_jump_ratio(consistency.video_stats(videos), 4)
    assert 0.9 < ratio < 1.1, ratio


def test_bad_input():
    with pytest.raises(ValueError, match="need videos"):
        consistency.video_stats(np.zeros((2, 1, 4, 4, 1)))
    with pytest.raises(ValueError, match="touches no key frame"):
        consistency.key_frame_jump_ratio(consistency.video_stats(np.zeros((1, 2, 2, 2, 1))), 1)


def test_long_video_measures_on_constructed_videos():
    # Frames step by 0.01, with a jump of 0.05 where clips 2 and 3 begin (frames 4 and 8).
    steps = np.full(11, 0.01)
    steps[[3, 7]] = 0.05
    values = np.concatenate([[0.0], np.cumsum(steps)]).astype(np.float32)
    videos = np.broadcast_to(values[None, :, None, None, None], (2, 12, 3, 3, 1)).copy()
    stats = consistency.video_stats(videos)
    assert consistency.boundary_ratio(stats, [4, 8]) == pytest.approx(5.0, rel=1e-4)
    assert consistency.repeated_frames(videos) == 0
    # Clips that repeat a frame (the paper's recipe: every clip's key frame) are counted, once
    # per repeat, also when the copy is a rounding error off (as batched clips can be).
    videos[:, 6] = videos[:, 2]
    videos[:, 10] = videos[:, 2] + np.float32(2e-4)
    assert consistency.repeated_frames(videos) == 2 * 2
    # A frame that differs visibly in one value alone is not a repeat.
    videos[:, 10, 0, 0, 0] += 0.05
    assert consistency.repeated_frames(videos) == 2 * 1
    # Frames a clip apart: |i - j| >= 4 over the 12 frames, by hand.
    ramp = np.arange(12, dtype=np.float32)[None, :, None, None, None] * 0.1
    pairs = [(i, j) for i in range(12) for j in range(i + 4, 12)]
    expected = np.mean([0.1 * (j - i) for i, j in pairs])
    assert consistency.far_frame_distance(ramp, 4) == pytest.approx(expected, rel=1e-5)
    report = consistency.long_video_report(ramp, 2 * ramp, [4, 8], 4)
    assert report["content_consistency"] == pytest.approx(2.0, rel=1e-4)
    assert report["repeated_frames"] == 0 and report["clip_starts"] == [4, 8]


def test_appearance_change_sees_size_and_brightness_not_position():
    """Sorted pixel values: a square moving across the frame keeps them; the same square growing
    or dimming does not. Real 64-frame synthetic videos change by about 0.01."""
    frames = np.full((1, 16, 12, 12, 1), -1.0, np.float32)
    grown, dimmed = frames.copy(), frames.copy()
    for i in range(16):
        x = i % 8
        frames[0, i, 4:7, x : x + 3] = 1.0
        grown[0, i, 4 : 7 + i // 8, x : x + 3] = 1.0
        dimmed[0, i, 4:7, x : x + 3] = 1.0 - 0.5 * (i // 8)
    assert consistency.appearance_change(frames, 4) == 0.0
    # Pairs 4 or more apart that straddle frame 8: the grown square has 3 more lit pixels.
    assert consistency.appearance_change(grown, 4) > 0.01
    assert consistency.appearance_change(dimmed, 4) > 0.01
    with pytest.raises(ValueError, match="no frames 20 apart"):
        consistency.appearance_change(frames, 20)


def test_looped_clips_counts_windows_that_repeat_an_earlier_one():
    """The paper's recipe loops (every clip a near-copy of the first): each later clip counts;
    an object that keeps moving does not, nor does a video made of different clips."""
    rng = np.random.default_rng(0)
    clip = rng.uniform(-1, 1, (2, 4, 6, 6, 1)).astype(np.float32)
    looped = np.concatenate([clip + rng.normal(0, 1e-3, clip.shape) for _ in range(4)], axis=1)
    assert consistency.looped_clips(looped, 4) == 2 * 3
    different = rng.uniform(-1, 1, (2, 16, 6, 6, 1)).astype(np.float32)
    assert consistency.looped_clips(different, 4) == 0
    report = consistency.long_video_report(looped, different, [4, 8, 12], 4, real=different)
    assert report["looped_clips"] == 6 and report["real_looped_clips"] == 0
    assert report["real_appearance_change"] > report["appearance_change"]
