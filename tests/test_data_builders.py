"""tfds builders: each prepares from files in its real layout; bad files and bad input."""

import os
import shutil
import zipfile

import numpy as np
import pytest

from vfjax import data
from vfjax.data import __main__ as cli
from vfjax.data import fake_data, storage, video_io


def _config(name, manual_dir, data_dir, **fields):
    cfg = data.default_config()
    cfg.name, cfg.manual_dir, cfg.data_dir = name, str(manual_dir), str(data_dir)
    cfg.resolution, cfg.num_frames, cfg.prepare_workers, cfg.num_workers = 32, 8, 2, 1
    for key, value in fields.items():
        cfg[key] = value
    return cfg


def _records(cfg, split):
    source = storage.open_split(storage.open_builder(cfg), split)
    return [source[i] for i in range(len(source))]


def _one_line_error(fn, match):
    with pytest.raises(ValueError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


LAYOUTS = {
    # name: (writer, {split: videos}, num_classes)
    "ucf101": (fake_data.write_ucf101, {"train": 6, "test": 3}, 3),
    "sky_timelapse": (fake_data.write_sky_timelapse, {"train": 4, "test": 4}, 0),
    "taichi": (fake_data.write_taichi, {"train": 3, "test": 3}, 0),
    "video_folder": (fake_data.write_video_folder, {"train": 6}, 2),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_prepare_then_load_batches(name, tmp_path):
    writer, videos, num_classes = LAYOUTS[name]
    writer(str(tmp_path / "files"))
    cfg = _config(name, tmp_path / "files", tmp_path / "tfds")
    stats = data.prepare(cfg)
    assert {split: s["videos"] for split, s in stats["splits"].items()} == videos
    assert stats["num_classes"] == num_classes and stats["skipped"] == 0
    assert stats["resolution"] == 32
    info = data.data_info(cfg)
    assert info["num_classes"] == num_classes and info["num_train_videos"] == videos["train"]

    loader = data.create_loader(cfg, global_batch_size=4, seed=0)
    batches = [next(loader) for _ in range(3)]
    loader.close()
    for batch in batches:
        assert batch["video"].shape == (4, 8, 32, 32, 3)
        assert batch["video"].dtype == np.float32 and batch["label"].dtype == np.int32
        assert batch["video"].min() >= -1.0 and batch["video"].max() <= 1.0
        assert (
            batch["video"].min() < -0.9 and batch["video"].max() > 0.5
        )  # Dark sky, bright shapes.
        assert batch["label"].min() >= 0 and batch["label"].max() < max(num_classes, 1)
    if num_classes:
        assert len({int(x) for b in batches for x in b["label"]}) > 1


def test_ucf101_splits_labels_and_zipped_lists(tmp_path):
    fake_data.write_ucf101(str(tmp_path / "files"))
    root = tmp_path / "files" / "UCF101"
    # The split lists as downloaded (a zip), one listed video missing.
    lists = root / "ucfTrainTestlist"
    with zipfile.ZipFile(root / "UCF101TrainTestSplits-RecognitionTask.zip", "w") as archive:
        for path in lists.iterdir():
            archive.write(path, f"ucfTrainTestlist/{path.name}")
    shutil.rmtree(lists)
    os.remove(root / "UCF-101" / "Basketball" / "v_Basketball_g01_c01.avi")
    # Lists and files may spell a name in different cases (HandStandPushups in the release).
    hands = root / "UCF-101" / "HandstandPushups"
    os.rename(hands / "v_HandstandPushups_g03_c01.avi", hands / "v_HandStandPushups_g03_c01.avi")

    cfg = _config("ucf101", root, tmp_path / "tfds", ucf_split=2)
    stats = data.prepare(cfg)
    assert stats["splits"]["test"]["videos"] == 3  # Group 2 of each class.
    assert stats["splits"]["train"]["videos"] == 5  # Groups 1 and 3, one missing.
    assert stats["splits"]["train"]["skipped_by_reason"] == {"missing": 1}
    assert storage.builder_dir(cfg).endswith(os.path.join("ucf101", "32_split2", "1.0.0"))
    names = list(fake_data.UCF_CLASSES)
    for record in _records(cfg, "test"):
        path = record["path"].decode()
        assert "_g02_" in path
        assert names[record["label"]] == path.split("/")[0]
        assert record["num_frames"] == 20 and record["fps"] == 25.0
        assert (record["height"], record["width"]) == (48, 64)


def test_ucf101_rar_that_cannot_be_unpacked_is_a_clear_error(tmp_path):
    (tmp_path / "UCF101.rar").write_bytes(b"Rar!\x1a\x07\x00" + os.urandom(64))
    cfg = _config("ucf101", tmp_path, tmp_path / "tfds")
    _one_line_error(lambda: data.prepare(cfg), "UCF101")


def test_bad_videos_are_skipped_and_counted(tmp_path):
    folder = tmp_path / "files"
    good = fake_data.write_video_folder(str(folder), classes=("a",), per_class=3, captions=False)
    mp4 = open(good[0], "rb").read()
    (folder / "a" / "truncated.mp4").write_bytes(mp4[: len(mp4) // 2])
    # Fixed bytes: random ones decode now and then as a few frames (seen once: "too_short").
    (folder / "a" / "garbage.avi").write_bytes(b"this is not a video file\n" * 160)
    frames = fake_data.moving_shapes(40, 96, 128)
    video_io.write_video(str(folder / "a" / "cut.avi"), frames)
    avi = (folder / "a" / "cut.avi").read_bytes()
    (folder / "a" / "cut.avi").write_bytes(avi[: len(avi) * 3 // 4])  # Opens, half the frames.
    video_io.write_video(str(folder / "a" / "short.mp4"), frames[:4])
    fake_data.write_frames(str(folder / "a" / "frames_dir"), frames)
    (folder / "a" / "frames_dir" / "00003.jpg").write_bytes(b"not a jpeg")

    cfg = _config("video_folder", folder, tmp_path / "tfds")
    stats = data.prepare(cfg)
    train = stats["splits"]["train"]
    assert train["videos"] == 3
    assert train["skipped"] == 5
    assert train["skipped_by_reason"] == {"unreadable": 3, "truncated": 1, "too_short": 1}
    assert "skipped 5" in data.format_stats(stats)
    kept = sorted(r["path"].decode() for r in _records(cfg, "train"))
    assert kept == sorted(os.path.relpath(p, folder) for p in good)
    batch = next(data.create_loader(cfg, global_batch_size=2, seed=0))
    assert batch["video"].shape == (2, 8, 32, 32, 3)


def test_captions_frame_folders_and_metadata_are_stored(tmp_path):
    folder = tmp_path / "files"
    fake_data.write_video_folder(str(folder / "train"), classes=("x", "y"), per_class=1)
    os.rename(folder / "train" / "captions.jsonl", folder / "captions.jsonl")
    fake_data.write_frames(str(folder / "test" / "x" / "clip"), fake_data.moving_shapes(10, 40, 40))
    with open(folder / "captions.jsonl") as f:
        text = f.read().replace('"x/', '"train/x/').replace('"y/', '"train/y/')
    (folder / "captions.jsonl").write_text(text)

    cfg = _config("video_folder", folder, tmp_path / "tfds")
    stats = data.prepare(cfg)
    assert stats["class_names"] == ["x", "y"]
    assert stats["splits"]["train"]["duration_s"] == pytest.approx(2 * 24 / 25, abs=0.01)
    assert stats["splits"]["test"]["videos_without_fps"] == 1
    train = {r["path"].decode(): r for r in _records(cfg, "train")}
    assert train["train/y/y_0.mp4"]["caption"].decode() == "a video of y number 0"
    assert train["train/y/y_0.mp4"]["label"] == 1
    (test,) = _records(cfg, "test")
    assert test["num_frames"] == 10 and test["fps"] == 0.0 and test["label"] == 0
    assert len(test["video"]) == 10 and isinstance(test["video"][0], bytes)


def test_prepared_copy_is_reused_or_refused(tmp_path):
    fake_data.write_taichi(str(tmp_path / "files"))
    cfg = _config("taichi", tmp_path / "files", tmp_path / "tfds")
    first = data.prepare(cfg)
    assert data.prepare(cfg) == first  # Reused as is.
    cfg.min_frames = 4
    _one_line_error(lambda: data.prepare(cfg), "other options.*min_frames")


def _wrong_sky_layout(tmp_path):
    fake_data.write_sky_timelapse(str(tmp_path / "sky"))
    shutil.rmtree(tmp_path / "sky" / "sky_test")
    return _config("sky_timelapse", tmp_path / "sky", tmp_path / "tfds")


BAD_INPUTS = {
    "unknown name": (lambda p: _config("kinetics", p, p / "tfds"), "valid names: synthetic, ucf"),
    "missing manual_dir": (lambda p: _config("taichi", p / "none", p / "tfds"), "does not exist"),
    "empty manual_dir": (lambda p: _config("ucf101", "", p / "tfds"), "manual_dir is empty"),
    "wrong layout": (_wrong_sky_layout, "missing sky_test"),
    "not ucf101": (lambda p: _config("ucf101", p, p / "tfds"), "holds no UCF101"),
    "no videos": (lambda p: _config("video_folder", p, p / "tfds"), "No videos"),
    "zero frames": (lambda p: _config("taichi", p, p / "tfds", num_frames=0), "num_frames"),
    "bad stride": (lambda p: _config("synthetic", p, p / "tfds", stride=0), "stride"),
    "bad resolution": (lambda p: _config("synthetic", p, p / "tfds", resolution=-8), "resolution"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_one_line_error_before_any_work(case, tmp_path):
    make_config, match = BAD_INPUTS[case]
    cfg = make_config(tmp_path)
    _one_line_error(lambda: data.prepare(cfg), match)
    assert not (tmp_path / "tfds").exists()  # Nothing was written.


def test_loading_an_unprepared_data_set_says_how_to_prepare(tmp_path):
    cfg = _config("taichi", tmp_path, tmp_path / "tfds")
    _one_line_error(lambda: data.create_loader(cfg, global_batch_size=2, seed=0), "--mode=prepare")


def test_command_line_prepare_and_stats(tmp_path, capsys):
    fake_data.write_taichi(str(tmp_path / "files"), png_folders=0)
    args = ["--name=taichi", f"--data_dir={tmp_path / 'tfds'}", "--resolution=16", "--workers=1"]
    assert cli.main(["prepare", f"--manual_dir={tmp_path / 'files'}", *args]) == 0
    assert "train: 3 videos, 120 frames" in capsys.readouterr().out
    assert cli.main(["stats", *args]) == 0
    assert "test: 3 videos" in capsys.readouterr().out
    assert cli.main(["prepare", f"--manual_dir={tmp_path / 'none'}", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vfjax: error:") and "does not exist" in err and "\n" not in err
    assert cli.main(["prepare", "--name=kinetics"]) == 2  # Not a data set: refused in a line.
    assert "kinetics" in capsys.readouterr().err
