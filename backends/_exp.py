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

__all__ = ["EXP_FLAGS", "exp_diff", "log1p_f64"]

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


# log1p, vectorisable, for the kernels' per-row constants: log(1 + u) for u >= 0 and finite.
_SQRT2 = math.sqrt(2.0)
# 1 / (2k + 1) for k = 10 .. 1: 2 atanh(s) = 2 s (1 + s**2/3 + s**4/5 + ...), |s| <= 0.1716 after
# the reduction below; eleven terms leave a truncation error under 2**-56 relative.
_ATANH = tuple(1.0 / (2 * k + 1) for k in range(10, 0, -1))


def log1p_f64(u):  # pragma: no cover - replaced by the overload below inside kernels
    """log(1 + u) for finite u >= 0 in float64, to a few ulp, and vectorisable (a libm call per
    row cost more than a short row's whole softmax)."""
    raise NotImplementedError


@overload(log1p_f64, jit_options={"fastmath": EXP_FLAGS})
def _log1p_f64(u):
    return _log1p


def _log1p(u):
    w = 1.0 + u
    bits = np.float64(w).view(np.int64)
    e = (bits >> 52) - 1023
    m = np.int64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000).view(np.float64)  # w = m 2**e, m in [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m  # m in [sqrt(1/2), sqrt(2)): log m = 2 atanh((m - 1) / (m + 1))
    e = e + 1 if big else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    c = _ATANH  # 1/21, 1/19, ..., 1/3
    z2 = z * z
    z4 = z2 * z2
    p0 = (c[9] + z * c[8]) + z2 * (c[7] + z * c[6])  # Estrin's scheme, written out: 1/3 + z/5 + ...
    p1 = (c[5] + z * c[4]) + z2 * (c[3] + z * c[2])
    p2 = c[1] + z * c[0]
    p = p0 + z4 * (p1 + z4 * p2)
    log_m = 2.0 * s + 2.0 * s * (z * p)
    ef = np.float64(e)
    log_w = ef * _LN2_HI + (log_m + ef * _LN2_LO)
    # Kahan's correction: log1p(u) = log(w) u / (w - 1), which cancels the rounding of 1 + u.
    return u if w == 1.0 else log_w * (u / (w - 1.0))
