"""NumPy backend: fused compiled kernels for large float32/float64 inputs, ufuncs otherwise.

Large C-contiguous float32 and float64 inputs go to the Numba kernels of ``_fused`` (when Numba
is installed: the ``fast`` extra), split over threads. Everything else (small inputs, where
the call costs more than the work; masks; other dtypes and layouts) runs NumPy ufuncs in place
on the one output array.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

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


def softmax(x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    x = _array(x)
    if where is None and x.size >= FUSED_MIN_SIZE:
        y = _fused_call(0, x, axes, out)
        if y is not None:
            return y
    if not x.ndim:  # ufuncs give NumPy scalars for 0-d arrays, and scalars cannot be written in place
        return softmax(x.reshape(1), axes, where, None if out is None else out.reshape(1)).reshape(())
    src, m = _shift_stats(x, axes, where)
    if _all_plain(m):
        return _softmax_shifted(src, x, m, axes, where, True, out)
    with _quiet():
        m[m == _NEG_INF] = 0.0  # an all -inf slice: exp(-inf) = 0 everywhere, and 0/0 decides
        return _softmax_shifted(src, x, m, axes, where, False, out)


def _target(src: np.ndarray, x: np.ndarray, out: np.ndarray | None) -> np.ndarray | None:
    """Where the shifted values go: out= if given, else src when it is a copy; never x itself."""
    return out if out is not None else (None if src is x else src)


def _softmax_shifted(src, x, m, axes, where, finite, out):
    out = np.subtract(src, m, out=_target(src, x, out))
    np.exp(out, out=out)
    s = _sum(out, axes, None, None, True)
    np.divide(out, s, out=out)
    # With every max finite, masked entries are exp(-inf)/s = 0 already; otherwise a fully masked
    # slice computed 0/0 and a slice holding NaN or +inf spread NaN to its masked entries.
    if where is not None and not finite:
        np.copyto(out, 0.0, where=np.logical_not(where))
    return out


def log_softmax(x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    x = _array(x)
    if where is None and x.size >= FUSED_MIN_SIZE:
        y = _fused_call(1, x, axes, out)
        if y is not None:
            return y
    if not x.ndim:  # ufuncs give NumPy scalars for 0-d arrays, and scalars cannot be written in place
        return log_softmax(x.reshape(1), axes, where, None if out is None else out.reshape(1)).reshape(())
    src, m = _shift_stats(x, axes, where)
    if _all_plain(m):
        return _log_softmax_shifted(src, x, m, axes, where, True, out)
    with _quiet():
        m[m == _NEG_INF] = 0.0
        return _log_softmax_shifted(src, x, m, axes, where, False, out)


def _log_softmax_shifted(src, x, m, axes, where, finite, out):
    out = np.subtract(src, m, out=_target(src, x, out))
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
    if where is None and x.size >= FUSED_MIN_SIZE:
        r = _fused_call(2, x, axes, None)
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
    e = np.subtract(src, m, out=None if src is x else src)
    np.exp(e, out=e)
    s = _sum(e, axes, None, None, True)
    np.log(s, out=s)
    return np.add(s, m, out=s)


# --- the fused kernels -------------------------------------------------------------------------

# Below FUSED_MIN_SIZE entries the ufuncs cost less than a call into compiled code; below
# PARALLEL_MIN_SIZE one thread is quicker than handing work to another. Tests set both to 1 to
# run the whole conformance suite through the fused kernels and their threads.
FUSED_MIN_SIZE = int(os.environ.get("SOFTMAX_MULTI_FUSED_MIN_SIZE", "4096"))
PARALLEL_MIN_SIZE = int(os.environ.get("SOFTMAX_MULTI_PARALLEL_MIN_SIZE", str(1 << 17)))
COLUMN_TILE = 256  # columns per tile when the softmax axis is not the last one
THREADS = max(1, int(os.environ.get("SOFTMAX_MULTI_NUM_THREADS", "0")) or len(os.sched_getaffinity(0)))

_kernels = None  # the _fused module once imported; False when Numba is missing or disabled
_kernels_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0


def fused_kernels():
    """The compiled kernels, imported on first use (Numba takes a moment); None without Numba."""
    global _kernels
    if _kernels is None:
        with _kernels_lock:
            if _kernels is None:
                if os.environ.get("SOFTMAX_MULTI_NO_NUMBA"):
                    _kernels = False
                else:
                    try:
                        from . import _fused
                    except ImportError:  # Numba is not installed: the ufunc path does everything
                        _kernels = False
                    except Exception as err:  # Numba present but unusable here (no cache location, ...)
                        warnings.warn(f"softmax-multi: the fused NumPy kernels are off: {err!r}", stacklevel=2)
                        _kernels = False
                    else:
                        _kernels = _fused
    return _kernels or None


def _fused_call(func: int, x: np.ndarray, axes: tuple[int, ...], out: np.ndarray | None) -> np.ndarray | None:
    """Run the fused kernel when x suits it: float32/64, C-contiguous, the axes one contiguous run.

    Returns None (and writes nothing) when it does not, so that the ufunc path runs instead.
    """
    if x.dtype.char not in "fd" or not x.flags.c_contiguous or not axes or axes[-1] - axes[0] != len(axes) - 1:
        return None
    k = fused_kernels()
    if k is None:
        return None
    shape = x.shape
    outer = math.prod(shape[: axes[0]])
    n = math.prod(shape[axes[0] : axes[-1] + 1])
    inner = math.prod(shape[axes[-1] + 1 :])
    if func == 2:
        y = np.empty(shape[: axes[0]] + (1,) * len(axes) + shape[axes[-1] + 1 :], x.dtype)
    elif out is None:
        y = np.empty_like(x)
    elif not out.flags.c_contiguous or (out is not x and np.may_share_memory(out, x)):
        y = np.empty_like(x)  # strided, or overlapping x without being x: computed aside, then copied
    else:
        y = out
    x3 = x.reshape(outer, n, inner)
    y3 = y.reshape(outer, 1 if func == 2 else n, inner)
    tasks = _tasks(k, func, x3, y3)
    _run(tasks)
    if out is not None and y is not out:
        np.copyto(out, y)
        return out
    return y


def _tasks(k, func, x3, y3):
    """The work as callables, one per thread, each with its own scratch."""
    outer, n, inner = x3.shape
    parts = THREADS if x3.size >= PARALLEL_MIN_SIZE else 1
    if inner > 1:
        tiles = outer * -(-inner // COLUMN_TILE)
        return [
            _bind(k.columns, func, x3, y3, t0, t1, COLUMN_TILE, np.empty(COLUMN_TILE), np.empty(2 * COLUMN_TILE))
            for t0, t1 in _split(tiles, parts)
        ]
    x2, y2 = x3.reshape(outer, n), y3.reshape(outer, -1)
    if n <= k.SHORT:
        rows = 1024
        return [
            _bind(k.short_rows, func, x2.reshape(-1), y2.reshape(-1), n, r0, r1, np.empty(rows, x2.dtype), np.empty(rows * n, x2.dtype))
            for r0, r1 in _split(outer, parts)
        ]
    if outer >= parts:
        return [_bind(k.rows, func, x2, y2, r0, r1, *_scratch(k, x2.dtype)) for r0, r1 in _split(outer, parts)]
    return [lambda: _long_rows(k, func, x2, y2, parts)]


def _long_rows(k, func, x2, y2, parts):
    """Fewer rows than threads: each row's statistics in parts, merged, then finished in parts."""
    ranges = _split(x2.shape[1], parts)
    scratch = [_scratch(k, x2.dtype) for _ in ranges]
    for i in range(x2.shape[0]):
        row, res = x2[i], y2[i]
        stats = [None] * len(ranges)

        def part_stats(p, lo, hi, row=row, res=res, stats=stats):
            stats[p] = k.row_part_stats(func, row, res, lo, hi, *scratch[p])

        _run([lambda p=p, lo=lo, hi=hi: part_stats(p, lo, hi) for p, (lo, hi) in enumerate(ranges)])
        m, s, _ = stats[0]
        for m2, s2, _ in stats[1:]:
            m, s = k.merge_stats(m, s, m2, s2)
        if func == 2:
            res[0] = k.logsumexp_of(row, 0, row.shape[0], m, s)
        else:
            _run([
                _bind(k.row_part_finish, func, row, res, lo, hi, stats[p][2], scratch[p][0], m, s)
                for p, (lo, hi) in enumerate(ranges)
            ])


def _scratch(k, dtype):
    return np.empty(k.MAX_BLOCKS), np.empty(k.MAX_BLOCKS), np.empty(k.BLOCK, dtype)


def _split(count: int, parts: int) -> list[tuple[int, int]]:
    """[0, count) in at most ``parts`` contiguous, nearly equal, non-empty ranges."""
    parts = max(1, min(parts, count))
    edges = [count * p // parts for p in range(parts + 1)]
    return list(itertools.pairwise(edges))


def _bind(f, *args):
    return lambda: f(*args)


def _run(tasks) -> None:
    """Run the callables, the last one on this thread; the kernels release the GIL meanwhile."""
    if len(tasks) == 1:
        tasks[0]()
        return
    futures = [_executor().submit(t) for t in tasks[:-1]]
    tasks[-1]()
    for f in futures:
        f.result()


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():  # a forked child inherits the pool but not its threads
        with _kernels_lock:
            if _pool is None or _pool_pid != os.getpid():
                _pool = ThreadPoolExecutor(max_workers=max(1, THREADS - 1), thread_name_prefix="softmax-multi")
                _pool_pid = os.getpid()
    return _pool


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
    out=True,
)
