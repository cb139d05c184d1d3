"""TGANv2's C3D on generated release files: loader, shapes, and an independent PyTorch twin."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from vfjax.evaluation import c3d

# Names and Chainer shapes of conv3d_deepnetA_ucf.npz, as C3DVersion1UCF101 declares them.
_RELEASE = {
    **{
        f"{name}/W": (c_out, c_in, 3, 3, 3)
        for name, c_in, c_out in [
            ("conv1a", 3, 64),
            ("conv2a", 64, 128),
            ("conv3a", 128, 256),
            ("conv3b", 256, 256),
            ("conv4a", 256, 512),
            ("conv4b", 512, 512),
            ("conv5a", 512, 512),
            ("conv5b", 512, 512),
        ]
    },
    "fc6/W": (4096, 8192),
    "fc7/W": (4096, 4096),
    "fc8/W": (101, 4096),
}
_RELEASE.update({key.replace("/W", "/b"): (shape[0],) for key, shape in list(_RELEASE.items())})


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Random arrays under the release's names and shapes, written as the two .npz files."""
    rng = np.random.default_rng(0)
    arrays = {}
    for key, shape in _RELEASE.items():
        fan_in = int(np.prod(shape[1:])) if key.endswith("/W") else 1
        scale = np.sqrt(2.0 / fan_in) if key.endswith("/W") else 0.01
        arrays[key] = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)
    arrays["conv1a/W"] /= 100.0  # Inputs are in [0, 256] minus the mean, not unit scale.
    mean = rng.uniform(80, 110, size=(3, 16, 128, 171)).astype(np.float32)
    folder = tmp_path_factory.mktemp("c3d")
    np.savez(folder / "conv3d_deepnetA_ucf.npz", **arrays)
    np.savez(folder / "mean2.npz", mean=mean)
    return folder, arrays, mean


def _videos(batch, height, width):
    rng = np.random.default_rng(1)
    return rng.uniform(-1, 1, (batch, 16, height, width, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def network(release):
    folder, _, _ = release
    return c3d.load_c3d(str(folder / "conv3d_deepnetA_ucf.npz"), str(folder / "mean2.npz"))


@pytest.fixture(scope="module")
def logits(network):
    """One jitted forward pass on non-square frames, shared by the tests (C3D is heavy on CPU)."""
    return np.asarray(jax.jit(c3d.c3d_logits)(network.params, _videos(1, 72, 96)))


def test_loads_release_files_and_outputs_probabilities(network, logits):
    assert network.name == "c3d-ucf101-tgan2"
    assert [f for f, _ in network.weights] == ["conv3d_deepnetA_ucf.npz", "mean2.npz"]
    assert network.params["fc6"]["kernel"].shape == (8192, 4096)
    assert network.params["mean"].shape == (16, 112, 112, 3)
    assert logits.shape == (1, 101) and np.isfinite(logits).all()
    probs = jax.eval_shape(network, jax.ShapeDtypeStruct((2, 16, 64, 80, 3), np.float32))
    assert probs.shape == (2, 101)
    with pytest.raises(ValueError, match="16 frames"):
        network(_videos(1, 64, 64)[:, :9])


def test_input_preparation_steps(release):
    _, arrays, _ = release
    # A positional mean (value 1000 * row + column) shows the crop offset; colour constants show
    # the RGB -> BGR swap and the [-1, 1] -> [0, 256] scale.
    rows, cols = np.meshgrid(np.arange(128), np.arange(171), indexing="ij")
    mean = np.broadcast_to(1000.0 * rows + cols, (3, 16, 128, 171)).astype(np.float32)
    params = c3d.params_from_release(arrays, mean)
    videos = np.broadcast_to(np.array([-1.0, 0.0, 0.5], np.float32), (1, 16, 30, 40, 3))
    prepared = np.asarray(c3d.prepare_input(params["mean"], videos))
    assert prepared.shape == (1, 16, 112, 112, 3)
    i, j = 5, 70
    expected_mean = 1000.0 * (i + 8) + (j + 8)
    np.testing.assert_allclose(prepared[0, 3, i, j], np.array([192.0, 128.0, 0.0]) - expected_mean)


def test_rejects_files_that_are_not_the_release(release, tmp_path):
    _, arrays, mean = release
    broken = dict(arrays)
    broken["fc6/W"] = broken["fc6/W"][:, :100]
    with pytest.raises(ValueError, match="fc6/W"):
        c3d.params_from_release(broken, mean)
    with pytest.raises(ValueError, match="mean volume"):
        c3d.params_from_release(arrays, mean[:, :, :100, :100])
    np.savez(tmp_path / "mean2.npz", average=mean)
    with pytest.raises(ValueError, match="no 'mean' array"):
        c3d.load_c3d(str(release[0] / "conv3d_deepnetA_ucf.npz"), str(tmp_path / "mean2.npz"))
    with pytest.raises(FileNotFoundError, match="mean2.npz"):
        c3d.load_c3d(str(release[0] / "conv3d_deepnetA_ucf.npz"), str(tmp_path / "missing.npz"))


def _torch_c3d_logits(arrays, mean, videos):
    """TGANv2's Chainer forward pass written in PyTorch, on the release layout as is."""
    import torch
    import torch.nn.functional as F

    w = {k: torch.from_numpy(v) for k, v in arrays.items()}
    x = torch.from_numpy(videos).permute(0, 4, 1, 2, 3).flip(1) * 128.0  # [B, BGR, T, H, W]
    b, c, t, h, width = x.shape
    x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, width)
    x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=True)
    x = x.reshape(b, t, c, 112, 112).permute(0, 2, 1, 3, 4)
    x = x + (128.0 - torch.from_numpy(np.ascontiguousarray(mean[:, :, 8:120, 8:120])))
    pools = {"conv1a": (1, 2, 2), "conv2a": 2, "conv3b": 2, "conv4b": 2, "conv5b": 2}
    for name in ("conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"):
        x = F.relu(F.conv3d(x, w[f"{name}/W"], w[f"{name}/b"], padding=1))
        if name in pools:  # Chainer's cover_all pooling is PyTorch's ceil_mode.
            x = F.max_pool3d(x, pools[name], ceil_mode=True)
    x = x.flatten(1)
    x = F.relu(F.linear(x, w["fc6/W"], w["fc6/b"]))
    x = F.relu(F.linear(x, w["fc7/W"], w["fc7/b"]))
    return F.linear(x, w["fc8/W"], w["fc8/b"]).numpy()


def test_matches_an_independent_pytorch_forward(release, logits):
    _, arrays, mean = release
    want = _torch_c3d_logits(arrays, mean, _videos(1, 72, 96))
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_lowers_with_the_batch_sharded_over_an_explicit_mesh(release):
    _, arrays, mean = release
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    params = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=NamedSharding(mesh, PartitionSpec())
        ),
        c3d.params_from_release(arrays, mean),
    )
    videos = jax.ShapeDtypeStruct(
        (8, 16, 64, 64, 3),
        np.float32,
        sharding=NamedSharding(mesh, PartitionSpec(("data", "fsdp"))),
    )
    # Tracing under explicit sharding catches ops that cannot keep the batch split (compute-free).
    out = jax.jit(c3d.c3d_probabilities).trace(params, videos).out_info
    assert out.shape == (8, 101)
