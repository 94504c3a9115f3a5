"""``exp(x - m)`` for the fused kernels: a polynomial the compiler vectorises, exact to about an ulp.

Cody-Waite reduction ``x - m = n ln2 + r`` with ``|r| <= ln2/2``, a polynomial for ``exp(r)``
whose error is far below half an ulp (minimax for float32, Taylor for float64), and ``2**n`` built
from its bits: 8 or 16 float32 lanes per instruction with AVX2 or AVX-512. ``x - m`` is taken
exactly: its rounding error (Knuth's two-sum) joins the reduced argument, since rounded it would
cost up to half an ulp of ``|x - m|`` in relative error (16 eps at 40). (Rounded, float32's exp
would be about 15 % cheaper; the kernels keep the accuracy.)
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

__all__ = ["EXP_FLAGS", "exp_diff"]

EXP_FLAGS = {"contract"}  # every caller of exp_diff has the same fast-math flags, so that it is inlined

_LN2_HI = 0.693145751953125  # 16 significant bits: n * _LN2_HI is exact for |n| < 2**37 (2**8 in float32)
_LN2_LO = 1.42860682030941723212e-6
_LOG2E = 1.4426950408889634
_SHIFT_F32 = 1.5 * 2.0**23
_SHIFT_F64 = 1.5 * 2.0**52
_SHIFT_F32_BITS = int(np.float32(_SHIFT_F32).view(np.int32))
_SHIFT_F64_BITS = int(np.float64(_SHIFT_F64).view(np.int64))
# 1/k! for k = 13 .. 2: the Taylor tail of exp(r) on |r| <= ln2/2, error below 2**-60 relative.
_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(13, 1, -1))
# float32: exp(r) = 1 + r + r**2 q(r), q of degree 4 fitted for least maximum relative error on
# |r| <= ln2/2 (Lawson's iteration): 2**-28.0, as Taylor's to degree 7 (2**-27.1), one term shorter.
_MINIMAX_F32 = (0.499999982549872, 0.16666520862591622, 0.041667226583712316, 0.008368694320550138, 0.0013879685986756263)


def exp_diff(x, m):  # pragma: no cover - replaced by the overload below inside kernels
    """exp(x - m) for x <= m (or x = -inf, or NaN); exactly 1 at x = m, 0 where it underflows."""
    raise NotImplementedError


@overload(exp_diff, jit_options={"fastmath": EXP_FLAGS})
def _exp_diff(x, m):
    if x == numba.types.float32:
        return _exp_f32
    if x == numba.types.float64:
        return _exp_f64
    return None


def _exp_f32(x, m):
    f = np.float32
    r = x - m
    bb = r - x
    lo = (x - (r - bb)) - (m + bb)  # r + lo == x - m exactly; NaN when x is -inf, unused then
    under = r < f(-104.0)  # exp rounds to 0 below -103.97 (half the least subnormal)
    r = f(-104.0) if under else r  # NaN stays NaN: the comparison is False
    # Adding 1.5 * 2**23 rounds r / ln2 to the integer n, which then sits in the low bits.
    t = r * f(_LOG2E) + f(_SHIFT_F32)
    n = t - f(_SHIFT_F32)
    g = ((r - n * f(_LN2_HI)) - n * f(_LN2_LO)) + lo
    g2 = g * g  # Estrin's scheme: a shorter chain of dependent operations than Horner's
    c = _MINIMAX_F32
    q = (f(c[0]) + g * f(c[1])) + g2 * ((f(c[2]) + g * f(c[3])) + g2 * f(c[4]))
    y = (g2 * q + g) + f(1.0)
    k = np.float32(t).view(np.int32) - _SHIFT_F32_BITS  # n, in [-150, 0]
    # 2**k from its bits: 2**(k + 64) is a normal float for every k here, and 2**k exact even
    # where it is subnormal (k >= -149), so y * 2**k rounds once; it is off the critical path.
    scale = np.int32((k + 127 + 64) << 23).view(np.float32) * f(2.0**-64)
    y = y * scale
    return f(0.0) if under else y


def _exp_f64(x, m):
    r = x - m
    bb = r - x
    lo = (x - (r - bb)) - (m + bb)
    under = r < -746.0  # exp rounds to 0 below -745.13
    r = -746.0 if under else r
    t = r * _LOG2E + _SHIFT_F64
    n = t - _SHIFT_F64
    g = ((r - n * _LN2_HI) - n * _LN2_LO) + lo
    g2 = g * g
    g4 = g2 * g2
    c = _TAYLOR  # 1/13!, 1/12!, ..., 1/2!
    q0 = (c[11] + g * c[10]) + g2 * (c[9] + g * c[8])
    q1 = (c[7] + g * c[6]) + g2 * (c[5] + g * c[4])
    q2 = (c[3] + g * c[2]) + g2 * (c[1] + g * c[0])
    q = q0 + g4 * (q1 + g4 * q2)
    y = (g2 * q + g) + 1.0
    k = np.float64(t).view(np.int64) - _SHIFT_F64_BITS  # n, in [-1077, 0]
    scale = np.int64((k + 1023 + 64) << 52).view(np.float64) * 2.0**-64
    y = y * scale
    return 0.0 if under else y
