"""The synthetic set's law as a score: real clips obey it, clips broken on purpose do not."""

import os

import ml_collections
import numpy as np
import pytest
from scipy import ndimage

from vfjax.data import config as config_lib
from vfjax.data import synthetic, synthetic_law


def _data_config(resolution=16, channels=1, num_frames=8, **synthetic_fields):
    data = config_lib.default_config()
    data.resolution, data.channels, data.num_frames = resolution, channels, num_frames
    data.synthetic.min_speed, data.synthetic.max_speed = 0.06, 0.1
    data.synthetic.update(synthetic_fields)
    return data


def _real(data, count, start=0):
    source = synthetic.synthetic_source(data)
    clips = np.stack([source[i]["video"] for i in range(start, start + count)])
    labels = np.array([source[i]["label"] for i in range(start, start + count)])
    return clips.astype(np.float32) / 127.5 - 1.0, labels


def _draw(kind, centres, size, luma, res):
    """One object per frame `[N, res, res, 1]` in [-1, 1]; `size` and `luma` per frame or fixed."""
    n = centres.shape[0]
    size = np.broadcast_to(np.asarray(size, np.float32), (n,))[:, None, None]
    luma = np.broadcast_to(np.asarray(luma, np.float32), (n,))[:, None, None]
    pixels = np.arange(res, dtype=np.float32) + 0.5
    cover = synthetic.coverage(kind, centres, size, pixels[None, None, :], pixels[None, :, None])
    frames = np.round(255 * luma * cover) / 255.0
    return (2.0 * frames - 1.0)[..., None].astype(np.float32)


def _path(size, res=16, n=8, start=(5.0, 6.0), velocity=(1.1, -0.7)):
    return synthetic.bouncing_path(np.array(start), np.array(velocity), size, res, n)


LAW = synthetic_law.Law.of(_data_config())


def _default_data():
    """The data of `configs/default.py` (its shapes' sizes and speeds, whatever they are now)."""
    from vfjax import config as vfc

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return vfc.load_config(os.path.join(root, "configs", "default.py")).data


def test_real_clips_obey_the_law_and_their_shape_kind_is_found():
    """Calibration: at least 95% of real clips pass every criterion, at 16x16 grey frames (the
    embedded default's data, and the same frames with smaller, faster shapes) and at 32x32 in
    colour; the fitted kind is the clip's label."""
    cases = ((_default_data(), 400), (_data_config(), 400), (_data_config(32, 3, 12), 100))
    for data, count in cases:
        videos, labels = _real(data, count, start=1000)
        scores = synthetic_law.score_clips(videos, synthetic_law.Law.of(data))
        for criterion in (*synthetic_law.CRITERIA, "obeys"):
            assert scores[criterion].mean() >= 0.95, (criterion, scores[criterion].mean())
        assert (scores["kind"] == labels).mean() >= 0.95
        # The fit recovers what was drawn: the track and the object's size within tolerance.
        assert np.median(scores["track_rms"]) < 0.05
        assert np.median(scores["size_change"]) < 0.02


def test_recognisable_means_edges_sharper_than_a_pixel():
    """What the shape tolerance lets through: real clips blurred by a Gaussian of 0.4 pixels
    still obey the law; blurred by 1 pixel (1.25 for the default's larger shapes: a soft blob of
    the right size) they do not."""
    # The blob's blur grows with the shapes: the default's are about 1.4 times the others' size.
    for data, soft_sigma in ((_data_config(), 1.0), (_default_data(), 1.25)):
        videos, _ = _real(data, 100, start=2000)
        law = synthetic_law.Law.of(data)

        def blurred(sigma, videos=videos, law=law):
            x = ndimage.gaussian_filter((videos + 1) / 2, sigma=(0, 0, sigma, sigma, 0))
            return synthetic_law.score_clips(2 * x - 1, law)

        assert blurred(0.4)["obeys"].mean() >= 0.95
        soft = blurred(soft_sigma)
        assert soft["shape"].mean() <= 0.1 and soft["obeys"].mean() <= 0.05
        assert soft["one_object"].mean() >= 0.95 and soft["track"].mean() >= 0.95  # Only the form.
        assert soft["drawn_well"].mean() <= 0.1  # Not drawn well, whatever its kind.


def test_a_clean_clip_passes_and_each_breakage_fails_its_criterion():
    size = 3.0
    centres = _path(size)
    clean = _draw("cross", centres, size, 0.8, 16)

    swapped = clean.copy()
    swapped[[2, 6]] = swapped[[6, 2]]
    resized = _draw("cross", centres, np.where(np.arange(8) < 4, size, 1.35 * size), 0.8, 16)
    dimmed = _draw("cross", centres, size, np.where(np.arange(8) < 4, 0.8, 0.6), 16)
    reshaped = np.concatenate([clean[:4], _draw("circle", centres, size, 0.8, 16)[4:]])
    second = np.maximum(clean, _draw("cross", _path(size, start=(12.0, 12.5)), size, 0.8, 16))
    frozen = _draw("cross", np.repeat(centres[:1], 8, axis=0), size, 0.8, 16)
    empty = np.full_like(clean, -1.0)

    cases = {
        "clean": (clean, None),
        "swapped": (swapped, "track"),
        "resized": (resized, "size"),
        "dimmed": (dimmed, "brightness"),
        "reshaped": (reshaped, "shape"),
        "second object": (second, "one_object"),
        "frozen": (frozen, "track"),
        "empty": (empty, "one_object"),
    }
    videos = np.stack([v for v, _ in cases.values()])
    scores = synthetic_law.score_clips(videos, LAW)
    # The reshaped clip is drawn well in every frame: only its kind changes.
    reshaped_at = list(cases).index("reshaped")
    assert not scores["one_kind"][reshaped_at] and scores["drawn_well"][reshaped_at]
    assert scores["one_kind"][0] and scores["drawn_well"][0]
    for i, (name, (_, broken)) in enumerate(cases.items()):
        if broken is None:
            assert scores["obeys"][i], {c: scores[c][i] for c in synthetic_law.CRITERIA}
        else:
            assert not scores[broken][i], name
            assert not scores["obeys"][i], name


def test_every_shape_kind_is_told_apart_from_the_others_and_from_a_blob():
    size = 3.0
    centres = _path(size)
    kinds = [_draw(kind, centres, size, 1.0, 16) for kind in synthetic.SHAPES]
    # A soft blob: what an undertrained model draws (a blurred circle).
    pixels = np.arange(16) + 0.5
    d2 = (pixels[None, None, :] - centres[:, 0, None, None]) ** 2 + (
        pixels[None, :, None] - centres[:, 1, None, None]
    ) ** 2
    blob = (2.0 * 0.8 * np.exp(-d2 / (2 * 2.2**2)) - 1.0)[..., None].astype(np.float32)
    scores = synthetic_law.score_clips(np.stack(kinds + [blob]), LAW)
    np.testing.assert_array_equal(scores["kind"][:4], np.arange(4))
    assert scores["obeys"][:4].all()
    assert not scores["shape"][4] and not scores["obeys"][4]


def test_report_holds_the_share_criteria_kinds_and_tolerances():
    videos, _ = _real(_data_config(), 16)
    broken = videos.copy()
    broken[:4, 4:] = -1.0  # The object vanishes half-way.
    out = synthetic_law.report(broken, LAW)
    assert out["num_clips"] == 16 and out["share"] == pytest.approx(12 / 16)
    assert out["criteria"]["one_object"] == pytest.approx(12 / 16)
    assert set(out["criteria"]) == set(synthetic_law.CRITERIA)
    assert sum(out["kinds"].values()) == 12
    assert out["tolerances"]["track_rms"] == LAW.track_rms
    # `shape` passes where both of its halves do (an empty frame's best kind is arbitrary).
    assert set(out["shape_parts"]) == set(synthetic_law.SHAPE_PARTS)
    assert out["criteria"]["shape"] <= min(out["shape_parts"].values())
    # Counts of two halves add up to the whole's report.
    halves = [
        synthetic_law.counts(synthetic_law.score_clips(part, LAW))
        for part in (broken[:7], broken[7:])
    ]
    merged = synthetic_law.add_counts(synthetic_law.add_counts(None, halves[0]), halves[1])
    assert synthetic_law.report_from_counts(merged, LAW) == out


def test_real_clips_of_any_length():
    clips = synthetic_law.real_clips(_data_config(), 3, num_frames=20)
    assert clips.shape == (3, 20, 16, 16, 1) and clips.min() >= -1 and clips.max() <= 1
    # The same clips, longer: their first 8 frames are the 8-frame clips.
    np.testing.assert_array_equal(clips[:, :8], synthetic_law.real_clips(_data_config(), 3))
    assert synthetic_law.report(clips, LAW)["share"] == 1.0


def test_the_law_applies_to_synthetic_clips_of_one_object_only():
    assert synthetic_law.applies(_data_config())
    assert not synthetic_law.applies(_data_config(num_objects=2))
    other = _data_config()
    other.name = "ucf101"
    assert not synthetic_law.applies(other)
    with pytest.raises(ValueError, match="one object"):
        synthetic_law.Law.of(_data_config(num_objects=2))
    assert isinstance(_data_config(), ml_collections.ConfigDict)


def test_reversals_are_turns_away_from_the_walls_only():
    """Real 32-frame videos (which bounce off the walls) turn back nowhere else; a clip whose
    object turns back in the middle of the frame is caught at that frame, and counted at a seam
    when one is named there."""
    data = _default_data()
    real = synthetic_law.real_clips(data, 8, 32)
    law = synthetic_law.Law.of(data)
    assert not synthetic_law.reversals(real, law).any()
    # Out along x from the middle for 4 frames, then back: the turn is at frame 4.
    x = 5.0 + np.concatenate([np.arange(5.0), 3.0 - np.arange(4.0)])
    centres = np.stack([x, np.full_like(x, 8.0)], axis=1)
    clip = _draw("square", centres, 3.5, 1.0, 16)[None]
    turned = synthetic_law.reversals(clip, law)
    assert turned[0].nonzero()[0].tolist() == [4]
    report = synthetic_law.reversal_report(clip, law, seams=[4, 6])
    assert report["count"] == 1 and report["at_seams"] == 1
    assert report["per_100_frames"] == pytest.approx(100 / 9, abs=1e-3)


def test_long_report_says_where_a_long_videos_law_breaks():
    """Real 32-frame videos obey the law over every prefix and window; a video whose object
    turns back and slows at frame 16 (each half a real bouncing path) obeys it in each
    8-frame window and over its first 8 and 16 frames, and fails the track over all 32; the
    report's whole-video share is `report`'s."""
    data = _default_data()
    law = synthetic_law.Law.of(data)
    real = synthetic_law.real_clips(data, 4, 32)
    out = synthetic_law.long_report(real, law, clip_length=8)
    assert list(out["by_length"]) == ["8", "16", "32"]
    assert all(v["share"] == 1.0 for v in out["by_length"].values())
    assert out["windows"] == {
        "clip_length": 8,
        "share": 1.0,
        "criteria": dict.fromkeys(synthetic_law.CRITERIA, 1.0),
    }
    first = synthetic.bouncing_path(np.array([5.0, 6.0]), np.array([0.8, 0.3]), 3.5, 16, 17)
    # At frame 16 the object, moving left since a bounce, turns right and slows.
    second = synthetic.bouncing_path(first[16], np.array([0.3, 0.45]), 3.5, 16, 16)
    centres = np.concatenate([first[:16], second])
    broken = _draw("square", centres, 3.5, 1.0, 16)[None]
    out = synthetic_law.long_report(broken, law, clip_length=8, seams=[16])
    assert {n: v["share"] for n, v in out["by_length"].items()} == {"8": 1.0, "16": 1.0, "32": 0.0}
    assert out["by_length"]["32"]["criteria"]["track"] == 0.0
    assert out["by_length"]["32"]["criteria"]["size"] == 1.0
    assert out["windows"]["share"] == 1.0
    assert out["share"] == 0.0 == synthetic_law.report(broken, law)["share"]
    assert out["reversals"] == {"count": 1, "per_100_frames": 3.125, "at_seams": 1}
    # Clips no longer than the clip length get the report and its reversals alone.
    short = synthetic_law.long_report(real[:, :8], law, clip_length=8)
    assert "by_length" not in short and "windows" not in short
    assert short["share"] == 1.0 and short["reversals"]["count"] == 0
