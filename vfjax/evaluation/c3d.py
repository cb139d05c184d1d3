"""The C3D UCF-101 classifier of TGANv2's Inception Score code, in pure JAX.

Reproduces ``C3DVersion1UCF101`` of pfnet-research/tgan2 with its release files
``conv3d_deepnetA_ucf.npz`` (Chainer parameters ``conv1a/W`` ... ``fc8/b``) and ``mean2.npz``
(``mean``: the per-frame BGR mean volume [3, 16, H, W], H and W at least 120). Its input
preparation, step by step as that code does it:

1. Videos [B, 16, H, W, 3] in [-1, 1] (the generator's output, clipped).
2. RGB -> BGR and scale by 128 (its fixed 1x1x1 ``pre`` convolution).
3. Resize every frame to 112 x 112 with Chainer's ``F.resize_images`` (bilinear, corners
   aligned). The whole frame is resized; there is no crop of the video, so non-square frames are
   squeezed.
4. Add ``128 - mean[:, :, 8:120, 8:120]``: the mean volume is cropped at offset 8, the video is
   not. With step 2 this maps [-1, 1] to [0, 256] minus the mean.

The network: eight 3x3x3 convolutions (padding 1) with ReLU, max pools of (1, 2, 2) then
(2, 2, 2) with Chainer's ``cover_all`` rounding (pool5 turns 7 x 7 into 4 x 4), fc6/fc7 with ReLU
(dropout is off at inference) and fc8 to the 101 UCF-101 classes. fc6 reads the features in
Chainer's channel-first order.
"""

import jax
import jax.numpy as jnp
import numpy as np

from vfjax import weights as weights_lib
from vfjax.evaluation.features import FeatureNetwork
from vfjax.evaluation.resize import resize_frames

NUM_CLASSES = 101
NUM_FRAMES = 16
INPUT_SIZE = 112
MEAN_CROP_OFFSET = 8

_CONVS = {  # name: (input channels, output channels)
    "conv1a": (3, 64),
    "conv2a": (64, 128),
    "conv3a": (128, 256),
    "conv3b": (256, 256),
    "conv4a": (256, 512),
    "conv4b": (512, 512),
    "conv5a": (512, 512),
    "conv5b": (512, 512),
}
_DENSES = {"fc6": (512 * 4 * 4, 4096), "fc7": (4096, 4096), "fc8": (4096, NUM_CLASSES)}
# The pool that follows each convolution stage (pool1 keeps time, pool5 closes the stack).
_POOL_AFTER = {"conv1a": (1, 2, 2), "conv2a": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2)}


def release_shapes() -> dict[str, tuple[int, ...]]:
    """Array shapes of ``conv3d_deepnetA_ucf.npz`` in Chainer's layout, keyed by npz name."""
    shapes = {}
    for name, (c_in, c_out) in _CONVS.items():
        shapes[f"{name}/W"] = (c_out, c_in, 3, 3, 3)
        shapes[f"{name}/b"] = (c_out,)
    for name, (c_in, c_out) in _DENSES.items():
        shapes[f"{name}/W"] = (c_out, c_in)
        shapes[f"{name}/b"] = (c_out,)
    return shapes


def _max_pool_cover_all(x: jax.Array, window: tuple[int, int, int]) -> jax.Array:
    """Chainer ``max_pooling_nd(x, window)``: stride = window, a partial last window is kept."""
    # ceil(size / k) windows; where the last one sticks out past the end it reads -inf.
    pads = [
        (0, 0),
        *((0, -(-size // k) * k - size) for size, k in zip(x.shape[1:4], window, strict=True)),
        (0, 0),
    ]
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *window, 1), pads)


def prepare_input(mean: jax.Array, videos: jax.Array) -> jax.Array:
    """TGANv2's input preparation: [B, 16, H, W, 3] RGB in [-1, 1] -> demeaned BGR at 112 x 112."""
    if videos.ndim != 5 or videos.shape[1] != NUM_FRAMES or videos.shape[-1] != 3:
        raise ValueError(
            f"C3D takes videos [B, {NUM_FRAMES}, H, W, 3] (its mean volume and fc6 are built for "
            f"{NUM_FRAMES} frames), got {tuple(videos.shape)}."
        )
    bgr = jnp.asarray(videos, jnp.float32)[..., ::-1] * 128.0
    bgr = resize_frames(bgr, (INPUT_SIZE, INPUT_SIZE), "bilinear_align_corners")
    return bgr + (128.0 - mean)


def c3d_logits(params, videos: jax.Array) -> jax.Array:
    """UCF-101 logits (fc8) of [B, 16, H, W, 3] videos in [-1, 1]."""
    x = prepare_input(params["mean"], videos)  # [B, 16, 112, 112, 3]
    for name in _CONVS:
        x = jax.lax.conv_general_dilated(
            x,
            params[name]["kernel"],
            window_strides=(1, 1, 1),
            padding=[(1, 1)] * 3,
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )
        x = jax.nn.relu(x + params[name]["bias"])
        if name in _POOL_AFTER:
            x = _max_pool_cover_all(x, _POOL_AFTER[name])
    x = _max_pool_cover_all(x, (2, 2, 2))  # pool5: [B, 1, 4, 4, 512]
    x = jnp.transpose(x, (0, 4, 1, 2, 3)).reshape(x.shape[0], -1)  # Chainer's NCTHW flattening.
    for name in _DENSES:
        x = jnp.dot(x, params[name]["kernel"], precision="highest") + params[name]["bias"]
        x = jax.nn.relu(x) if name != "fc8" else x
    return x


def c3d_probabilities(params, videos: jax.Array) -> jax.Array:
    """Softmax class probabilities [B, 101], the input of the Inception Score."""
    return jax.nn.softmax(c3d_logits(params, videos), axis=-1)


def params_from_release(arrays: dict[str, np.ndarray], mean: np.ndarray, source: str = "C3D"):
    """Converts the release arrays (Chainer layout) and mean volume to this module's params.

    Args:
        arrays: The arrays of ``conv3d_deepnetA_ucf.npz``.
        mean: The ``mean`` array of ``mean2.npz``, [3, 16, H, W] BGR with H, W >= 120.
        source: File name for error messages.
    """
    for key, shape in release_shapes().items():
        got = None if key not in arrays else tuple(arrays[key].shape)
        if got != shape:
            raise ValueError(
                f"{source} is not the TGANv2 C3D release: {key} is {got}, not {shape}."
            )
    end = MEAN_CROP_OFFSET + INPUT_SIZE
    if mean.ndim != 4 or mean.shape[:2] != (3, NUM_FRAMES) or min(mean.shape[2:]) < end:
        raise ValueError(
            f"mean volume must be [3, {NUM_FRAMES}, >={end}, >={end}], got {mean.shape}."
        )
    params = {"mean": mean[:, :, MEAN_CROP_OFFSET:end, MEAN_CROP_OFFSET:end].transpose(1, 2, 3, 0)}
    for name in _CONVS:
        # Chainer kernels are [C_out, C_in, kT, kH, kW]; ours are [kT, kH, kW, C_in, C_out].
        kernel = arrays[f"{name}/W"].transpose(2, 3, 4, 1, 0)
        params[name] = {"kernel": kernel, "bias": arrays[f"{name}/b"]}
    for name in _DENSES:
        params[name] = {"kernel": arrays[f"{name}/W"].T, "bias": arrays[f"{name}/b"]}
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)


def load_c3d(weights_path: str, mean_path: str) -> FeatureNetwork:
    """Loads TGANv2's UCF-101 C3D: ``load_c3d(...)(videos) -> [B, 101]`` class probabilities.

    Args:
        weights_path: ``conv3d_deepnetA_ucf.npz`` from the TGANv2 release.
        mean_path: ``mean2.npz`` from the same release.
    """
    weights_lib.require_file(weights_path, "C3D weights file (conv3d_deepnetA_ucf.npz)")
    weights_lib.require_file(mean_path, "C3D mean file (mean2.npz)")
    mean_arrays = weights_lib.load_npz(mean_path)
    if "mean" not in mean_arrays:
        raise ValueError(f"{mean_path} has no 'mean' array; is it TGANv2's mean2.npz?")
    params = params_from_release(
        weights_lib.load_npz(weights_path), mean_arrays["mean"], source=weights_path
    )
    files = (weights_path, mean_path)
    return FeatureNetwork(
        params=params,
        apply_fn=c3d_probabilities,
        name="c3d-ucf101-tgan2",
        weights=tuple((p.rsplit("/", 1)[-1], weights_lib.sha256_file(p)) for p in files),
    )
