"""The truth every backend is measured against: the semantics table, slice by slice, in higher precision.

Written independently of :mod:`softmax_multi.reference`: a plain loop over slices in NumPy's
``longdouble`` (80-bit extended precision on x86-64, 64-bit mantissa), spelling out each row of
the semantics table. Slow and obvious on purpose.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "GRADIENT_TOLERANCE_ULPS",
    "ROUNDED_TOLERANCE_ULPS",
    "TOLERANCE_ULPS",
    "assert_close",
    "cross_entropy",
    "cross_entropy_gradient",
    "finfo",
    "log_softmax",
    "logsumexp",
    "softmax",
    "ulp_error",
]

# Largest error allowed, in units of the result dtype's eps (relative error for softmax and
# logsumexp, absolute error scaled by max(1, |y|) for log_softmax). One place, shown in reports.
TOLERANCE_ULPS = {"float16": 4.0, "bfloat16": 4.0, "float32": 16.0, "float64": 16.0, "complex64": 16.0, "complex128": 16.0}
# Largest float32 gradient error, in eps of the largest weight: a gradient is a sum over the slice
# of products of values each within TOLERANCE_ULPS, so it may carry a few of their errors.
GRADIENT_TOLERANCE_ULPS = 64.0
# float16 and bfloat16 results are computed in float32 and rounded once: within one ulp of their
# own dtype from the exact value (float32's error is far below half of theirs).
ROUNDED_TOLERANCE_ULPS = 1.0


def _slices(x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None, work: type = np.longdouble):
    """x and its mask as (rows, n): every reduced axis moved to the end and flattened."""
    x = np.asarray(x, dtype=work)
    mask = np.ones(x.shape, bool) if where is None else np.broadcast_to(np.asarray(where, bool), x.shape)
    keep = [a for a in range(x.ndim) if a not in axes]
    order = keep + list(axes)
    n = math.prod(x.shape[a] for a in axes)
    kept_shape = tuple(x.shape[a] for a in keep)
    count = math.prod(kept_shape)
    rows = np.transpose(x, order).reshape(count, n) if x.ndim else x.reshape(1, 1)
    masks = np.transpose(mask, order).reshape(count, n) if x.ndim else mask.reshape(1, 1)
    return rows, masks, order, kept_shape


def _restore(rows: np.ndarray, x_shape: tuple[int, ...], order: list[int]) -> np.ndarray:
    if not x_shape:
        return rows.reshape(())
    full = rows.reshape(tuple(x_shape[a] for a in order))
    return np.transpose(full, np.argsort(order))


def _row_lse(v: np.ndarray) -> np.longdouble:
    """logsumexp of the unmasked values of one slice, by the table."""
    return _row_lse_weighted(v, None, v.size == 0)[0]


def _row_lse_weighted(v: np.ndarray, w: np.ndarray | None, empty: bool) -> tuple[np.longdouble, np.longdouble]:
    """``(log|sum(w exp(v))|, sign)`` of one slice's active values (unmasked, weight not 0), by
    the table and SciPy's signs; the max's entries are kept out of the sum, so that the log is
    taken as ``log1p`` of what they leave (relative precision where one entry dominates)."""
    ld = np.longdouble
    if w is None:
        w = np.ones_like(v)
    if empty:  # a slice of no entries at all: SciPy's sign -1
        return ld(-np.inf), ld(-1.0)
    if v.size == 0 or np.all(v == -np.inf):  # nothing active, or all -inf: sign 0
        return ld(-np.inf), ld(0.0)
    if np.any(np.isnan(v)) or np.any(np.isnan(w)):
        return ld(np.nan), ld(np.nan)
    if np.any(v == np.inf):
        k = np.sum(w[v == np.inf])
        return (ld(np.inf), np.sign(k)) if k != 0 and np.isfinite(k) else (ld(np.nan), ld(np.nan))
    m = v.max()
    top = v == m
    k = np.sum(w[top])
    t = np.sum(w[~top] * np.exp(v[~top] - m))
    sign = np.sign(k + t)
    with np.errstate(divide="ignore"):  # log(0) = -inf: a total of exactly 0
        if k == 0:
            return m + np.log(np.abs(t)), sign
        return m + np.log1p((sign * k - 1) + sign * t), sign


def _row_lse_complex(v: np.ndarray, w: np.ndarray | None, empty: bool) -> tuple[np.clongdouble, np.clongdouble]:
    """The same for complex values (extended precision): the entry of largest real part kept out
    of the sum; where that is not finite, ``log(sum(w exp(v)))`` itself, as C99 says."""
    cld = np.clongdouble
    w = np.ones_like(v) if w is None else w
    if empty:
        return cld(-np.inf), cld(complex(np.nan, np.nan))
    with np.errstate(all="ignore"):
        direct = np.sum(w * np.exp(v)) if v.size else cld(0)
        value = None
        if v.size and np.all(np.isfinite(v)):
            m = v.real.max()
            top = v.real == m
            k = np.sum(w[top] * np.exp(v[top] - m))
            t = np.sum(w[~top] * np.exp(v[~top] - m))
            value = m + (np.log(t) if k == 0 else np.log(k) + np.log1p(t / k))
        if value is None or not np.isfinite(value):
            return np.log(direct), direct / np.abs(direct) if direct != 0 else cld(0)
    angle = value.imag
    if not -np.pi < angle <= np.pi:
        angle = angle - 2 * np.pi * np.ceil((angle - np.pi) / (2 * np.pi))
    return cld(complex(value.real, angle)), np.exp(cld(1j) * angle)


def _rowwise(x, axes, where, row_fn):
    x = np.asarray(x)
    axes = tuple(sorted(a % x.ndim for a in axes)) if x.ndim else ()
    rows, masks, order, _ = _slices(x, axes, where)
    out = np.empty_like(rows)
    for i, (row, mask) in enumerate(zip(rows, masks)):
        out[i] = row_fn(row, mask)
    return _restore(out, x.shape, order)


def softmax(x, axes, where=None) -> np.ndarray:
    """Softmax by the table, in long double: 0 at masked entries; NaN for a slice with NaN or +inf."""

    def row(r, mask):
        v = r[mask]
        out = np.zeros_like(r)
        lse = _row_lse(v)
        if v.size == 0:
            return out
        if not np.isfinite(lse):  # NaN, +inf, or all -inf
            out[mask] = np.nan
        else:
            # exp(v - m) / s, not exp(v - lse): near the float32/float64 maximum, lse = m + log(s)
            # rounds to m even in long double, while v - m stays exact.
            m = v.max()
            e = np.exp(v - m)
            out[mask] = e / e.sum()
        return out

    return _rowwise(x, axes, where, row)


def log_softmax(x, axes, where=None) -> np.ndarray:
    """log_softmax by the table, in long double: -inf at masked entries and for a fully masked slice."""

    def row(r, mask):
        v = r[mask]
        out = np.full_like(r, -np.inf)
        lse = _row_lse(v)
        if v.size == 0:
            return out
        if not np.isfinite(lse):
            out[mask] = np.nan
        else:
            # as in softmax: never v - lse; and log1p of the sum but for one max entry, whose own
            # value, -log1p(rest), keeps its relative precision
            m = v.max()
            rest = np.exp(v - m)
            rest[np.argmax(v)] = 0
            out[mask] = (v - m) - np.log1p(np.sum(rest))
        return out

    return _rowwise(x, axes, where, row)


def logsumexp(x, axes, where=None, keepdims=False, b=None, return_sign=False):
    """logsumexp by the table and SciPy's meaning, in extended precision: -inf for an empty or fully
    masked slice; weights ``b`` of ``x``'s shape; ``(value, sign)`` with ``return_sign``."""
    x = np.asarray(x)
    axes = tuple(sorted(a % x.ndim for a in axes)) if x.ndim else ()
    is_complex = np.iscomplexobj(x) or (b is not None and np.iscomplexobj(b))
    work = np.clongdouble if is_complex else np.longdouble
    rows, masks, _, kept_shape = _slices(x.astype(work), axes, where, work)
    weights = None if b is None else _slices(np.broadcast_to(np.asarray(b), x.shape).astype(work), axes, None, work)[0]
    empty = any(x.shape[a] == 0 for a in axes)
    row_fn = _row_lse_complex if is_complex else _row_lse_weighted
    values, signs = [], []
    for i, (r, m) in enumerate(zip(rows, masks)):
        w = None if weights is None else weights[i]
        active = m if w is None else m & (w != 0)
        value, sign = row_fn(r[active], None if w is None else w[active], empty)
        values.append(value)
        signs.append(sign)
    value = np.array(values, dtype=work).reshape(kept_shape)
    sign = np.array(signs, dtype=work).reshape(kept_shape)
    if return_sign and is_complex:
        value = value.real
    if keepdims:
        shape = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
        value, sign = value.reshape(shape), sign.reshape(shape)
    if return_sign:
        return value, sign
    if not is_complex:  # a negative total (not the -1 that SciPy gives an empty slice) has no log
        value = np.where((sign < 0) & (value != -np.inf), np.longdouble(np.nan), value)
    return value


def finfo(dtype_name: str):
    """``finfo`` of a dtype by name, bfloat16 included (through ml_dtypes, which defines it)."""
    if dtype_name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)
    return np.finfo(np.dtype(dtype_name))


def _real_name(dtype_name: str) -> str:
    return {"complex64": "float32", "complex128": "float64"}.get(dtype_name, dtype_name)


def ulp_error(actual, expected, dtype_name: str, *, log_scale: bool = False) -> float:
    """Largest error of ``actual`` against the oracle, in units of eps of ``dtype_name``.

    Relative error, with an absolute floor at the dtype's smallest normal number (values that
    underflow are judged by absolute error). With ``log_scale`` (log_softmax, logsumexp), the error
    is absolute and divided by max(1, |expected|). NaN, inf and -inf must match exactly; a mismatch
    is an infinite error.
    """
    if np.iscomplexobj(actual) or np.iscomplexobj(expected):  # each part on its own
        parts = [(np.real, "real"), (np.imag, "imag")]
        return max(
            ulp_error(part(np.asarray(actual)), part(np.asarray(expected)), _real_name(dtype_name), log_scale=log_scale)
            for part, _ in parts
        )
    a = np.asarray(actual, dtype=np.longdouble)
    e = np.asarray(expected, dtype=np.longdouble)
    if a.shape != e.shape:
        raise AssertionError(f"shape {a.shape} differs from the oracle's {e.shape}")
    if a.size == 0:
        return 0.0
    # Where is the oracle not finite once rounded to the result dtype (-1e39 is -inf in float32)?
    with np.errstate(over="ignore"):  # rounding past the dtype's maximum is the point
        rounded = e.astype(np.dtype(dtype_name)) if dtype_name in ("float16", "float32", "float64") else e
    special = ~np.isfinite(rounded)
    same_special = (np.isnan(a) & np.isnan(rounded)) | (a == rounded)
    if np.any(special & ~same_special) or np.any(~special & ~np.isfinite(a)):
        return math.inf
    fin = ~special
    if not fin.any():
        return 0.0
    a, e = a[fin], e[fin]
    info = finfo(dtype_name)
    scale = np.maximum(1.0, np.abs(e)) if log_scale else np.maximum(np.abs(e), float(info.tiny))
    return float(np.max(np.abs(a - e) / scale) / float(info.eps))


def assert_close(actual, expected, dtype_name: str, *, log_scale: bool = False, ulps: float | None = None, record=None) -> float:
    """Assert :func:`ulp_error` is within the tolerance for ``dtype_name``; return the error.

    ``record(err)``, if given, is called with the error before it is judged (the conformance
    report shows a failing case's error).
    """
    limit = TOLERANCE_ULPS[dtype_name] if ulps is None else ulps
    err = ulp_error(actual, expected, dtype_name, log_scale=log_scale)
    if record is not None:
        record(err)
    if not err <= limit:
        raise AssertionError(
            f"error {err:.3g} eps exceeds {limit:g} eps ({dtype_name})\nactual:   {np.asarray(actual)!r}\n"
            f"expected: {np.asarray(expected).astype(np.complex128 if np.iscomplexobj(expected) else np.float64)!r}"
        )
    return err


def _class_rows(a, axis):
    """``a`` with the class axis last, one row per example."""
    return np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])


def _loss_rows(z, target, axis, where, class_weight):
    """The losses' per-example rows: (classes taking part, class weights, targets, whether they
    are indices), the targets one index or one row of probabilities per example."""
    live = _class_rows(np.ones(z.shape, bool) if where is None else np.broadcast_to(np.asarray(where), z.shape), axis)
    n = z.shape[axis]
    w = np.ones(n, np.longdouble) if class_weight is None else np.asarray(class_weight, np.longdouble)
    target = np.asarray(target)
    index = target.dtype.kind in "iu"
    targets = target.reshape(-1) if index else _class_rows(target, axis).astype(np.longdouble)
    return live, w, targets, index


def _target_row(t, index, n):
    """An example's target probabilities: one-hot for an index."""
    q = np.zeros(n, np.longdouble)
    if index:
        q[t] = 1
    else:
        q[:] = t
    return q


def _smoothed(q, mask, eps):
    """``(1 - eps) q + eps / n`` over the ``n`` classes taking part (``mask``)."""
    q = (1 - eps) * q
    if mask.any():
        q[mask] += eps / mask.sum()
    return q


def cross_entropy(z, target, axis=-1, where=None, class_weight=None, label_smoothing=0.0, ignore_index=None, reduction="none"):
    """The cross-entropy by the table, in long double, example by example: ``sum_c w_c q'_c
    (-log_softmax(z)_c)`` over the classes taking part, with ``q`` the target's probabilities
    (one-hot for an index) and ``q' = (1 - eps) q + eps / n`` over the ``n`` classes taking part.

    An undefined log_softmax (NaN among the classes taking part) gives NaN; a target on a masked
    class (an index, or probability mass there) +inf; an ignored index 0; another index outside
    [0, C) NaN. ``"mean"`` divides by the total weight of the examples not ignored (their number
    for probability targets); over a total weight of 0 it is NaN."""
    z = np.asarray(z)
    axis = axis % z.ndim
    n = z.shape[axis]
    log_p = _class_rows(log_softmax(z, (axis,), where), axis)
    live, w, targets, index = _loss_rows(z, target, axis, where, class_weight)
    eps = np.longdouble(label_smoothing)
    losses: list[Any] = []
    shares: list[Any] = []
    for row, mask, t in zip(log_p, live, targets):
        if index and ignore_index is not None and t == ignore_index:
            losses.append(0)
            shares.append(0)
            continue
        if index and not 0 <= t < n:
            losses.append(math.nan)
            shares.append(w[0])
            continue
        q = _target_row(t, index, n)
        stray = bool(np.any(q[~mask] != 0))
        q = _smoothed(q, mask, eps)
        shares.append(w[t] if index else 1)
        if np.any(np.isnan(row[mask])):
            losses.append(math.nan)
        elif stray:
            losses.append(math.inf)
        else:
            a = (w * q)[mask]
            terms = np.where(a != 0, a * -row[mask], 0)  # 0 * -log(0) = 0
            losses.append(terms.sum())
    shape = z.shape[:axis] + z.shape[axis + 1 :]
    per_example = np.asarray(losses, np.longdouble).reshape(shape)
    if reduction == "none":
        return per_example
    total = per_example.sum()
    share = np.asarray(shares, np.longdouble).sum()
    return total if reduction == "sum" else total / share if share != 0 else np.longdouble(math.nan)


def cross_entropy_gradient(z, target, axis=-1, where=None, class_weight=None, label_smoothing=0.0, ignore_index=None, g=None):
    """d/dz of ``sum(g * cross_entropy(z, target))`` (per-example weights ``g``, default 1): ``A p - a``
    with ``p`` the long-double softmax, ``a = w q'`` (masked classes keep their target mass) and
    ``A = sum(a)``; 0 for ignored examples and indices outside [0, C)."""
    z = np.asarray(z)
    axis = axis % z.ndim
    n = z.shape[axis]
    p = _class_rows(softmax(z, (axis,), where), axis)
    live, w, targets, index = _loss_rows(z, target, axis, where, class_weight)
    weights = np.ones(len(p), np.longdouble) if g is None else np.asarray(g, np.longdouble).reshape(-1)
    eps = np.longdouble(label_smoothing)
    out = np.zeros_like(p)
    for i, (row, mask, t, gi) in enumerate(zip(p, live, targets, weights)):
        if index and ((ignore_index is not None and t == ignore_index) or not 0 <= t < n):
            continue
        q = _smoothed(_target_row(t, index, n), mask, eps)
        a = w * q
        out[i] = gi * (a.sum() * row - a)
    moved = out.reshape(np.moveaxis(np.empty(z.shape), axis, -1).shape)
    return np.moveaxis(moved, -1, axis)
