"""The synthetic data set: deterministic, labelled, moving, in range."""

import numpy as np
import pytest

from vfjax.data import config as config_lib
from vfjax.data import synthetic


def _source(**kwargs) -> synthetic.SyntheticVideos:
    args = dict(num_videos=200, num_frames=12, resolution=32, num_objects=1, seed=3)
    args.update(kwargs)
    return synthetic.SyntheticVideos(
        args.pop("num_videos"), args.pop("num_frames"), args.pop("resolution"), **args
    )


def _centroid(frame: np.ndarray) -> np.ndarray:
    """Brightness-weighted centre (x, y) of a frame [H, W, C]."""
    weight = frame.astype(np.float64).sum(-1)
    ys, xs = np.indices(weight.shape)
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


def test_element_is_a_pure_function_of_seed_and_index():
    a, b = _source(), _source()
    late_first = [b[i]["video"] for i in (7, 3)]  # Another access order.
    np.testing.assert_array_equal(a[3]["video"], late_first[1])
    np.testing.assert_array_equal(a[7]["video"], late_first[0])
    assert a[3]["label"] == b[3]["label"]
    assert not np.array_equal(a[3]["video"], _source(seed=4)[3]["video"])
    assert not np.array_equal(a[3]["video"], a[4]["video"])


def test_shapes_range_and_visible_objects():
    for channels in (3, 1):
        element = _source(channels=channels, resolution=16, num_frames=8)[0]
        video = element["video"]
        assert video.shape == (8, 16, 16, channels) and video.dtype == np.uint8
        assert video.max() >= 128  # Bright objects.
        assert (video.reshape(8, -1, channels).max(-1) == 0).mean() > 0.5  # Dark background.


def test_several_classes_and_class_names():
    source = _source()
    labels = {source[i]["label"] for i in range(len(source))}
    assert labels == set(range(len(synthetic.SHAPES)))
    colored = _source(color_classes=True)
    assert len(colored.class_names) == len(synthetic.SHAPES) * len(synthetic.CLASS_COLORS)
    colored_labels = {colored[i]["label"] for i in range(len(colored))}
    assert len(colored_labels) > len(synthetic.SHAPES)
    assert max(colored_labels) < len(colored.class_names)


def test_objects_move_between_frames():
    source = _source(num_frames=16)
    moves = []
    for i in range(40):
        video = source[i]["video"]
        centres = np.array([_centroid(frame) for frame in video])
        steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
        moves.append(np.median(steps))
    # Speeds are 3-7% of 32 pixels per frame, i.e. about 1-2 pixels; bounces shorten a step.
    assert np.median(moves) > 0.7
    assert min(moves) > 0.3


def test_shapes_stay_inside_the_frame():
    source = _source(num_frames=32, min_speed=0.1, max_speed=0.15)  # Several bounces.
    for i in range(20):
        video = source[i]["video"]
        # Every frame keeps most of its object: none leaves through a wall.
        mass = video.astype(np.float64).sum(axis=(1, 2, 3))
        assert mass.min() > 0.7 * mass.max()


def test_synthetic_info_and_config_fields():
    cfg = config_lib.default_config()
    cfg.synthetic.num_videos, cfg.num_frames, cfg.resolution = 50, 8, 16
    info = synthetic.synthetic_info(cfg)
    assert info["num_classes"] == 4 and info["class_names"] == list(synthetic.SHAPES)
    assert info["num_videos"] == 50
    assert synthetic.synthetic_source(cfg)[0]["video"].shape == (8, 16, 16, 3)
    with pytest.raises(IndexError):
        synthetic.synthetic_source(cfg)[50]
