"""NumPy backend: native kernels that work in place on the one output array they allocate."""

from __future__ import annotations

import math

import numpy as np

from softmax_multi.registry import BackendSpec

_max = np.maximum.reduce
_sum = np.add.reduce
_NEG_INF = -np.inf
_SAFE_MAX = {np.dtype(t).char: float(np.finfo(t).max * np.finfo(t).eps / 4) for t in (np.float32, np.float64, np.longdouble)}


def _namespace(x: object) -> object:
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError("masked arrays are not supported: pass the mask as where= (True = keep)")
    return np


def _array(x: object) -> np.ndarray:
    return x if type(x) is np.ndarray else np.asarray(x)


def _all_plain(m: np.ndarray) -> bool:
    """Every slice max is finite and small enough that ``x - m`` cannot overflow: below half an
    ulp of the dtype's largest number, ``x - m >= -max - ulp/2`` still rounds to a finite value.
    Otherwise the slow path runs, with the warnings of inf - inf, 0/0 and overflow silenced."""
    limit = _SAFE_MAX[m.dtype.char]
    if m.size == 0:
        return True
    if m.size == 1:
        v = m.item()
        return -math.inf < v < limit  # False for NaN as well
    return bool(np.minimum.reduce(m, axis=None) > -math.inf and _max(m, axis=None) < limit)


def _quiet() -> np.errstate:
    """inf - inf, 0/0 and log(0) are expected on non-finite slices; their results are the answer."""
    return np.errstate(invalid="ignore", divide="ignore", over="ignore")


def _shift_stats(x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None):
    """``src`` (x, or a fresh copy with masked entries at -inf) and its max over ``axes``."""
    src = x if where is None else np.where(where, x, _NEG_INF)
    return src, _max(src, axes, None, None, True, _NEG_INF)


def softmax(x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None = None) -> np.ndarray:
    x = _array(x)
    if not x.ndim:  # ufuncs give NumPy scalars for 0-d arrays, and scalars cannot be written in place
        return softmax(x.reshape(1), axes, where).reshape(())
    src, m = _shift_stats(x, axes, where)
    if _all_plain(m):
        return _softmax_shifted(src, x, m, axes, where, finite=True)
    with _quiet():
        m[m == _NEG_INF] = 0.0  # an all -inf slice: exp(-inf) = 0 everywhere, and 0/0 decides
        return _softmax_shifted(src, x, m, axes, where, finite=False)


def _softmax_shifted(src, x, m, axes, where, finite):
    out = np.subtract(src, m, out=None if src is x else src)  # never writes into x
    np.exp(out, out=out)
    s = _sum(out, axes, None, None, True)
    np.divide(out, s, out=out)
    # With every max finite, masked entries are exp(-inf)/s = 0 already; otherwise a fully masked
    # slice computed 0/0 and a slice holding NaN or +inf spread NaN to its masked entries.
    if where is not None and not finite:
        np.copyto(out, 0.0, where=np.logical_not(where))
    return out


def log_softmax(x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None = None) -> np.ndarray:
    x = _array(x)
    if not x.ndim:  # ufuncs give NumPy scalars for 0-d arrays, and scalars cannot be written in place
        return log_softmax(x.reshape(1), axes, where).reshape(())
    src, m = _shift_stats(x, axes, where)
    if _all_plain(m):
        return _log_softmax_shifted(src, x, m, axes, where, finite=True)
    with _quiet():
        m[m == _NEG_INF] = 0.0
        return _log_softmax_shifted(src, x, m, axes, where, finite=False)


def _log_softmax_shifted(src, x, m, axes, where, finite):
    out = np.subtract(src, m, out=None if src is x else src)
    s = _sum(np.exp(out), axes, None, None, True)
    np.log(s, out=s)
    np.subtract(out, s, out=out)
    if where is not None and not finite:  # as in _softmax_shifted
        np.copyto(out, _NEG_INF, where=np.logical_not(where))
    return out


def logsumexp(
    x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None = None, keepdims: bool = False
) -> np.ndarray:
    x = _array(x)
    if not x.ndim:
        return logsumexp(x.reshape(1), axes, where, keepdims).reshape(())
    src, m = _shift_stats(x, axes, where)
    if _all_plain(m):
        r = _logsumexp_shifted(src, x, m, axes)
    else:
        with _quiet():
            finite = np.isfinite(m)
            m0 = np.where(finite, m, 0.0)
            # Not finite: the answer is the max itself (-inf for empty or masked, +inf, or NaN).
            r = np.where(finite, _logsumexp_shifted(src, x, m0, axes), m)
    return r if keepdims or not axes else np.squeeze(r, axis=axes)


def _logsumexp_shifted(src, x, m, axes):
    e = np.subtract(src, m, out=None if src is x else src)
    np.exp(e, out=e)
    s = _sum(e, axes, None, None, True)
    np.log(s, out=s)
    return np.add(s, m, out=s)


def _from_numpy(a: np.ndarray, device: str | None = None) -> np.ndarray:
    return np.array(a, copy=True)


spec = BackendSpec(
    name="numpy",
    array_types=(("numpy", "ndarray"), ("numpy", "generic")),
    module="numpy",
    namespace=_namespace,
    softmax=softmax,
    log_softmax=log_softmax,
    logsumexp=logsumexp,
    from_numpy=_from_numpy,
    to_numpy=np.asarray,
    devices=lambda: ["cpu"],
    dtypes=("float16", "float32", "float64"),
)
