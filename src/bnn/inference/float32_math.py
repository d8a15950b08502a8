r"""``exp``, ``log`` and ``log1p`` in float32 that LLVM vectorises inside Numba loops.

Numba compiles ``math.exp`` and ``math.log`` in a loop to one call of the C
library per element: without Intel's SVML (not installed here) a loop that
calls them stays scalar. NumPy's own SIMD ufuncs are vectorised but make one
pass over memory each, and NumPy's float32 ``log1p`` is scalar on AVX2. The
functions here are polynomials and integer operations on the float's bits, so
the fused weights loop (:func:`bnn.inference.kernels.draw_weights`) computes
softplus, sigmoid and :math:`\log\sigma` in one vectorised pass.

Each is accurate to a few float32 ulps on its domain; ``tests/unit/inference/
test_float32_math.py`` checks them against float64 NumPy over their whole range.
They assume ``fastmath`` loops with finite inputs, as the ADVI kernels have.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

_f32 = np.float32
_ZERO, _HALF, _ONE, _TWO = _f32(0), _f32(0.5), _f32(1), _f32(2)

# exp: x = n ln2 + r with |r| <= ln2 / 2; ln2 split so that n * _LN2_HIGH is exact.
_LOG2_E = _f32(1 / math.log(2))
_LN2_HIGH, _LN2_LOW = _f32(0.693359375), _f32(math.log(2) - 0.693359375)
_EXP_TAYLOR = tuple(_f32(1 / math.factorial(k)) for k in range(8))  # error < 5e-9 at |r| = 0.35
# Below this exp underflows to zero in float32 (its smallest subnormal is 2^-149).
_EXP_FLOOR = _f32(-104)

# log(x) = 2 atanh(t), t = (x - 1) / (x + 1): the odd series in t.
_ATANH_SERIES = tuple(_f32(1 / (2 * k + 1)) for k in range(9))
_LN2 = _f32(math.log(2))
_SQRT2 = _f32(math.sqrt(2))
_SMALLEST_NORMAL = _f32(np.finfo(np.float32).tiny)

_inline = numba.njit(fastmath=True, error_model="numpy", inline="always", cache=True)


@intrinsic
def float_bits(typingctx, value):
    """The IEEE bits of a float32 as an int32 (a bitcast, free in a vector register)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return types.int32(types.float32), codegen


@intrinsic
def bits_float(typingctx, bits):
    """The float32 whose IEEE bits are the low 32 bits of an integer."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = args[0]
        if bits.bitwidth > 32:
            low = builder.trunc(low, context.get_value_type(types.int32))
        return builder.bitcast(low, context.get_value_type(types.float32))

    return types.float32(bits), codegen


@_inline
def exp_nonpositive(x):
    """``exp(x)`` for float32 ``x <= 0``, subnormal results included."""
    x = max(x, _EXP_FLOOR)
    n = np.floor(x * _LOG2_E + _HALF)
    r = (x - n * _LN2_HIGH) - n * _LN2_LOW
    c0, c1, c2, c3, c4, c5, c6, c7 = _EXP_TAYLOR
    p = ((((((c7 * r + c6) * r + c5) * r + c4) * r + c3) * r + c2) * r + c1) * r + c0
    # 2^n in two normal factors, so that n down to -150 gives subnormals, not garbage.
    whole = np.int32(n)
    half = whole >> 1
    return p * bits_float((half + 127) << 23) * bits_float((whole - half + 127) << 23)


@_inline
def log1p_unit(x):
    """``log(1 + x)`` for float32 ``x`` in [0, 1], exact near 0 (1 + x is never formed)."""
    t = x / (_TWO + x)  # in [0, 1/3]
    t2 = t * t
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = _ATANH_SERIES
    p = ((((((a8 * t2 + a7) * t2 + a6) * t2 + a5) * t2 + a4) * t2 + a3) * t2 + a2) * t2 + a1
    return _TWO * t * (p * t2 + a0)


@_inline
def log_normal(x):
    """``log(x)`` for a positive, normal (not subnormal) float32 ``x``."""
    bits = float_bits(x)
    exponent = ((bits >> 23) & 0xFF) - 127
    mantissa = bits_float((bits & 0x7FFFFF) | 0x3F800000)  # in [1, 2)
    high = mantissa > _SQRT2  # fold to [sqrt(1/2), sqrt(2)]: t stays under 0.172
    mantissa = mantissa * _HALF if high else mantissa
    exponent = exponent + 1 if high else exponent
    t = (mantissa - _ONE) / (mantissa + _ONE)
    t2 = t * t
    a0, a1, a2, a3, a4, a5 = _ATANH_SERIES[:6]
    p = (((a5 * t2 + a4) * t2 + a3) * t2 + a2) * t2 + a1
    return _f32(exponent) * _LN2 + _TWO * t * (p * t2 + a0)


@_inline
def softplus_sigmoid_log(rho):
    r"""``softplus(rho)``, ``sigmoid(rho)`` and ``log softplus(rho)`` of a float32.

    Softplus in the overflow-free form :math:`\max(\rho, 0) + \log(1 + e^{-|\rho|})`.
    Where softplus is subnormal (:math:`\rho < -87`) its log is :math:`\rho` itself:
    there :math:`\mathrm{softplus}(\rho) = e^{\rho}(1 + O(e^{\rho}))`.
    """
    e = exp_nonpositive(-abs(rho))
    sigma = max(rho, _ZERO) + log1p_unit(e)
    slope = (_ONE if rho >= _ZERO else e) / (_ONE + e)
    log_sigma = log_normal(sigma) if sigma >= _SMALLEST_NORMAL else rho
    return sigma, slope, log_sigma


# sin and cos on [-pi/4, pi/4]: Taylor series, errors under 2e-9.
_SIN_TAYLOR = tuple(_f32((-1) ** k / math.factorial(2 * k + 1)) for k in range(5))
_COS_TAYLOR = tuple(_f32((-1) ** k / math.factorial(2 * k)) for k in range(6))
_TWO_PI = _f32(2 * math.pi)
_QUARTER = _f32(0.25)


@_inline
def cos_sin_turns(u):
    """``(cos 2πu, sin 2πu)`` for float32 ``u`` in [0, 1]: one quarter-turn reduction, exact."""
    quadrant = np.floor(u * _f32(4) + _HALF)
    x = (u - quadrant * _QUARTER) * _TWO_PI  # u - quadrant/4 is exact: in [-pi/4, pi/4]
    x2 = x * x
    s0, s1, s2, s3, s4 = _SIN_TAYLOR
    sin_x = x * ((((s4 * x2 + s3) * x2 + s2) * x2 + s1) * x2 + s0)
    c0, c1, c2, c3, c4, c5 = _COS_TAYLOR
    cos_x = ((((c5 * x2 + c4) * x2 + c3) * x2 + c2) * x2 + c1) * x2 + c0
    # Rotate by quadrant quarter-turns: (cos, sin) -> (-sin, cos) each.
    turns = np.int32(quadrant) & 3
    odd = (turns & 1) == 1
    cos_a = sin_x if odd else cos_x
    sin_a = cos_x if odd else sin_x
    cos_a = -cos_a if ((turns + 1) & 2) != 0 else cos_a
    sin_a = -sin_a if (turns & 2) != 0 else sin_a
    return cos_a, sin_a
