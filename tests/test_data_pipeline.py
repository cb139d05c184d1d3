"""The input pipeline: batches, determinism, per-process shares, exact resume, clip rules."""

import json

import jax
import numpy as np
import pytest

from vfjax import data
from vfjax.data import clips, fake_data, pipeline, storage


def _synthetic(**fields):
    cfg = data.default_config()
    cfg.num_frames, cfg.resolution, cfg.num_workers = 8, 16, 2
    cfg.synthetic.num_videos = 64
    for key, value in fields.items():
        cfg[key] = value
    return cfg


@pytest.fixture(scope="module")
def folder_config(tmp_path_factory):
    """A prepared video_folder: 2 classes x 5 videos of 24 frames, and one of 6 frames."""
    root = tmp_path_factory.mktemp("pipeline")
    fake_data.write_video_folder(str(root / "files"), per_class=5, captions=False)
    fake_data.write_video_folder(
        str(root / "files"), classes=("dogs",), per_class=1, num_frames=6, ext=".avi"
    )
    cfg = data.default_config()
    cfg.name, cfg.manual_dir, cfg.data_dir = "video_folder", str(root / "files"), str(root / "t")
    cfg.num_frames, cfg.resolution, cfg.min_frames, cfg.num_workers = 8, 32, 4, 2
    data.prepare(cfg)
    return cfg


def _take(loader, count):
    batches = [next(loader) for _ in range(count)]
    loader.close()
    return batches


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def _concat(*local_batches):
    return {k: np.concatenate([b[k] for b in local_batches]) for k in local_batches[0]}


def test_synthetic_batches_shape_range_labels():
    (batch,) = _take(data.create_loader(_synthetic(), global_batch_size=8, seed=0), 1)
    assert batch["video"].shape == (8, 8, 16, 16, 3) and batch["video"].dtype == np.float32
    assert batch["video"].min() == -1.0 and batch["video"].max() <= 1.0
    assert batch["label"].dtype == np.int32 and set(batch["label"]) <= {0, 1, 2, 3}
    info = data.data_info(_synthetic())
    assert info["num_classes"] == 4 and info["num_train_videos"] == 64


@pytest.mark.parametrize("kind", ["synthetic", "video_folder"])
def test_same_seed_same_batches(kind, folder_config):
    cfg = _synthetic() if kind == "synthetic" else folder_config
    first = _take(data.create_loader(cfg, global_batch_size=4, seed=7), 4)
    again = _take(data.create_loader(cfg, global_batch_size=4, seed=7), 4)
    other = _take(data.create_loader(cfg, global_batch_size=4, seed=8), 4)
    _assert_same(first, again)
    pairs = zip(first, other, strict=True)
    assert not all(np.array_equal(a["video"], b["video"]) for a, b in pairs)


@pytest.mark.parametrize("kind", ["synthetic", "video_folder"])
def test_two_processes_read_disjoint_shares_of_the_global_batch(kind, folder_config):
    cfg = _synthetic() if kind == "synthetic" else folder_config
    whole = data.create_loader(cfg, global_batch_size=4, seed=1)
    shares = [
        data.create_loader(cfg, global_batch_size=4, seed=1, process_index=p, process_count=2)
        for p in (0, 1)
    ]
    for step in range(2):  # Within the first epoch every element is a different video.
        mine = [set(loader.record_indices(step)) for loader in shares]
        assert len(mine[0]) == len(mine[1]) == 2 and not mine[0] & mine[1]
        assert mine[0] | mine[1] == set(whole.record_indices(step))
    for _ in range(5):
        local = [next(loader) for loader in shares]
        assert local[0]["video"].shape[0] == 2
        _assert_same([_concat(*local)], [next(whole)])
    for loader in (whole, *shares):
        loader.close()


def test_epoch_shuffle_is_a_fresh_permutation_per_epoch():
    order = pipeline.EpochShuffle(10, seed=5)
    epochs = [[order[e * 10 + i] for i in range(10)] for e in range(3)]
    assert all(sorted(epoch) == list(range(10)) for epoch in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert [pipeline.EpochShuffle(10, seed=5)[10 + i] for i in range(10)] == epochs[1]


def test_resume_from_state_or_start_step_continues_exactly(folder_config):
    cfg = folder_config
    uninterrupted = _take(data.create_loader(cfg, global_batch_size=4, seed=3), 6)

    interrupted = data.create_loader(cfg, global_batch_size=4, seed=3)
    _take(interrupted, 3)
    state = json.loads(json.dumps(interrupted.get_state()))  # As a checkpoint stores it.
    assert state["step"] == 3

    restored = data.create_loader(cfg, global_batch_size=4, seed=3)
    restored.set_state(state)
    _assert_same(_take(restored, 3), uninterrupted[3:])
    started = data.create_loader(cfg, global_batch_size=4, seed=3, start_step=3)
    _assert_same(_take(started, 3), uninterrupted[3:])
    # Resumed on two processes, the global batches are still the same.
    shares = [
        data.create_loader(cfg, global_batch_size=4, seed=3, process_index=p, process_count=2)
        for p in (0, 1)
    ]
    for loader in shares:
        loader.set_state(state)
    _assert_same([_concat(*(next(s) for s in shares)) for _ in range(3)], uninterrupted[3:])
    for loader in shares:
        loader.close()


def test_state_of_another_setup_is_refused():
    state = data.create_loader(_synthetic(), global_batch_size=4, seed=0).get_state()
    loader = data.create_loader(_synthetic(), global_batch_size=8, seed=0)
    with pytest.raises(ValueError, match="global_batch_size 4 \\(saved\\) != 8 \\(now\\)") as info:
        loader.set_state(state)
    assert "\n" not in str(info.value)
    loader.close()


def test_clip_window_stride_and_padding():
    video = np.broadcast_to(np.arange(30, dtype=np.uint8)[:, None, None, None], (30, 4, 4, 3))
    sampler = clips.ClipSampler(num_frames=4, stride=4, resolution=4)
    starts = set()
    for seed in range(300):
        frames = sampler({"video": video, "label": 0}, np.random.default_rng(seed))["video"]
        index = frames[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(np.diff(index), 4)
        starts.add(index[0])
    assert starts == set(range(30 - clips.clip_span(4, 4) + 1))  # Every start 0..17.
    short = sampler({"video": video[:7], "label": 2}, np.random.default_rng(0))
    np.testing.assert_array_equal(short["video"][:, 0, 0, 0], [0, 4, 6, 6])  # Last frame repeats.
    assert short["label"] == 2


def test_short_videos_padded_or_skipped(folder_config):
    span = clips.clip_span(folder_config.num_frames, folder_config.stride)
    builder = storage.open_builder(folder_config)
    lengths = storage.read_index(builder)["train"]["num_frames"]
    assert sorted(lengths)[0] < span <= sorted(lengths)[1]  # One video is shorter than a clip.
    padded = data.create_loader(folder_config, global_batch_size=2, seed=0)
    folder_config.short_video = "skip"
    try:
        skipped = data.create_loader(folder_config, global_batch_size=2, seed=0)
    finally:
        folder_config.short_video = "pad"
    assert padded.get_state()["num_videos"] == len(lengths)
    assert skipped.get_state()["num_videos"] == len(lengths) - 1
    assert next(skipped)["video"].shape == (2, 8, 32, 32, 3)
    padded.close()
    skipped.close()


def test_resize_grey_and_flip_at_load_time(folder_config):
    cfg = folder_config.copy_and_resolve_references()
    cfg.store_resolution, cfg.resolution, cfg.channels = 32, 16, 1
    (small,) = _take(data.create_loader(cfg, global_batch_size=4, seed=0), 1)
    assert small["video"].shape == (4, 8, 16, 16, 1)
    cfg.channels = 3
    plain = _take(data.create_loader(cfg, global_batch_size=8, seed=0), 2)
    cfg.random_flip = True
    flipped = _take(data.create_loader(cfg, global_batch_size=8, seed=0), 2)
    mirrored = 0
    for a, b in zip(plain, flipped, strict=True):
        for clip_a, clip_b in zip(a["video"], b["video"], strict=True):
            same = np.array_equal(clip_a, clip_b)
            mirror = np.array_equal(clip_a[:, :, ::-1], clip_b)
            assert same or mirror  # Flipping draws its own randomness: windows stay the same.
            mirrored += mirror and not same
    assert 0 < mirrored < 16


def test_make_global_batch_assembles_a_sharded_array():
    (local,) = _take(data.create_loader(_synthetic(), global_batch_size=8, seed=0), 1)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    batch = data.make_global_batch(local, sharding)
    assert batch["video"].shape == (8, 8, 16, 16, 3) and batch["video"].sharding == sharding
    np.testing.assert_array_equal(np.asarray(batch["video"]), local["video"])
    np.testing.assert_array_equal(np.asarray(batch["label"]), local["label"])


@pytest.mark.parametrize(
    "fields, kwargs, match",
    [
        ({"num_classes": 10}, {}, "num_classes=10 but synthetic has 4"),
        ({"cond": "text"}, {}, "the synthetic data set has none"),
        ({}, {"process_count": 3}, "multiple of the 3 processes"),
        ({}, {"process_index": 2, "process_count": 2}, "process_index=2"),
        ({"name": "moving_mnist"}, {}, "valid names"),
    ],
)
def test_loader_config_errors(fields, kwargs, match):
    cfg = _synthetic(**fields)
    with pytest.raises(ValueError, match=match) as info:
        data.create_loader(cfg, global_batch_size=4, seed=0, **kwargs)
    assert "\n" not in str(info.value)


def test_unknown_split_lists_available_ones(folder_config):
    cfg = folder_config.copy_and_resolve_references()
    cfg.split = "train+validation"
    with pytest.raises(ValueError, match="available splits: train"):
        data.create_loader(cfg, global_batch_size=2, seed=0)


def test_random_clip_sampling_is_uniform_over_all_windows(folder_config):
    """'random_clip' makes each window of each video an element: a long video gives as many
    clips as it has windows (one element per window, each once per epoch), where
    'random_window' gives one clip per video."""
    videos = [{"video": np.arange(n)[:, None, None, None], "label": 0} for n in (3, 10, 1)]
    windows = clips.WindowSource(videos, np.array([3, 10, 1]), span=3)
    # 1 window of a 3-frame video, 8 of a 10-frame one, 1 (padded) of a 1-frame one.
    assert len(windows) == 10
    starts = [(int(windows[i]["video"][0, 0, 0, 0]), windows[i]["start"]) for i in range(10)]
    assert starts == [(0, 0)] + [(0, s) for s in range(8)] + [(0, 0)]
    sampler = clips.ClipSampler(num_frames=3, stride=1, resolution=1, channels=1)
    clip = sampler(
        {**windows[6], "video": np.arange(10, dtype=np.uint8)[:, None, None, None]},
        np.random.default_rng(0),
    )
    np.testing.assert_array_equal(clip["video"][:, 0, 0, 0], [5, 6, 7])

    # Through the pipeline: a prepared set of 10 videos of 24 frames and one of 6 (min 4).
    cfg = folder_config.copy_and_resolve_references()
    cfg.clip_sampling = "random_clip"
    videos = pipeline._plan(pipeline.config_lib.with_defaults(folder_config)).source
    source = pipeline._plan(pipeline.config_lib.with_defaults(cfg)).source
    # 10 videos x (24 - 8 + 1) windows, and the short video's single padded window.
    assert len(videos) == 11 and len(source) == 10 * 17 + 1
    (batch,) = _take(data.create_loader(cfg, global_batch_size=11, seed=0), 1)
    assert batch["video"].shape == (11, 8, 32, 32, 3)
    cfg.clip_sampling = "every_frame"
    with pytest.raises(ValueError, match="clip_sampling"):
        data.create_loader(cfg, global_batch_size=11, seed=0)


def test_uint8_batches_convert_to_the_float_batches_on_the_host_and_on_the_devices():
    """`video_dtype='uint8'` hands out the videos as stored; `to_model_input` turns them into
    the float32 batches, bit for bit, in NumPy and in a jitted program alike (every 8-bit level
    too, 0 -> -1 and 255 -> 1 exactly)."""
    floats = _take(data.create_loader(_synthetic(), global_batch_size=4, seed=2), 2)
    raw = _take(
        data.create_loader(_synthetic(), global_batch_size=4, seed=2, video_dtype="uint8"), 2
    )
    on_devices = jax.jit(data.to_model_input)
    for f, u in zip(floats, raw, strict=True):
        assert u["video"].dtype == np.uint8 and u["label"].dtype == np.int32
        np.testing.assert_array_equal(u["label"], f["label"])
        np.testing.assert_array_equal(data.to_model_input(u["video"]), f["video"])
        np.testing.assert_array_equal(on_devices(u["video"]), f["video"])
    levels = np.arange(256, dtype=np.uint8)
    host, device = data.to_model_input(levels), np.asarray(on_devices(levels))
    assert host.dtype == device.dtype == np.float32 and host[0] == -1.0 and host[255] == 1.0
    np.testing.assert_array_equal(device, host)
    assert data.to_model_input(floats[0]["video"]) is floats[0]["video"]  # Floats pass through.
    with pytest.raises(ValueError, match="uint8"):
        data.to_model_input(levels.astype(np.int32))
    with pytest.raises(ValueError, match="video_dtype"):
        data.create_loader(_synthetic(), global_batch_size=4, seed=0, video_dtype="float16")


@pytest.mark.parametrize("ahead", [0, 2])
def test_device_batches_prefetch_and_resume_exactly(ahead):
    """Batches put on the devices ahead of use are the loader's, in order, as global arrays; the
    saved position is the next batch handed out (not the loader's, `ahead` further on), so a
    run resumed from it sees the batches an uninterrupted run sees."""
    cfg = _synthetic()
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

    def loader():
        return data.create_loader(cfg, global_batch_size=8, seed=4, video_dtype="uint8")

    expected = _take(loader(), 6)
    interrupted = loader()
    batches = data.DeviceBatches(interrupted, sharding, ahead=ahead)
    first = [next(batches) for _ in range(3)]
    state = json.loads(json.dumps(batches.get_state()))  # As a checkpoint stores it.
    assert state["step"] == 3 and interrupted.step == 3 + ahead
    interrupted.close()
    for batch in first:
        assert batch["video"].sharding == sharding and batch["video"].dtype == np.uint8
    _assert_same([jax.device_get(b) for b in first], expected[:3])

    restored = loader()
    restored.set_state(state)
    resumed = data.DeviceBatches(restored, sharding, ahead=ahead)
    _assert_same([jax.device_get(next(resumed)) for _ in range(3)], expected[3:])
    restored.close()
    # A finite source is handed out to its end.
    rest = data.DeviceBatches(iter(expected), sharding, ahead=ahead)
    assert len(list(rest)) == len(expected)


def test_data_bench_times_both_video_dtypes():
    """`python -m vfjax.data bench`'s numbers: the uint8 batches training reads, and the float32
    ones converted on the host."""
    from vfjax.data import bench

    out = bench.benchmark(_synthetic(), batch_size=4, batches=2, warmup=1)
    assert out["clip_shape"] == [8, 16, 16, 3] and out["clips_per_s"] > 0
    assert out["clips_per_s_float32"] > 0
