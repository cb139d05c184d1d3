"""`--mode=evaluate` end to end on a tiny (class-conditional) checkpoint of the default config."""

import json
import logging
import os

import numpy as np
import pytest

from tests.helpers import CLASS_FIELDS, tiny
from vfjax import run_setup
from vfjax.data import synthetic_law
from vfjax.evaluation import evaluate

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
