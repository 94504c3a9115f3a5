"""The truth every backend is measured against: the semantics table, slice by slice, in higher precision.

Written independently of :mod:`softmax_multi.reference`: a plain loop over slices in NumPy's
``longdouble`` (80-bit extended precision on x86-64, 64-bit mantissa), spelling out each row of
the semantics table. Slow and obvious on purpose.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TOLERANCE_ULPS", "assert_close", "log_softmax", "logsumexp", "softmax", "ulp_error"]

# Largest error allowed, in units of the result dtype's eps (relative error for softmax and
# logsumexp, absolute error scaled by max(1, |y|) for log_softmax). One place, shown in reports.
TOLERANCE_ULPS = {"float16": 4.0, "bfloat16": 4.0, "float32": 16.0, "float64": 16.0}


def _slices(x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None):
    """x and its mask as (rows, n): every reduced axis moved to the end and flattened."""
    x = np.asarray(x, dtype=np.longdouble)
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
    if v.size == 0 or np.all(v == -np.inf):
        return np.longdouble(-np.inf)
    if np.any(np.isnan(v)):
        return np.longdouble(np.nan)
    if np.any(v == np.inf):
        return np.longdouble(np.inf)
    m = v.max()
    return m + np.log(np.sum(np.exp(v - m)))


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
        if np.isnan(lse) or lse == np.inf or lse == -np.inf:  # NaN, +inf, or all -inf
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
            m = v.max()
            out[mask] = (v - m) - np.log(np.sum(np.exp(v - m)))  # as in softmax: never v - lse
        return out

    return _rowwise(x, axes, where, row)


def logsumexp(x, axes, where=None, keepdims=False) -> np.ndarray:
    """logsumexp by the table, in long double: -inf for an empty or fully masked slice."""
    x = np.asarray(x)
    axes = tuple(sorted(a % x.ndim for a in axes)) if x.ndim else ()
    rows, masks, _, kept_shape = _slices(x, axes, where)
    out = np.array([_row_lse(r[m]) for r, m in zip(rows, masks)], dtype=np.longdouble)
    out = out.reshape(kept_shape)
    if keepdims:
        out = out.reshape(tuple(1 if a in axes else n for a, n in enumerate(x.shape)))
    return out


def _eps(dtype_name: str) -> float:
    if dtype_name == "bfloat16":
        return 2.0**-7
    return float(np.finfo(np.dtype(dtype_name)).eps)


def ulp_error(actual, expected, dtype_name: str, *, log_scale: bool = False) -> float:
    """Largest error of ``actual`` against the oracle, in units of eps of ``dtype_name``.

    Relative error, with an absolute floor at the dtype's smallest normal number (values that
    underflow are judged by absolute error). With ``log_scale`` (log_softmax, logsumexp), the error
    is absolute and divided by max(1, |expected|). NaN, inf and -inf must match exactly; a mismatch
    is an infinite error.
    """
    a = np.asarray(actual, dtype=np.longdouble)
    e = np.asarray(expected, dtype=np.longdouble)
    if a.shape != e.shape:
        raise AssertionError(f"shape {a.shape} differs from the oracle's {e.shape}")
    if a.size == 0:
        return 0.0
    # Where is the oracle not finite once rounded to the result dtype (-1e39 is -inf in float32)?
    with np.errstate(over="ignore"):  # rounding past the dtype's maximum is the point
        rounded = e.astype(np.float32 if dtype_name == "float32" else np.float64) if dtype_name in ("float32", "float64") else e
    special = ~np.isfinite(rounded)
    same_special = (np.isnan(a) & np.isnan(rounded)) | (a == rounded)
    if np.any(special & ~same_special) or np.any(~special & ~np.isfinite(a)):
        return math.inf
    fin = ~special
    if not fin.any():
        return 0.0
    a, e = a[fin], e[fin]
    eps = _eps(dtype_name)
    if log_scale:
        scale = np.maximum(1.0, np.abs(e))
    else:
        tiny = 1e-300 if dtype_name == "float64" else float(np.finfo(np.float32).tiny)
        if dtype_name in ("float16", "bfloat16"):
            tiny = 6.1e-5
        scale = np.maximum(np.abs(e), tiny)
    return float(np.max(np.abs(a - e) / scale) / eps)


def assert_close(actual, expected, dtype_name: str, *, log_scale: bool = False, ulps: float | None = None) -> float:
    """Assert :func:`ulp_error` is within the tolerance for ``dtype_name``; return the error."""
    limit = TOLERANCE_ULPS[dtype_name] if ulps is None else ulps
    err = ulp_error(actual, expected, dtype_name, log_scale=log_scale)
    if not err <= limit:
        raise AssertionError(
            f"error {err:.3g} eps exceeds {limit:g} eps ({dtype_name})\nactual:   {np.asarray(actual)!r}\n"
            f"expected: {np.asarray(expected, dtype=np.float64)!r}"
        )
    return err
