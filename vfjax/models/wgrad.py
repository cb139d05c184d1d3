"""A faster kernel gradient for 2D convolutions on XLA:CPU (a workaround, used only on CPU).

XLA:CPU computes a convolution's kernel gradient several times slower than the convolution
itself. `conv_general_dilated` here is a drop-in for `jax.lax.conv_general_dilated` (what
`nnx.Conv` calls) whose forward pass and input gradient are XLA's own, and whose kernel gradient is
one matmul per kernel tap. GPU and TPU keep the native gradient (`default_conv_impl`).
"""

import functools

import jax
import jax.numpy as jnp


def default_conv_impl() -> str:
    """'matmul_wgrad' on CPU, 'native' on GPU and TPU (where cuDNN / the MXU do it well)."""
    return "matmul_wgrad" if jax.default_backend() == "cpu" else "native"


def _native_conv(lhs, rhs, strides, padding):
    return jax.lax.conv_general_dilated(
        lhs, rhs, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(lhs, rhs, strides, padding):
    return _native_conv(lhs, rhs, strides, padding)


def _conv_fwd(lhs, rhs, strides, padding):
    return _native_conv(lhs, rhs, strides, padding), (lhs, rhs)


def _conv_bwd(strides, padding, res, dy):
    lhs, rhs = res
    _, vjp = jax.vjp(lambda x: _native_conv(x, rhs, strides, padding), lhs)
    (dx,) = vjp(dy)
    # dW[i, j] = sum over batch and output positions of the input window at tap (i, j) times dy.
    padded = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    _, ho, wo, _ = dy.shape
    sh, sw = strides
    taps = []
    for i in range(rhs.shape[0]):
        for j in range(rhs.shape[1]):
            window = jax.lax.slice(
                padded,
                (0, i, j, 0),
                (padded.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, padded.shape[3]),
                (1, sh, sw, 1),
            )
            taps.append(jnp.einsum("nhwc,nhwo->co", window, dy, preferred_element_type=jnp.float32))
    dw = jnp.stack(taps).reshape(rhs.shape).astype(rhs.dtype)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """`lax.conv_general_dilated` for 2D NHWC convolutions with the faster kernel gradient;
    anything else (dilation, groups, string padding, other ranks) goes to XLA unchanged."""
    plain = (lhs_dilation in (None, (1, 1))) and (rhs_dilation in (None, (1, 1)))
    if lhs.ndim != 4 or not plain or feature_group_count != 1 or isinstance(padding, str):
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **kwargs,
        )
    return _conv(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)))
