"""Model FLOPs of a jitted function, counted from its jaxpr (backend independent).

XLA's cost analysis on GPUs reports 0 FLOPs for cuDNN convolutions, and on any backend it counts
element-wise work too. Model FLOPs (what MFU divides by) are the multiply-adds of matrix products
and convolutions: here they are read off the traced program itself, forward and backward, with
loop bodies multiplied by their trip counts. The count is identical on every backend.
"""

import math

import jax
import numpy as np
from jax.extend import core


def _dot_flops(eqn) -> int:
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    contract = math.prod(lhs.shape[d] for d in lc)
    batch = math.prod(lhs.shape[d] for d in lb)
    lhs_free = math.prod(s for d, s in enumerate(lhs.shape) if d not in lc and d not in lb)
    rhs_free = math.prod(s for d, s in enumerate(rhs.shape) if d not in rc and d not in rb)
    return 2 * batch * contract * lhs_free * rhs_free


def _conv_flops(eqn) -> int:
    rhs = eqn.invars[1].aval
    out = eqn.outvars[0].aval
    dn = eqn.params["dimension_numbers"]
    rhs_spec = dn.rhs_spec  # (out feature, in feature, *spatial)
    kernel_spatial = math.prod(rhs.shape[d] for d in rhs_spec[2:])
    in_features = rhs.shape[rhs_spec[1]]  # already divided by feature_group_count
    return 2 * int(np.prod(out.shape)) * kernel_spatial * in_features


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        if isinstance(value, core.ClosedJaxpr):
            yield value.jaxpr
        elif isinstance(value, core.Jaxpr):
            yield value
        elif isinstance(value, tuple | list):
            for v in value:
                if isinstance(v, core.ClosedJaxpr):
                    yield v.jaxpr
                elif isinstance(v, core.Jaxpr):
                    yield v


def jaxpr_flops(jaxpr) -> int:
    """Matmul and convolution FLOPs of a jaxpr, recursing into calls and loops."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "scan":
            body = eqn.params["jaxpr"].jaxpr
            total += eqn.params["length"] * jaxpr_flops(body)
        elif name == "while":
            # Our loops are fori_loops with static bounds: (lower, upper) are constants.
            trips = _fori_trip_count(eqn)
            total += trips * jaxpr_flops(eqn.params["body_jaxpr"].jaxpr)
        elif name == "cond":
            total += max(jaxpr_flops(b.jaxpr) for b in eqn.params["branches"])
        else:
            total += sum(jaxpr_flops(sub) for sub in _sub_jaxprs(eqn))
    return total


def _fori_trip_count(eqn) -> int:
    """Trip count of a `fori_loop` lowered to `while` (1 if it cannot be read)."""
    n_consts = eqn.params["body_nconsts"] + eqn.params["cond_nconsts"]
    carry = eqn.invars[n_consts:]
    try:
        lower, upper = (int(v.val) for v in carry[:2])
        return max(upper - lower, 0)
    except (AttributeError, TypeError, ValueError):
        return 1


def model_flops(fn, *args, **kwargs) -> int:
    """Matmul + convolution FLOPs of one call of `fn(*args)` (arrays or ShapeDtypeStructs)."""
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return jaxpr_flops(closed.jaxpr)
