"""Resize conventions, the sharded feature extractor, and protocol presets (what each protocol
field changes in an evaluation: tests/test_evaluate.py)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vfjax.evaluation import protocols
from vfjax.evaluation.features import FeatureNetwork, extract_features
from vfjax.evaluation.resize import (
    RESIZE_METHODS,
    interpolation_matrix,
    quantize_8bit,
    resize_frames,
)


@pytest.mark.parametrize("size", [(7, 9), (24, 20)])  # Down- and upsampling.
def test_half_pixel_resize_matches_unantialiased_jax_resize(size):
    videos = np.random.default_rng(0).uniform(-1, 1, (2, 3, 13, 15, 3)).astype(np.float32)
    got = resize_frames(videos, size, "bilinear_half_pixel")
    want = jax.image.resize(videos, (2, 3, *size, 3), "linear", antialias=False)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_resize_conventions_by_hand():
    # TF1 resize_bilinear: source o * in / out, so 4 -> 2 picks pixels 0 and 2.
    np.testing.assert_allclose(
        interpolation_matrix(4, 2, "bilinear_tf1_legacy"), [[1, 0, 0, 0], [0, 0, 1, 0]]
    )
    # Chainer (corners aligned): 3 -> 5 puts outputs at 0, 0.5, 1, 1.5, 2.
    corners = interpolation_matrix(3, 5, "bilinear_align_corners")
    np.testing.assert_allclose(corners @ np.array([0.0, 10.0, 20.0]), [0, 5, 10, 15, 20])
    # PyTorch half-pixel: 2 -> 4 gives sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (edge).
    half = interpolation_matrix(2, 4, "bilinear_half_pixel")
    np.testing.assert_allclose(half @ np.array([0.0, 8.0]), [0, 2, 6, 8])
    for method in RESIZE_METHODS:
        np.testing.assert_allclose(interpolation_matrix(5, 3, method).sum(axis=1), 1.0)
        constant = resize_frames(jnp.full((1, 2, 6, 5, 3), 0.25), (11, 4), method)
        np.testing.assert_allclose(constant, 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="Unknown resize method"):
        interpolation_matrix(3, 2, "bicubic")


def test_quantize_8bit():
    levels = quantize_8bit(jnp.array([-1.5, -1.0, 0.0, 0.3, 1.0]))
    np.testing.assert_allclose((levels + 1) * 127.5, np.round((levels + 1) * 127.5), atol=1e-4)
    assert float(levels[0]) == -1.0 and float(levels[1]) == -1.0 and float(levels[-1]) == 1.0


def _pixel_means(videos):
    return jnp.mean(videos, axis=(1, 2, 3))  # [B, C]


@pytest.mark.parametrize("mesh_shape, axis_names", [((8,), ("data",)), ((4, 2), ("data", "fsdp"))])
def test_extract_features_pads_and_keeps_order(mesh_shape, axis_names):
    mesh = jax.make_mesh(
        mesh_shape, axis_names, axis_types=(jax.sharding.AxisType.Explicit,) * len(axis_names)
    )
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(n, 2, 4, 4, 3)).astype(np.float32) for n in (5, 3, 11)]
    features = extract_features(_pixel_means, batches, mesh, total=19)
    want = np.concatenate([b.mean(axis=(1, 2, 3)) for b in batches])
    np.testing.assert_allclose(features, want, atol=1e-6)


def test_extract_features_passes_network_parameters():
    network = FeatureNetwork(
        params={"scale": jnp.arange(3.0)},
        apply_fn=lambda params, videos: _pixel_means(videos) * params["scale"],
        name="scaled-means",
        weights=(),
    )
    batch = np.ones((3, 2, 4, 4, 3), np.float32)
    features = extract_features(network, iter([batch]), batch_size=8)
    np.testing.assert_allclose(features, np.tile([0.0, 1.0, 2.0], (3, 1)))
    with pytest.raises(ValueError, match="no videos"):
        extract_features(network, [])


def test_protocol_presets():
    tats = protocols.get_protocol("tats")
    assert (tats.num_generated, tats.num_real, tats.num_frames) == (2048, 2048, 16)
    assert tats.stride_for("taichi") == 4 and tats.stride_for("ucf101") == 1
    assert tats.covariance_ddof == 1 and tats.compute_kvd
    assert tats.resize_method == "bilinear_half_pixel" and tats.resolution == 224
    stylegan_v = protocols.get_protocol("stylegan_v")
    assert stylegan_v.covariance_ddof == 0 and stylegan_v.real_clip_sampling == "random_window"
    assert stylegan_v.stride_for("taichi") == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        tats.num_real = 10
    assert protocols.get_protocol("tats", num_generated=256).num_generated == 256


def test_protocol_validation():
    with pytest.raises(ValueError, match="Unknown evaluation protocol"):
        protocols.get_protocol("fvd_everything")
    with pytest.raises(ValueError, match="resize_method"):
        protocols.get_protocol("tats", resize_method="nearest")
    with pytest.raises(ValueError, match="num_frames must be >= 9"):
        protocols.get_protocol("stylegan_v", num_frames=8)
    with pytest.raises(ValueError, match="real_clip_sampling"):
        protocols.get_protocol("tats", real_clip_sampling="first_frames")


def test_describe_records_the_protocol():
    network = FeatureNetwork(
        params={},
        apply_fn=lambda p, v: v,
        name="i3d-kinetics-400",
        weights=(("w.ckpt", "ab" * 32),),
    )
    record = protocols.describe(
        protocols.get_protocol("tats"),
        dataset="taichi",
        networks=[network],
        seed=7,
        checkpoint_step=1000,
    )
    assert record["stride"] == 4 and record["split"] == "train"
    record = protocols.describe(
        protocols.get_protocol("stylegan_v"),
        dataset="ucf101",
        networks=[network],
        seed=7,
        checkpoint_step=1000,
        training_split="train+test",
    )
    # Real clips come from the data the run trained on, and the record says which.
    assert record["split"] == record["training_split"] == "train+test"
    assert record["feature_networks"] == [
        {"name": "i3d-kinetics-400", "weights": [{"file": "w.ckpt", "sha256": "ab" * 32}]}
    ]
    for key in ("num_generated", "num_real", "num_frames", "resolution", "resize_method", "seed"):
        assert key in record
    assert record["checkpoint_step"] == 1000
    json.dumps(record)  # A result file can hold it as is.
