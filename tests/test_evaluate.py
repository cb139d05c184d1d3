"""`--mode=evaluate` end to end on a tiny (class-conditional) checkpoint of the default config,
and what each field of an evaluation protocol changes in it."""

import dataclasses
import itertools
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import CLASS_FIELDS, tiny
from vfjax import data as data_lib
from vfjax import run_setup
from vfjax.data import fake_data, synthetic_law
from vfjax.evaluation import evaluate, protocols, streams
from vfjax.evaluation.features import FeatureNetwork

pytestmark = pytest.mark.xdist_group("class_run")  # Shares the class_run fixture (conftest).


@pytest.fixture
def trained(class_run):
    return class_run


def _eval_config(tmp_path, **fields):
    # 3 clips in one batch of 4: one sampler call and one I3D call (padded to the 8 devices) for
    # each side; I3D at 224x224 is what costs here.
    return tiny(
        **CLASS_FIELDS,
        **{
            "eval.num_generated": 3,
            "eval.num_real": 3,
            "eval.batch_size": 4,
            "eval.cache_dir": str(tmp_path / "cache"),
            **fields,
        },
    )


def test_evaluate_writes_every_protocol_field(trained, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        result = evaluate.evaluate(_eval_config(tmp_path), trained)
    path = os.path.join(trained, "eval", "cpu_40.json")
    with open(path) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(result))
    for field in (
        "protocol",
        "dataset",
        "split",
        "num_generated",
        "num_real",
        "num_frames",
        "stride",
        "resolution",
        "clip_resolution",
        "resize_method",
        "covariance_ddof",
        "seed",
        "checkpoint_step",
        "feature_networks",
        "real_clip_sampling",
        "training_split",
        "comparable_with_published",
    ):
        assert field in saved, field
    # The default's CPU-sized protocol, marked as not comparable with published numbers.
    assert saved["protocol"] == "cpu" and saved["checkpoint_step"] == 40
    assert saved["comparable_with_published"] is False
    assert saved["split"] == saved["training_split"] == "train"
    assert saved["sampler"]["condition"] == "labels cycled 0..K-1"
    assert saved["num_generated"] == 3 and saved["num_frames"] == 9 and saved["resolution"] == 224
    # 9 frames from 4-frame clips, each new clip holding 3 (up to its key frame): 6 clips.
    assert saved["generated_clips_per_video"] == 6 and saved["long_method"] == "continue"
    assert "Long video: 5 of 6 clips done" in caplog.text  # Progress, clip by clip.
    (net,) = saved["feature_networks"]
    assert net["name"].startswith("i3d") and len(net["weights"][0]["sha256"]) == 64
    assert np.isfinite(saved["fvd"]) and saved["fvd"] > 0 and np.isfinite(saved["kvd"])
    assert os.path.getsize(os.path.join(trained, "eval", "cpu_40.gif")) > 0
    assert not saved["real_features_cached"]
    # Frame consistency of the generated videos beside the real ones (at the one key frame the
    # base generator drew: the later clips hold theirs).
    measures = saved["consistency"]
    assert measures["generated"]["key_frames"] == measures["real"]["key_frames"] == [2]
    assert measures["generated"]["num_videos"] == 3 and measures["real"]["num_videos"] == 3
    assert len(measures["generated"]["adjacent_frame_difference"]) == 8
    # The synthetic set's law, on the 9-frame videos: every real clip obeys it.
    law = saved["data_law"]
    assert law["generated"]["num_clips"] == law["real"]["num_clips"] == 3
    assert law["real"]["share"] == 1.0
    assert 0.0 <= law["generated"]["share"] <= 1.0
    assert set(law["generated"]["criteria"]) == set(synthetic_law.CRITERIA)

    # The real side is cached per data set and protocol: asked again, it is read back, the
    # law's counts with it.
    config = run_setup.prepare_config(_eval_config(tmp_path))
    protocol = evaluate._protocol(config)
    network = evaluate.i3d.with_preprocess(evaluate.i3d.load_i3d(), protocol.resize_method)
    the_law = synthetic_law.Law.of(config.data)
    feats, _, law_counts, cached = evaluate.real_features(config, protocol, network, None, the_law)
    assert cached and feats.shape == (3, 400)
    assert synthetic_law.report_from_counts(law_counts, the_law) == law["real"]


def test_evaluate_refuses_unknown_protocol_and_missing_checkpoint(tmp_path, trained):
    with pytest.raises(ValueError, match="Unknown evaluation protocol"):
        evaluate.evaluate(_eval_config(tmp_path, **{"eval.protocol": "fvd9000"}), trained)
    # TATS compares 128x128 clips; this run makes 16x16 ones.
    with pytest.raises(ValueError, match="compares 128x128 clips"):
        evaluate.evaluate(_eval_config(tmp_path, **{"eval.protocol": "tats"}), trained)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        evaluate.evaluate(_eval_config(tmp_path), str(tmp_path / "empty"))


# Each field of the protocol, and the test below that shows it changes what the evaluation
# computes (or refuses). `resolution` and `clip_resolution` only gate a run (the resize goes to
# I3D's 224 whatever the protocol says; clips are made at the run's resolution); `comparable`
# only describes a result.
_FIELD_TESTS = {
    "name": "test_real_clip_fields_change_the_clips_read",
    "num_generated": "test_generated_count_and_frames_follow_the_protocol",
    "num_real": "test_real_clip_fields_change_the_clips_read",
    "num_frames": "test_real_clip_fields_change_the_clips_read",
    "stride": "test_real_clip_fields_change_the_clips_read",
    "stride_overrides": "test_real_clip_fields_change_the_clips_read",
    "resolution": "test_resolution_fields_gate_the_evaluation",
    "clip_resolution": "test_resolution_fields_gate_the_evaluation",
    "resize_method": "test_feature_fields_change_the_result_end_to_end",
    "quantize": "test_feature_fields_change_the_result_end_to_end",
    "covariance_ddof": "test_metric_fields_change_the_distances",
    "compute_kvd": "test_metric_fields_change_the_distances",
    "compute_is": "test_feature_fields_change_the_result_end_to_end",
    "is_num_generated": "test_inception_score_fields_change_the_score",
    "is_splits": "test_inception_score_fields_change_the_score",
    "real_clip_sampling": "test_real_clip_fields_change_the_clips_read",
    "split": "test_real_clip_fields_change_the_clips_read",
    "comparable": "test_metric_fields_change_the_distances",
}


def test_every_protocol_field_has_a_test_of_its_effect():
    assert set(_FIELD_TESTS) == {f.name for f in dataclasses.fields(protocols.EvalProtocol)}
    assert all(callable(globals().get(name)) for name in _FIELD_TESTS.values())


def _stand_in_features(params, videos):
    """A cheap stand-in for I3D on its [B, T, 224, 224, 3] input: 28x28 block means of the
    frames (they move with how the frames were resized) and of a fast ripple of the pixel values
    (it moves with their 8-bit rounding), projected to 16 features."""
    b, t = videos.shape[:2]
    blocks = videos.reshape(b, t, 8, 28, 8, 28, 3)
    means = blocks.mean(axis=(1, 3, 5)).reshape(b, -1)  # [B, 192]
    ripple = jnp.sin(300.0 * blocks).mean(axis=(1, 3, 5)).reshape(b, -1)  # [B, 192]
    return jnp.concatenate([means, 10.0 * ripple], axis=-1) @ params["projection"]


def _stand_in_i3d(*args, **kwargs) -> FeatureNetwork:
    """`i3d.load_i3d`'s place in these tests: the evaluation wraps it in the protocol's resize."""
    projection = np.random.default_rng(0).normal(size=(2 * 8 * 8 * 3, 16)).astype(np.float32)
    return FeatureNetwork({"projection": projection}, _stand_in_features, "i3d-stand-in", ())


_CPU = protocols.PROTOCOLS["cpu"]


def _with_protocol(monkeypatch, **fields) -> None:
    """The `cpu` preset (the tiny config's) with `fields` replaced, for `evaluate` to read."""
    monkeypatch.setitem(protocols.PROTOCOLS, "cpu", dataclasses.replace(_CPU, **fields))


def test_feature_fields_change_the_result_end_to_end(trained, tmp_path, monkeypatch):
    """`evaluate` reads `resize_method` and `quantize` into the feature network's input and
    `compute_is` into the result: each changes what a whole evaluation returns (I3D replaced by
    a cheap stand-in; the run copied, so its own eval/ stays as the first test left it)."""
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    monkeypatch.setattr(evaluate.i3d, "load_i3d", _stand_in_i3d)
    assert _CPU.quantize and _CPU.resize_method == "bilinear_half_pixel" and not _CPU.compute_is

    def result(**fields):
        _with_protocol(monkeypatch, **fields)
        return evaluate.evaluate(_eval_config(tmp_path), workdir)

    base = result()
    resized, unrounded = result(resize_method="bilinear_align_corners"), result(quantize=False)
    with_is = result(compute_is=True)
    print(f"FVD {base['fvd']:.5f}; resized otherwise {resized['fvd']:.5f}, ", end="")
    print(f"not rounded {unrounded['fvd']:.5f}")
    # IS needs UCF101's classifier: asked for on this data set, the result says it was skipped.
    assert "is_skipped" in with_is and "is_skipped" not in base
    # No feature depends on `compute_is`: both sides recomputed (another cache key) give the same
    # FVD to the last bit, so the differences below are the settings', not noise.
    assert with_is["fvd"] == base["fvd"]
    # So any difference is the setting's: 1e-5 of the FVD is far above float noise (there is
    # none: the same settings agree to the last bit) and below what rounding to 8 bits moves it
    # (1.6e-4 of it on the default's large shapes, more on small ones).
    assert abs(resized["fvd"] - base["fvd"]) > 1e-3 * base["fvd"]
    assert abs(unrounded["fvd"] - base["fvd"]) > 1e-5 * base["fvd"]


def test_generated_count_and_frames_follow_the_protocol(trained, tmp_path):
    """`num_generated` videos are sampled (the same first ones for a smaller count) and
    `num_frames` is their length."""
    config, setup = run_setup.setup_run(_eval_config(tmp_path), trained)
    ema, _ = run_setup.restore_ema(config, setup, trained)
    network = evaluate.i3d.with_preprocess(_stand_in_i3d())

    def generated(**fields):
        protocol = dataclasses.replace(evaluate._protocol(config), **fields)
        first = streams.FirstVideos(16)
        feats = evaluate.generated_features(
            config, setup, ema, protocol, network, 7, first, lambda batches: batches
        )
        return feats, np.concatenate(first.videos)

    (feats, videos), (fewer, fewer_videos) = generated(), generated(num_generated=2)
    _, longer = generated(num_frames=10)
    assert feats.shape[0] == videos.shape[0] == 3 and fewer.shape[0] == fewer_videos.shape[0] == 2
    np.testing.assert_allclose(fewer, feats[:2], atol=1e-6)
    assert videos.shape[1] == 9 and longer.shape[1] == 10


def test_inception_score_fields_change_the_score(trained, tmp_path, monkeypatch):
    """`is_num_generated` videos are classified and `is_splits` parts scored (UCF101's C3D
    replaced by a cheap classifier of mean colours)."""
    config, setup = run_setup.setup_run(_eval_config(tmp_path), trained)
    ema, _ = run_setup.restore_ema(config, setup, trained)
    weights = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32) * 20
    classifier = FeatureNetwork(
        {"w": weights},
        lambda p, videos: jax.nn.softmax(videos.mean(axis=(1, 2, 3)) @ p["w"]),
        "c3d-stand-in",
        (),
    )
    monkeypatch.setattr(evaluate.c3d, "load_c3d", lambda *args, **kwargs: classifier)
    # One sampler batch of 4 videos of C3D's 16 frames (13 clips of the 4-frame model).
    base = dataclasses.replace(evaluate._protocol(config), is_num_generated=4, is_splits=1)

    def score(**fields):
        scores, record = evaluate.inception_score(
            config, setup, ema, dataclasses.replace(base, **fields), 8
        )
        assert record["name"] == "c3d-stand-in"
        return scores["is_mean"], scores["is_std"]

    whole, fewer, split = score(), score(is_num_generated=3), score(is_splits=2)
    print(f"IS (mean, std): 4 videos {whole}, 3 videos {fewer}, 4 videos in 2 parts {split}")
    assert whole[1] == fewer[1] == 0.0 and abs(whole[0] - fewer[0]) > 1e-6
    assert split[1] > 0.0 and abs(split[0] - whole[0]) > 1e-6


def _flattened(params, videos):
    return videos.reshape(videos.shape[0], -1)


_CLIPS = FeatureNetwork({}, _flattened, "clips", ())


@pytest.fixture(scope="module")
def taichi(tmp_path_factory):
    """The tiny config on a prepared fake TaiChi-HD (train and test splits of 40-frame videos),
    which protocols give a stride of their own (`stride_overrides`)."""
    root = tmp_path_factory.mktemp("taichi")
    fake_data.write_taichi(str(root / "files"), videos=3, num_frames=40, size=(32, 32))
    fields = {
        "data.name": "taichi",
        "data.manual_dir": str(root / "files"),
        "data.data_dir": str(root / "tfds"),
    }
    config = tiny(**fields, **{"eval.batch_size": 4})
    data_lib.prepare(config.data)
    return config


def test_real_clip_fields_change_the_clips_read(taichi, tmp_path):
    """Real clips as the evaluation reads them (`real_features` with the clips themselves as
    features): each of the protocol's clip fields changes them; the protocol's name keeps its
    cache apart."""
    base = protocols.get_protocol("cpu", num_real=3)
    assert (base.stride, base.stride_overrides, base.split) == (1, (), None)
    assert base.real_clip_sampling == "random_window"

    fresh = (f"fresh_{i}" for i in itertools.count())

    def clips(protocol, cache=None):
        """The clips read, and whether from the cache (each call its own unless `cache`)."""
        config = taichi.copy_and_resolve_references()
        config.eval.cache_dir = str(tmp_path / (cache or next(fresh)))
        feats, _, _, cached = evaluate.real_features(config, protocol, _CLIPS, None, None)
        return feats, cached

    def changed(**fields):
        return clips(dataclasses.replace(base, **fields))[0]

    read, _ = clips(base)
    frame = 16 * 16 * 3  # The clips' grey frames, as RGB.
    assert read.shape == (3, 9 * frame)
    np.testing.assert_array_equal(changed(num_real=2), read[:2])
    assert changed(num_frames=10).shape == (3, 10 * frame)
    every_other = changed(stride=2)
    np.testing.assert_array_equal(changed(stride_overrides=(("taichi", 2),)), every_other)
    np.testing.assert_array_equal(changed(stride_overrides=(("sky_timelapse", 2),)), read)
    for other in (every_other, changed(split="test"), changed(real_clip_sampling="random_clip")):
        assert other.shape == read.shape and np.abs(other - read).mean() > 1e-2
    # The name keys the cache: a repeated protocol reads what it wrote, a renamed one computes.
    assert not clips(base, "shared")[1]
    assert clips(base, "shared")[1]
    assert not clips(dataclasses.replace(base, name="cpu_renamed"), "shared")[1]


def test_metric_fields_change_the_distances(tmp_path):
    """`covariance_ddof` changes FVD, `compute_kvd` adds KVD; `comparable` only describes a
    result (its record says whether it may stand beside published numbers)."""
    rng = np.random.default_rng(2)
    gen, real = rng.normal(size=(12, 6)), rng.normal(0.5, 1.2, size=(12, 6))
    cpu = protocols.get_protocol("cpu")
    assert cpu.covariance_ddof == 0 and cpu.compute_kvd
    base = evaluate.distances(gen, real, cpu)
    ddof1 = evaluate.distances(gen, real, dataclasses.replace(cpu, covariance_ddof=1))
    no_kvd = evaluate.distances(gen, real, dataclasses.replace(cpu, compute_kvd=False))
    assert abs(ddof1["fvd"] - base["fvd"]) > 1e-3 * base["fvd"]
    assert "kvd" in base and set(no_kvd) == {"fvd"} and no_kvd["fvd"] == base["fvd"]
    config = run_setup.prepare_config(_eval_config(tmp_path))
    for comparable in (True, False):
        protocol = dataclasses.replace(cpu, comparable=comparable)
        record = evaluate.report.record(config, protocol, _CLIPS, 40, False)
        assert record["comparable_with_published"] is comparable


def test_resolution_fields_gate_the_evaluation(tmp_path, monkeypatch):
    """A protocol whose network input is not I3D's, or whose clips are not the run's size, is
    refused before any work; matching ones go on (here to the missing checkpoint)."""
    monkeypatch.setattr(evaluate.i3d, "load_i3d", _stand_in_i3d)
    config, missing = _eval_config(tmp_path), str(tmp_path / "no_run")
    for fields, error, match in [
        ({"resolution": 112}, ValueError, "I3D takes 224x224 frames"),
        ({"clip_resolution": 64}, ValueError, "compares 64x64 clips"),
        ({"clip_resolution": 16}, FileNotFoundError, "No checkpoint"),
        ({"resolution": 224, "clip_resolution": None}, FileNotFoundError, "No checkpoint"),
    ]:
        _with_protocol(monkeypatch, **fields)
        with pytest.raises(error, match=match):
            evaluate.evaluate(config, missing)
