"""The paper's second claim, end to end: an image-pretrained base generator, class and text
conditioning with classifier-free guidance, and long videos from a fixed base noise."""

import json
import os

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import CLASS_FIELDS as CLASS
from tests.helpers import tiny
from vfjax import data as data_lib
from vfjax import sample, samples, steps, train
from vfjax.data import fake_data, synthetic_law, text
from vfjax.diffusion import sampling
from vfjax.models import init
from vfjax.models import videofusion as vf
from vfjax.models.architecture import UNet2DConfig, UNet3DConfig


def _rows(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


pytestmark = pytest.mark.xdist_group("class_run")  # Shares the class_run fixture (conftest).


@pytest.fixture
def trained(class_run):
    """The tiny class-conditional VideoFusion config trained from scratch for 40 steps."""
    return class_run


def test_image_pretrained_base_continues_its_key_frame_loss(trained, tmp_path):
    """model.kind='image' trains the base generator on frames; a VideoFusion run that starts
    from it (init.base_checkpoint) starts its key-frame loss where the image run ended."""
    image_dir = str(tmp_path / "image")
    image_run = tiny(total_steps=40, checkpoint_every_steps=40, **CLASS, **{"model.kind": "image"})
    train.train(image_run, image_dir)
    image = [r["loss_key"] for r in _rows(image_dir)]
    loaded_dir = str(tmp_path / "loaded")
    train.train(tiny(total_steps=5, **CLASS, **{"init.base_checkpoint": image_dir}), loaded_dir)
    loaded = [r["loss_key"] for r in _rows(loaded_dir)]
    scratch = [r["loss_key"] for r in _rows(trained)]
    start, end, first = np.mean(image[:5]), np.mean(image[-5:]), np.mean(loaded)
    print(
        f"image run {start:.3f} -> {end:.3f}; VideoFusion from it {first:.3f}; scratch "
        f"{np.mean(scratch[:5]):.3f}"
    )
    assert end < 0.6 * start  # The image run learned something to carry over.
    assert abs(first - end) < 0.35 * (start - end)  # Where the image run ended...
    assert np.mean(scratch[:5]) > end + 0.5 * (start - end)  # ...not where scratch starts.


def test_guidance_zero_and_one_are_the_unconditional_and_conditional_models():
    """Through both generators: guided(w=0) is the null-class prediction, guided(w=1) the
    conditional one, exactly."""
    net = dict(
        channels=8,
        channel_mult=(1,),
        num_res_blocks=1,
        attn_resolutions=(),
        head_dim=8,
        num_groups=4,
        num_classes=3,
        dtype="float32",
        image_size=8,
        zero_init=False,
    )
    model = init.create_model(
        lambda r: vf.VideoFusion(
            UNet2DConfig(**net), UNet3DConfig(**net, temporal_attn_resolutions=(8,)), rngs=r
        ),
        jax.random.key(0),
    )
    z = jax.random.normal(jax.random.key(1), (2, 3, 8, 8, 3))
    t = jnp.array([5, 700])
    cond, null = {"label": jnp.array([0, 2])}, {"label": jnp.array([3, 3])}
    for net, x in ((model.base, z[:, 1]), (model.residual, z)):
        fn = jax.jit(lambda x, t, c, net=net: net(x, t, c))
        conditional, unconditional = fn(x, t, cond), fn(x, t, null)
        assert not np.allclose(conditional, unconditional)  # The class matters.
        np.testing.assert_array_equal(sampling.guided(fn, x, t, cond, null, 1.0), conditional)
        np.testing.assert_array_equal(sampling.guided(fn, x, t, cond, null, 0.0), unconditional)


def test_condition_dropout_uses_the_null_condition():
    config = tiny(**{"data.cond": "class", "model.num_classes": 4})
    batch = {"video": jnp.zeros((64, 1)), "label": jnp.arange(64) % 4}
    config.diffusion.cond_drop_rate = 1.0
    assert set(np.asarray(steps.make_cond(config, batch, jax.random.key(0))["label"])) == {4}
    config.diffusion.cond_drop_rate = 0.5
    dropped = np.asarray(steps.make_cond(config, batch, jax.random.key(0))["label"]) == 4
    assert 10 < dropped.sum() < 54
    text_batch = {"video": jnp.zeros((4, 1)), "text_emb": jnp.ones((4, 2, 3))}
    config.data.cond, config.diffusion.cond_drop_rate = "text", 1.0
    assert not np.any(steps.make_cond(config, text_batch, jax.random.key(0))["text"])


def test_class_and_guidance_scale_change_the_sampled_videos(trained):
    """From the same seeds, under guidance (w = 3), two classes give two different videos; and
    the same class guided (w = 3) and unguided (w = 1) give different videos too."""

    def videos(label, scale):
        fields = {"sampling.label": label, "sampling.guidance_scale": scale}
        out = sample.sample(tiny(**CLASS, **fields), trained)
        assert f"_w{scale:g}_" in out["paths"][0] and f"_label{label}" in out["paths"][0]
        generated = np.load(out["paths"][0][: -len(".gif")] + ".npy").astype(np.float32)
        # The synthetic set: filmstrips of the videos beside as many real clips, one row each.
        png, strips = iio.imread(out["paths"][-1]), samples.filmstrips(generated)
        assert out["paths"][-1].endswith("_beside_real.png")
        assert png.shape == samples.side_by_side(strips, strips).shape
        # The .npy holds float16 values: a pixel may round one level apart.
        assert np.abs(png[:, : strips.shape[1]].astype(int) - strips).max() <= 1
        real = synthetic_law.real_clips(tiny(**CLASS).data, len(generated), generated.shape[1])
        np.testing.assert_array_equal(png[:, -strips.shape[1] :], samples.filmstrips(real))
        return generated

    guided0, guided1, plain0 = videos(0, 3.0), videos(1, 3.0), videos(0, 1.0)
    between_classes = np.abs(guided0 - guided1).mean()
    guided_or_not = np.abs(guided0 - plain0).mean()
    print(f"mean |difference|: class 0 vs 1 {between_classes:.4f}, w 3 vs 1 {guided_or_not:.4f}")
    assert between_classes > 0.02 and guided_or_not > 0.02


def test_long_class_conditional_video_keeps_content_and_changes_motion(trained):
    """Class-conditional, guided (w = 3) long videos of 4 clips sharing one base noise: every
    clip's key frame is the same image (it depends on the base noise alone), a new residual seed
    changes the motion and keeps the content, a new base seed changes the content."""
    saved = json.loads(open(os.path.join(trained, "config.json")).read())
    assert saved["model"]["num_classes"] == 4  # From the data set's four shape classes.

    def long_video(seed, residual_seed):
        fields = {"sampling.num_frames": 16, "sampling.seed": seed, "sampling.label": 2}
        fields.update({"sampling.residual_seed": residual_seed, "sampling.guidance_scale": 3.0})
        fields["sampling.long_method"] = "shared_base"  # The paper's recipe.
        out = sample.sample(tiny(**CLASS, **fields), trained)
        assert out["clips"] == 4 and out["num_frames"] == 16
        measures = out["long_video"]
        assert measures["clip_starts"] == [4, 8, 12]
        assert 0 < measures["boundary_to_within_ratio"]
        # Every clip's key frame is the same image: three repeats per video.
        assert measures["repeated_frames"] >= 3 * out["num_videos"]
        return np.load(out["paths"][0][: -len(".gif")] + ".npy").astype(np.float32)

    a, b, c = long_video(0, 1), long_video(0, 2), long_video(5, 1)
    n, k = 4, 4 // 2
    keys = a[:, k::n]  # [videos, clips, H, W, C]
    np.testing.assert_allclose(keys, np.broadcast_to(keys[:, :1], keys.shape), atol=2e-3)
    np.testing.assert_allclose(b[:, k::n], keys, atol=2e-3)
    others = [i for i in range(16) if i % n != k]
    motion_change = np.abs(a[:, others] - b[:, others]).mean()
    assert motion_change > 1e-3
    content = lambda v: v.mean(axis=1)  # noqa: E731 - the time-averaged frame of each video.
    same_base, new_base = (
        np.abs(content(a) - content(b)).mean(),
        np.abs(content(a) - content(c)).mean(),
    )
    print(f"content change: new residual seed {same_base:.4f}, new base seed {new_base:.4f}")
    assert same_base < 0.5 * new_base


def test_long_video_with_reconstruction_guidance(trained):
    """`sampling.long_guidance` reaches the trained model's continuation clips: the first clip is
    the unguided one, the frames generated after it change, nothing repeats, and the name and
    measures say how the video was made."""

    def long_video(weight):
        fields = {"sampling.num_frames": 5, "sampling.label": 1, "sampling.long_guidance": weight}
        out = sample.sample(tiny(**CLASS, **fields), trained)
        assert out["clips"] == 2 and out["long_video"]["clip_starts"] == [4]
        assert out["long_video"]["repeated_frames"] == 0
        # The synthetic set's law over each whole 5-frame video, beside real 5-frame videos.
        law = out["data_law"]
        assert law["generated"]["num_clips"] == law["real"]["num_clips"] == out["num_videos"]
        assert law["real"]["share"] == 1.0
        return out["paths"][0], np.load(out["paths"][0][: -len(".gif")] + ".npy")

    (plain_path, plain), (guided_path, guided) = long_video(0.0), long_video(2.0)
    assert "_guided2" in guided_path and "_guided" not in plain_path
    plain, guided = plain.astype(np.float32), guided.astype(np.float32)
    np.testing.assert_array_equal(guided[:, :4], plain[:, :4])
    assert np.abs(guided[:, 4:] - plain[:, 4:]).mean() > 1e-3


def test_text_conditioning_end_to_end(tmp_path):
    """Captions -> stored embeddings (a real text encoder, run at prepare time) -> batches ->
    a text-conditioned run -> sampling from prompts."""
    manual = tmp_path / "videos"
    fake_data.write_video_folder(str(manual), per_class=4, num_frames=8, size=(32, 32))
    data = {
        "data.name": "video_folder",
        "data.manual_dir": str(manual),
        "data.data_dir": str(tmp_path / "tfds"),
        "data.cond": "text",
        "data.text_encoder": "minilm",
        "data.text_max_tokens": 6,
        "data.channels": 3,
    }
    # 20 steps (seconds): after 2 the zero-initialised cross-attention and output layers had
    # barely moved, and the two prompts' videos were equal to the float16 of the sample files.
    config = tiny(total_steps=20, checkpoint_every_steps=20, **data)
    stats = data_lib.prepare(config.data)
    assert stats["text"]["dim"] == 384 and stats["text"]["splits"]["train"]["videos"] == 8
    loader = data_lib.create_loader(config.data, global_batch_size=4, seed=0)
    batch = next(loader)
    loader.close()
    assert batch["text_emb"].shape == (4, 6, 384)
    encoder = text.load_encoder("minilm", 6)  # The one prepare used, loaded once.
    captions = [f"a video of {c} number {i}" for c in ("cats", "dogs") for i in range(4)]
    expected = encoder(captions)
    rows = [int(np.argmin(np.abs(expected - e).sum(axis=(1, 2)))) for e in batch["text_emb"]]
    np.testing.assert_allclose(batch["text_emb"], expected[rows], atol=2e-2)  # float16 storage

    workdir = str(tmp_path / "run")
    train.train(config, workdir)
    saved = json.loads(open(os.path.join(workdir, "config.json")).read())
    assert saved["model"]["text_dim"] == 384
    out = sample.sample(tiny(**data, **{"sampling.prompts": "a cat; a dog"}), workdir)
    assert out["prompts"] == ["a cat", "a dog"] and os.path.exists(out["paths"][0])

    # The prompt changes the videos: every video of one prompt, then of the other, same seeds
    # (and the same file name, so each is read before the next sampling writes it).
    def videos(prompt):
        out = sample.sample(tiny(**data, **{"sampling.prompts": prompt}), workdir)
        assert out["prompts"] == [prompt] * out["num_videos"]
        return np.load(out["paths"][0][: -len(".gif")] + ".npy").astype(np.float32)

    cats, dogs = videos("a cat"), videos("a dog")
    print(f"mean |difference| between the prompts' videos: {np.abs(cats - dogs).mean():.5f}")
    assert np.abs(cats - dogs).mean() > 1e-3
    with pytest.raises(ValueError, match="sampling.prompts"):
        sample.sample(tiny(**data), workdir)
