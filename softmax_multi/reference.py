"""The meaning of every function: one implementation written only against the Python array API standard.

Every backend either uses these functions or must agree with them (the conformance suite checks
it). They take arguments already checked by :mod:`softmax_multi._args`: ``x`` floating, ``axes``
a sorted tuple of non-negative ints, ``where`` None or a boolean array that broadcasts to ``x``,
``b`` None or an array of ``x``'s shape and dtype; ``xp``, the namespace of ``x``, may be given to
skip looking it up. They branch in Python on shapes and dtypes only, never on values, so they
trace under ``jax.jit``, ``jax.vmap``, ``jax.grad`` and ``torch.compile(fullgraph=True)``.

Two things make them accurate on any library:

* **The dominant entry is kept out of the sum.** Each slice is summarised as its max ``m``, the
  number ``k`` of entries equal to it (their total weight, with ``b``) and the sum ``t`` of
  ``exp(x - m)`` over the others, so that ``log(sum(exp(x - m))) = log1p((k - 1) + t)`` keeps
  relative precision when ``t`` is tiny: ``logsumexp([0, -40])`` is ``4.25e-18``, not 0.
* **Sums do not depend on the library's summation order**: unless the backend declares
  ``accurate_sums``, long float32 slices are accumulated in float64 where the library has it, and
  the others as a two-level blocked sum (``_sum``).

NumPy's warnings for ``inf - inf``, ``0/0`` and ``log(0)``, whose results are part of the answer
for non-finite slices, are silenced on every library that computes with NumPy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from array_api_compat import array_namespace

__all__ = ["constant_like", "log_softmax", "logsumexp", "logsumexp_from_stats", "quiet", "shifted", "softmax", "split_at_max"]

Array = Any

# Slices of float32 up to this length are summed by the library as they are: a sequential sum of
# 256 terms errs by at most 256 eps / 2 in the worst case, and in practice by a few eps (measured
# on ndonnx, which sums in order: 2.1 eps at 256, 27.9 eps at 32 000).
SHORT_SUM = 256
# The blocked sum's block length, where float64 is missing: sqrt-sized blocks keep both levels short.
SUM_BLOCK = 256


def quiet(f: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` without NumPy's warnings: inf - inf, 0/0 and log(0) are part of the answers for
    non-finite slices, on any library that computes with NumPy."""

    @functools.wraps(f)
    def silenced(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return f(*args, **kwargs)

    return silenced


@quiet
def softmax(
    x: Array,
    axes: tuple[int, ...],
    where: Array | None = None,
    *,
    xp: Any = None,
    accurate_sums: bool = True,
    guarded: bool = True,
) -> Array:
    """``exp(x - m) / sum(exp(x - m))`` over ``axes``; 0 where ``where`` is False.
    ``guarded``: as for :func:`shifted` (the values do not depend on it).

    Examples
    --------
    >>> import numpy as np
    >>> softmax(np.asarray([5.0, 7.0, 10.0]), (0,)).round(4)
    array([0.0064, 0.0471, 0.9465])
    """
    xp = xp or array_namespace(x)
    if _reduces_nothing(x, axes):
        return x - x  # empty: keeps autograd's graph, where a fresh array would not
    z = shifted(xp, x, axes, where, guarded=guarded)
    e = xp.exp(z)
    y = e / _sum(xp, e, axes, accurate_sums)
    # A fully masked slice divides 0 by 0 above; masked entries are 0 whatever they computed.
    return y if where is None else xp.where(where, y, constant_like(xp, x, 0.0))


@quiet
def log_softmax(
    x: Array,
    axes: tuple[int, ...],
    where: Array | None = None,
    *,
    xp: Any = None,
    accurate_sums: bool = True,
    guarded: bool = True,
) -> Array:
    """``x - m - log(sum(exp(x - m)))`` over ``axes``; -inf where ``where`` is False.

    At the slice's maximum the value is ``-log1p(rest)``, with ``rest`` the sum over the other
    entries: the loss of a confident, right prediction keeps its relative precision.
    ``guarded``: as for :func:`shifted` (the values do not depend on it).

    Examples
    --------
    >>> import numpy as np
    >>> log_softmax(np.asarray([0.0, 0.0]), (0,)).round(4)
    array([-0.6931, -0.6931])
    >>> float(-log_softmax(np.asarray([0.0, -40.0]), (0,))[0])
    4.248354255291589e-18
    """
    xp = xp or array_namespace(x)
    if _reduces_nothing(x, axes):
        return x - x
    z = shifted(xp, x, axes, where, guarded=guarded)
    k, t = split_at_max(xp, z, axes, accurate_sums)
    y = z - xp.log1p((k - 1) + t)
    return y if where is None else xp.where(where, y, constant_like(xp, x, -math.inf))


@quiet
def logsumexp(
    x: Array,
    axes: tuple[int, ...],
    where: Array | None = None,
    keepdims: bool = False,
    b: Array | None = None,
    return_sign: bool = False,
    *,
    xp: Any = None,
    accurate_sums: bool = True,
) -> Array | tuple[Array, Array]:
    """``log(sum(b * exp(x)))`` over ``axes``, without overflow, with SciPy's meaning.

    ``b`` (weights) defaults to 1; entries with ``b == 0`` or ``where`` False take no part.
    Without ``return_sign`` a negative total gives NaN; with it the result is ``(log|total|,
    sign)``, the sign of the total (its phase for complex input). An empty, fully masked or
    all -inf slice gives -inf; a slice holding +inf gives +inf (its sign: that of the weights at
    +inf; NaN if they cancel); NaN gives NaN. Complex ``x`` has a complex result whose imaginary
    part lies in (-pi, pi].

    Examples
    --------
    >>> import numpy as np
    >>> float(logsumexp(np.asarray([0.0, 0.0]), (0,)).round(4))
    0.6931
    >>> [float(v) for v in logsumexp(np.asarray([1.0, 2.0]), (0,), b=np.asarray([1.0, -1.0]), return_sign=True)]
    [1.5413248546129181, -1.0]
    """
    xp = xp or array_namespace(x)
    if _reduces_nothing(x, axes):
        r, sign = _empty_logsumexp(xp, x, axes, return_sign)
    elif xp.isdtype(x.dtype, "complex floating"):
        r, sign = _logsumexp_complex(xp, x, axes, where, b, return_sign, accurate_sums)
    else:
        r, sign = _logsumexp_real(xp, x, axes, where, b, return_sign, accurate_sums)
    if not (keepdims or not axes):
        r = xp.squeeze(r, axis=axes)
        sign = None if sign is None else xp.squeeze(sign, axis=axes)
    return (r, sign) if return_sign else r


def _logsumexp_real(xp, x, axes, where, b, return_sign, accurate):
    zero = constant_like(xp, x, 0.0)
    neg_inf, nan = constant_like(xp, x, -math.inf), constant_like(xp, x, math.nan)
    if where is not None:
        x = xp.where(where, x, neg_inf)  # masked entries: no part in the value nor the gradient
    if b is None:
        xm = x
    else:
        x = xp.where(xp.isnan(b), nan, x)  # a NaN weight makes its slice NaN
        xm = xp.where(b != 0, x, neg_inf)  # zero weights take no part in the max
    m = _max(xp, xm, axes)
    finite = xp.isfinite(m)
    m0 = xp.where(finite, m, zero)
    top = xp.logical_and(xm == m, xm > -math.inf)  # the max's entries (for m = +inf, the +inf ones)
    if b is None:
        k = _count(xp, top, axes, x.dtype)
        terms = xp.exp(xm - m0)
    else:
        k = _sum(xp, xp.where(top, b, zero), axes, True)
        # A zero weight's term is 0, but its derivative with respect to b is exp(x - m0) where x
        # is finite: so its exp is taken too, capped where it would overflow (only an entry of
        # zero weight can lie above m).
        live = xp.where(b != 0, xm, xp.where(xp.isfinite(x), x, neg_inf))
        cap = constant_like(xp, x, math.log(float(xp.finfo(x.dtype).max)) - 1)  # exp(cap) stays finite
        terms = b * xp.exp(xp.minimum(live - m0, cap))
    t = xp.where(finite, _sum(xp, xp.where(top, zero, terms), axes, accurate), zero)
    return logsumexp_from_stats(xp, m, k, t, return_sign)


def logsumexp_from_stats(xp: Any, m: Array, k: Array, t: Array, return_sign: bool) -> tuple[Array, Array | None]:
    """logsumexp, and its sign if ``return_sign``, of real slices from their statistics: the max
    ``m`` of the entries taking part, the weight ``k`` of those equal to it (their number, without
    weights) and ``t``, the weighted sum of ``exp(x - m)`` over the others (any value where ``m``
    is not finite). Without ``return_sign`` a negative total gives NaN.

    The log is taken as ``log1p((sign k - 1) + sign t)``: exact where one entry of weight 1
    dominates; where the weights at the max cancel (``k = 0``), as ``log|t|``. Each branch is fed
    safe values where the other is taken, so that neither puts NaN into a gradient.
    """
    zero, one, nan = constant_like(xp, m, 0.0), constant_like(xp, m, 1.0), constant_like(xp, m, math.nan)
    finite = xp.isfinite(m)
    m0 = xp.where(finite, m, zero)
    t = xp.where(finite, t, zero)
    sign = xp.sign(k + t)
    cancelled = k == 0
    near = xp.log1p(xp.where(cancelled, zero, (sign * k - 1) + sign * t))
    far = xp.log(xp.abs(xp.where(cancelled, t, one)))
    r = m0 + xp.where(cancelled, far, near)
    # Not finite: -inf or NaN as m says, or at m = +inf, +inf with the sign of the weights there
    # (NaN where they cancel).
    r = xp.where(finite, r, xp.where(m == math.inf, xp.where(cancelled, nan, m), m))
    sign = xp.where(finite, sign, xp.where(m == -math.inf, zero, xp.sign(xp.where(xp.isnan(r), r, k))))
    if not return_sign:
        return xp.where(sign < 0, nan, r), None
    return r, sign


def _logsumexp_complex(xp, x, axes, where, b, return_sign, accurate):
    """The real part's max is taken out of the sum, as for real input; where that is not finite
    (complex infinities), ``log(sum(b * exp(x)))`` itself decides, as C99's exp and log say."""
    real = xp.real(x)
    active = None if b is None else b != 0
    if where is not None:
        active = where if active is None else xp.logical_and(active, where)
    rneg_inf = constant_like(xp, real, -math.inf)
    real_active = real if active is None else xp.where(active, real, rneg_inf)
    m = _max(xp, real_active, axes)
    finite = xp.isfinite(m)
    m0 = xp.where(finite, m, constant_like(xp, real, 0.0))
    czero = constant_like(xp, x, 0.0)
    e = xp.exp(x - xp.astype(m0, x.dtype))
    terms = e if b is None else b * e
    if active is not None:
        terms = xp.where(active, terms, czero)
    top = real_active == m
    k = _sum(xp, xp.where(top, terms, czero), axes, True)
    t = _sum(xp, xp.where(top, czero, terms), axes, accurate)
    safe_k = xp.where(k == 0, constant_like(xp, x, 1.0), k)
    careful = xp.where(k == 0, xp.log(t), xp.log(safe_k) + xp.log1p(t / safe_k))
    r = xp.astype(m0, x.dtype) + careful
    # complex infinities and NaN: the plain formula, whose special values follow C99
    direct_terms = xp.exp(x) if b is None else b * xp.exp(x)
    if active is not None:
        direct_terms = xp.where(active, direct_terms, czero)
    direct = _sum(xp, direct_terms, axes, True)
    ok = xp.logical_and(xp.isfinite(xp.real(r)), xp.isfinite(xp.imag(r)))
    if return_sign:
        value = xp.where(ok, xp.real(r), xp.log(xp.abs(direct)))
        phase = xp.exp(xp.astype(_wrap_angle(xp, xp.imag(r)), x.dtype) * 1j)
        return value, xp.where(ok, phase, xp.sign(direct))
    wrapped = xp.real(r) + xp.astype(_wrap_angle(xp, xp.imag(r)), x.dtype) * 1j
    return xp.where(ok, wrapped, xp.log(direct)), None


def _wrap_angle(xp: Any, a: Array) -> Array:
    """``a`` brought into (-pi, pi] by whole turns; values already there are kept as they are."""
    turns = xp.ceil((a - math.pi) / (2 * math.pi))
    inside = xp.logical_and(a > -math.pi, a <= math.pi)
    return xp.where(inside, a, a - turns * (2 * math.pi))


def _empty_logsumexp(xp: Any, x: Array, axes: tuple[int, ...], return_sign: bool) -> tuple[Array, Array | None]:
    """-inf for every empty slice, with SciPy's signs (-1, or NaN for complex input). The results
    are computed from ``x`` (a sum of nothing), so that autograd keeps its graph."""
    s = _sum(xp, x, axes, True)  # zeros of the result's shape
    r = s + (-math.inf)
    if not return_sign:
        return r, None
    if xp.isdtype(x.dtype, "complex floating"):
        return xp.real(r), s + complex(math.nan, math.nan)
    return r, s - 1


def shifted(xp: Any, x: Array, axes: tuple[int, ...], where: Array | None, *, guarded: bool = True) -> Array:
    """``x - max(x)`` over the unmasked entries; masked entries become -inf.

    ``guarded``: a slice whose max is -inf (all -inf, or fully masked) is shifted by 0, so that
    its entries stay -inf (exp 0) instead of becoming -inf - (-inf) = NaN. softmax and
    log_softmax are NaN on such a slice either way (0 / 0, and -inf - (-inf) at the end) and set
    its masked entries after, so their values do not depend on it; a derivative written with the
    exps, or a sum of them (logsumexp: -inf there), does. Unguarded, XLA on CPU fuses the max,
    the shift and the exp into one pass, as in jax.nn.softmax; the select of the guard keeps the
    max in a pass of its own.
    """
    if where is not None:
        x = xp.where(where, x, constant_like(xp, x, -math.inf))
    m = _max(xp, x, axes)
    if guarded:
        m = xp.where(m == -math.inf, constant_like(xp, x, 0.0), m)
    return x - m


def split_at_max(xp: Any, z: Array, axes: tuple[int, ...], accurate: bool) -> tuple[Array, Array]:
    """``(k, t)`` of ``z = x - max`` over ``axes`` (kept): ``k`` the entries at the max (z = 0,
    whose exp is exactly 1), ``t`` the sum of ``exp(z)`` over the others.

    Entries are told apart by arithmetic, not by a comparison: ``below = min(1, -z / gap)`` is 1
    below the max and 0 at it, and each entry adds ``exp(z) * below`` to ``t`` and ``1 - below``
    to ``k``. An entry within ``gap`` (a quarter of an eps) of the max, whose exp rounds to 1, is
    shared between the two, which still add up to its exp. Written so, XLA on CPU fuses each sum
    with the exp into one vectorised pass (a comparison and a select in it made a full-size
    temporary and a slower loop: 2-3x the time of ``jax.nn.log_softmax``, measured). Libraries
    that run each operation as a pass of its own (NumPy's ufuncs, Dask) make three passes more
    than with the comparison; the NumPy backend has its own kernels and ufunc path.
    """
    scale = 4 / float(xp.finfo(z.dtype).eps)  # 1 / gap: 2**25 for float32, finite in every dtype
    below = xp.minimum(constant_like(xp, z, 1.0), z * constant_like(xp, z, -scale))
    t = _sum(xp, xp.exp(z) * below, axes, accurate)
    # 1 - below, as halves: its own constants, so that XLA does not share one full-size array of
    # ones between this sum and t's (measured: a materialised broadcast, 2.5x slower)
    half = xp.maximum(constant_like(xp, z, 0.0), constant_like(xp, z, 0.5) + z * constant_like(xp, z, scale / 2))
    k = 2 * xp.sum(half, axis=axes, keepdims=True)
    return k, t


def _max(xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
    return xp.max(x, axis=axes, keepdims=True) if axes else x


def _count(xp: Any, mask: Array, axes: tuple[int, ...], dtype: Any) -> Array:
    """How many entries of the boolean ``mask`` are set along ``axes`` (kept), as ``dtype``: summed
    as integers, exact in any order, where a float sum would take the accurate (and, on JAX, the
    pairwise) path for nothing."""
    # int32 throughout: a sum's default integer dtype (int64) is missing on some devices
    return xp.astype(xp.sum(xp.astype(mask, xp.int32), axis=axes, keepdims=True, dtype=xp.int32), dtype)


def _sum(xp: Any, x: Array, axes: tuple[int, ...], accurate: bool) -> Array:
    """Sum over ``axes``, keeping them. Slices longer than SHORT_SUM on a library whose sums are not
    known to be accurate: float32 accumulated in float64, float64 (or float32 without float64) as a
    blocked sum."""
    if not axes:
        return x
    if accurate or not xp.isdtype(x.dtype, ("real floating", "complex floating")):
        return xp.sum(x, axis=axes, keepdims=True)
    n = math.prod([x.shape[a] for a in axes])
    if n <= SHORT_SUM:
        return xp.sum(x, axis=axes, keepdims=True)
    wide = {getattr(xp, "float32", None): "float64", getattr(xp, "complex64", None): "complex128"}.get(x.dtype)
    if wide is not None and _has_dtype(xp, getattr(xp, wide, None)):
        return xp.astype(xp.sum(x, axis=axes, keepdims=True, dtype=getattr(xp, wide)), x.dtype)
    return _blocked_sum(xp, x, axes, n)


def _blocked_sum(xp: Any, x: Array, axes: tuple[int, ...], n: int) -> Array:
    """Sum of each slice as sums of SUM_BLOCK-long blocks, then of the blocks' sums: its error
    grows with SUM_BLOCK + n / SUM_BLOCK terms, not n, whatever order the library adds in."""
    kept = [i for i in range(x.ndim) if i not in axes]
    rows = xp.reshape(xp.permute_dims(x, (*kept, *axes)), (*(x.shape[i] for i in kept), n))
    pad = -n % SUM_BLOCK
    if pad:
        rows = xp.concat([rows, xp.zeros((*rows.shape[:-1], pad), dtype=x.dtype, device=_device(x))], axis=-1)
    blocks = xp.reshape(rows, (*rows.shape[:-1], (n + pad) // SUM_BLOCK, SUM_BLOCK))
    total = xp.sum(xp.sum(blocks, axis=-1), axis=-1)
    return xp.reshape(total, tuple(1 if i in axes else s for i, s in enumerate(x.shape)))


def _has_dtype(xp: Any, dtype: Any) -> bool:
    if dtype is None:
        return False
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None:
        return True
    try:
        return dtype in info().dtypes(kind=("real floating", "complex floating")).values()
    except Exception:  # an incomplete inspection API: assume the standard's float64
        return True


def constant_like(xp: Any, x: Array, value: float) -> Array:
    """``value`` as a 0-d array of ``x``'s dtype, on ``x``'s device (for where() and friends)."""
    return xp.asarray(value, dtype=x.dtype, device=_device(x))


def _device(x: Array) -> Any:
    """The standard ``x.device``; None for arrays without one (JAX tracers: the trace decides)."""
    return getattr(x, "device", None)


def _reduces_nothing(x: Array, axes: tuple[int, ...]) -> bool:
    """True when the slices are empty: some reduced axis has length 0 (known from the shape)."""
    return any(x.shape[a] == 0 for a in axes)
