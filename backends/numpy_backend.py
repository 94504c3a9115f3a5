"""NumPy backend: fused compiled kernels for large float32/float64 inputs, ufuncs otherwise.

Large C-contiguous float32 and float64 inputs go to the Numba kernels of ``_fused`` (when Numba
is installed: the ``fast`` extra), split over threads. Everything else (small inputs, where
the call costs more than the work; masks; other dtypes and layouts) runs NumPy ufuncs in place
on the one output array.
"""

from __future__ import annotations

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
CHUNK = 1 << 13  # entries a thread claims at a time: small enough to balance, big enough to cost nothing
SPINS = 1 << 14  # rounds of spinning (about a millisecond) before a waiting thread yields its core
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
    _dispatch(k, func, x3, y3)
    if out is not None and y is not out:
        np.copyto(out, y)
        return out
    return y


def _dispatch(k, func, x3, y3) -> None:
    """Run the kernel that suits the layout, shared by up to THREADS threads."""
    outer, n, inner = x3.shape
    threads = THREADS if x3.size >= PARALLEL_MIN_SIZE else 1
    if inner > 1:
        step = max(1, CHUNK // (n * COLUMN_TILE))
        tiles = outer * -(-inner // COLUMN_TILE)
        _share(threads, lambda state, _: k.columns(func, x3, y3, state, step, COLUMN_TILE, np.empty(COLUMN_TILE), np.empty(2 * COLUMN_TILE)), tiles)
        return
    x2, y2 = x3.reshape(outer, n), y3.reshape(outer, -1)
    if n <= k.SHORT:
        rows = 1024
        _share(threads, lambda state, _: k.short_rows(func, x2.reshape(-1), y2.reshape(-1), n, state, np.empty(rows, x2.dtype), np.empty(rows * n, x2.dtype)), outer)
    elif outer >= 4 * threads or n * threads < CHUNK:
        step = max(1, CHUNK // n)
        _share(threads, lambda state, _: k.rows(func, x2, y2, state, step, *_scratch(k, x2.dtype)), outer)
    else:  # a few long rows: each one shared
        for i in range(outer):
            _long_row(k, func, x2[i], y2[i], threads)


def _long_row(k, func, row, res, threads):
    """One long row, shared: every thread takes blocks' statistics, all merge them, then every
    thread takes blocks to finish; a thread that joins late finds less left to do."""
    n = row.shape[0]
    block = k.block_size(n, k.MAX_BLOCKS)
    step = max(1, CHUNK // block)
    ms, ss = np.empty((2, -(-n // block)))
    cms, css = np.empty((2, -(-len(ms) // step)))
    taken = np.zeros(len(cms), np.int64)

    def part(state, caller):
        buf = np.empty(k.BLOCK, row.dtype)
        while not (done := k.long_row(func, row, res, state, step, block, ms, ss, cms, css, buf, taken, caller, SPINS)):
            os.sched_yield()  # waited long for another thread's blocks: let it have the core
        if done < 0:
            raise _Failed

    _share(threads, part, len(ms), k.DONE if func == 2 else k.DONE_2)


def _scratch(k, dtype):
    return np.empty(k.MAX_BLOCKS), np.empty(k.MAX_BLOCKS), np.empty(k.BLOCK, dtype)


def _share(threads: int, part, total: int, counter: int | None = None) -> None:
    """Run ``part(state, caller)`` on this thread (caller True) and on up to ``threads - 1`` pool
    threads, all on one shared state; return once state[counter] (by default DONE) reaches
    ``total``, the number of items.

    Pool threads that have not started once this thread runs out of work are cancelled: they
    would find nothing left. So a busy pool (other callers) slows a call but cannot block it.
    """
    k = fused_kernels()
    state = np.zeros(8, np.int64)
    if threads == 1:
        part(state, True)
        return
    futures = [_executor().submit(_guarded, part, state, False) for _ in range(threads - 1)]
    try:
        _guarded(part, state, True)
        for f in futures:
            f.cancel()
        _wait(k, state, k.DONE if counter is None else counter, total)
    except _Failed:  # raise the error of the thread that failed first
        errors = [f.exception() for f in futures if not f.cancelled()]
        raise next((e for e in errors if e is not None and not isinstance(e, _Failed)), RuntimeError("softmax-multi: a thread failed")) from None
    finally:
        for f in futures:
            f.cancel()


class _Failed(Exception):
    """Another thread that shares this call failed: its own error is the one to raise."""


def _guarded(part, state, caller) -> None:
    try:
        part(state, caller)
    except BaseException:
        state[fused_kernels().FAILED] = 1  # the other threads stop waiting for this one's work
        raise


def _wait(k, state, counter, total) -> None:
    """Until state[counter] reaches total; _Failed once a thread sharing the call has failed."""
    while not k.wait_done(state, counter, total, SPINS):
        if state[k.FAILED]:
            raise _Failed
        os.sched_yield()
    if state[k.FAILED]:
        raise _Failed


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
