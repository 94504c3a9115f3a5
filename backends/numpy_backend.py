"""NumPy backend: fused compiled kernels for large float32/float64 inputs, ufuncs otherwise.

Large C-contiguous float32 and float64 inputs go to the Numba kernels of ``_fused`` (when Numba
is installed: the ``fast`` extra), split over threads. Everything else (small inputs, where
the call costs more than the work; masks; other dtypes and layouts) runs NumPy ufuncs in place
on the one output array.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from typing import Any

import numpy as np

from softmax_multi import reference
from softmax_multi.backends import numpy_loss
from softmax_multi.registry import BackendSpec

from . import fused

_max = np.maximum.reduce
_sum = np.add.reduce
_NEG_INF = -np.inf
_SAFE_MAX = {np.dtype(t).char: float(np.finfo(t).max * np.finfo(t).eps / 4) for t in (np.float32, np.float64, np.longdouble)}


def _is_bfloat16(dtype: object) -> bool:
    return getattr(dtype, "name", getattr(dtype, "__name__", None)) == "bfloat16"


class _NumPyNamespace:
    """NumPy, and ml_dtypes' ``bfloat16`` (imported when it is asked for), which NumPy's own
    ``isdtype`` and ``finfo`` do not know. bfloat16 arrays are then served like float16 ones:
    computed in float32, returned in bfloat16."""

    def __getattr__(self, name: str) -> object:
        if name == "bfloat16":
            try:
                import ml_dtypes
            except ImportError:
                raise AttributeError("bfloat16 needs ml_dtypes (pip install ml_dtypes)") from None
            return np.dtype(ml_dtypes.bfloat16)
        return getattr(np, name)

    @staticmethod
    def isdtype(dtype: Any, kind: Any) -> bool:
        if _is_bfloat16(dtype):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            return "real floating" in kinds or "numeric" in kinds
        return np.isdtype(dtype, kind)

    @staticmethod
    def finfo(dtype: Any) -> Any:
        if _is_bfloat16(dtype):
            import ml_dtypes

            return ml_dtypes.finfo(ml_dtypes.bfloat16)
        return np.finfo(dtype)


NAMESPACE = _NumPyNamespace()


def _namespace(x: object) -> object:
    ma = sys.modules.get("numpy.ma")  # not imported: x cannot be a masked array (importing it costs 30 ms)
    if ma is not None and isinstance(x, ma.MaskedArray):
        raise TypeError("masked arrays are not supported: pass the mask as where= (True = keep)")
    return NAMESPACE


def _dtypes() -> tuple[str, ...]:
    low = ("float16", "bfloat16") if importlib.util.find_spec("ml_dtypes") else ("float16",)
    return (*low, "float32", "float64", "complex64", "complex128")


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
    return src, _max(src, axis=axes, keepdims=True, initial=_NEG_INF)


def softmax(x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    return _normalised(fused.SOFTMAX, x, axes, where, out)


def log_softmax(
    x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    return _normalised(fused.LOG_SOFTMAX, x, axes, where, out)


def _normalised(kind: int, x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None, out: np.ndarray | None) -> np.ndarray:
    """softmax or log_softmax (``kind``): the fused kernels where they apply, else the ufuncs."""
    x = _array(x)
    if where is None:
        y = fused.run(kind, x, axes, out)
        if y is not None:
            return y
    if not x.ndim:  # ufuncs give NumPy scalars for 0-d arrays, and scalars cannot be written in place
        return _normalised(kind, x.reshape(1), axes, where, None if out is None else out.reshape(1)).reshape(())
    shifted = _softmax_shifted if kind == fused.SOFTMAX else _log_softmax_shifted
    src, m = _shift_stats(x, axes, where)
    if _all_plain(m):
        return shifted(src, x, m, axes, where, True, out)
    with _quiet():
        m[m == _NEG_INF] = 0.0  # an all -inf slice: exp(-inf) = 0 everywhere, and 0/0 decides
        return shifted(src, x, m, axes, where, False, out)


def _target(src: np.ndarray, x: np.ndarray, out: np.ndarray | None) -> np.ndarray | None:
    """Where the shifted values go: out= if given, else src when it is a copy; never x itself."""
    return out if out is not None else (None if src is x else src)


def _softmax_shifted(src, x, m, axes, where, finite, out):
    out = np.subtract(src, m, out=_target(src, x, out))
    np.exp(out, out=out)
    s = _sum(out, axis=axes, keepdims=True)
    np.divide(out, s, out=out)
    # With every max finite, masked entries are exp(-inf)/s = 0 already; otherwise a fully masked
    # slice computed 0/0 and a slice holding NaN or +inf spread NaN to its masked entries.
    if where is not None and not finite:
        np.copyto(out, 0.0, where=np.logical_not(where))
    return out


def _log_softmax_shifted(src, x, m, axes, where, finite, out):
    out = np.subtract(src, m, out=_target(src, x, out))
    log_s = _log_sum_exp_shifted(out, axes)
    np.subtract(out, log_s, out=out)
    if where is not None and not finite:  # as in _softmax_shifted
        np.copyto(out, _NEG_INF, where=np.logical_not(where))
    return out


def logsumexp(x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None = None, keepdims: bool = False) -> np.ndarray:
    x = _array(x)
    if where is None:
        r = fused.run(fused.LOGSUMEXP, x, axes)
        if r is not None:
            return r if keepdims or not axes else np.squeeze(r, axis=axes)
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
    z = np.subtract(src, m, out=None if src is x else src)
    return np.add(_log_sum_exp_shifted(z, axes), m)


def _log_sum_exp_shifted(z: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """log(sum(exp(z))) over ``axes`` of ``z = x - max``, as log1p of what the max's entries
    leave: ``(k - 1) + t`` with ``k`` of them and ``t`` the sum over the others."""
    top = z == 0
    e = np.exp(z)
    np.copyto(e, 0.0, where=top)
    t = _sum(e, axis=axes, keepdims=True)
    k = np.count_nonzero(top, axis=axes, keepdims=True)
    return np.log1p((k - 1) + t, out=t)


def weighted_logsumexp(x, axes, where, keepdims, b, return_sign):
    """logsumexp with weights (SciPy's b=) or return_sign: the fused kernels for real float32 and
    float64 rows, the reference implementation otherwise (complex input, other layouts)."""
    x = _array(x)
    if b is not None and where is not None:  # masked entries take no part, as weights of 0
        b = np.where(where, b, 0)
    if b is not None and x.ndim:
        r = fused.weighted(x, b, axes, return_sign)
        if r is not None:
            value, sign = r if keepdims else (np.squeeze(r[0], axis=axes), np.squeeze(r[1], axis=axes))
            return (value, sign) if return_sign else value
    return reference.logsumexp(x, axes, None if b is not None else where, keepdims, b, return_sign, xp=NAMESPACE)


def _from_numpy(a: np.ndarray, device: str | None = None) -> np.ndarray:
    return np.array(a, copy=True)


def _swapped(a: np.ndarray, device: str | None = None) -> np.ndarray:
    """The same values in the other byte order (big-endian here), as FITS or HDF5 files hold them."""
    return a.astype(a.dtype.newbyteorder("S"))


def _reversed(a: np.ndarray, device: str | None = None) -> np.ndarray:
    """The same values through negative strides on every axis."""
    flipped = np.flip(a).copy()
    return np.flip(flipped)


def _broadcast(a: np.ndarray, device: str | None = None) -> np.ndarray:
    """A read-only view with a 0 stride: the first entry along the last axis, repeated."""
    return np.broadcast_to(a[..., :1], a.shape)


def _memory_map(a: np.ndarray, device: str | None = None) -> np.ndarray:
    """The same values in a memory-mapped file (an ndarray subclass); the file is gone once unmapped."""
    import tempfile  # only the conformance suite builds these; importing it costs 10 ms

    with tempfile.TemporaryFile() as f:
        m = np.memmap(f, dtype=a.dtype, mode="w+", shape=a.shape)
    m[...] = a
    return m


def _read_only(a: np.ndarray, device: str | None = None) -> np.ndarray:
    r = np.array(a, copy=True)
    r.flags.writeable = False
    return r


INPUT_FORMS = {
    "non_native_byte_order": _swapped,
    "fortran_order": lambda a, device=None: np.asfortranarray(a),
    "negative_strides": _reversed,
    "zero_stride_view": _broadcast,
    "memory_map": _memory_map,
    "read_only": _read_only,
}


spec = BackendSpec(
    name="numpy",
    array_types=(("numpy", "ndarray"), ("numpy", "generic")),
    module="numpy",
    namespace=_namespace,
    softmax=softmax,
    log_softmax=log_softmax,
    logsumexp=logsumexp,
    weighted_logsumexp=weighted_logsumexp,
    from_numpy=_from_numpy,
    to_numpy=np.asarray,
    devices=lambda: ["cpu"],
    dtypes=_dtypes,
    out=True,
    input_forms=INPUT_FORMS,
    accurate_sums=True,  # np.add.reduce sums pairwise; the fused kernels compensate
    cross_entropy=numpy_loss.cross_entropy,
    linear_cross_entropy=numpy_loss.linear_cross_entropy,
)
