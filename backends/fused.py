"""The driver of the fused kernels: when they run, on which threads, and how the work is shared.

Both the NumPy backend and the PyTorch backend (on a CPU tensor's own memory) call :func:`run`.
It returns None, having written nothing, whenever the kernels do not apply, and the caller's
ufunc path runs instead:

* **Not loaded yet.** Importing Numba takes about 0.3 s and loading the cached kernels as much
  again (compiling them, when there is no cache, several seconds), so a call never waits for
  them: the first call that could use them starts a background thread that loads them, and the
  ufunc path serves every call until they are ready. ``SOFTMAX_MULTI_FUSED=wait`` loads them on
  that first call instead, ``SOFTMAX_MULTI_FUSED=off`` never (nor does a missing Numba).
  Numba keeps the compiled kernels in ``__pycache__`` beside :mod:`._kernels` (or in
  ``NUMBA_CACHE_DIR``).
* **Not worth it or not their layout**: below ``MIN_SIZE`` entries, other dtypes than
  native-order float32 and float64, non-contiguous inputs, or reduced axes that are not one
  contiguous run.

The work (rows, blocks of one long row, tiles of columns) is shared by up to ``THREADS`` threads,
which claim items from counters in a small ``state`` array (see :mod:`._kernels`).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "LOGSUMEXP",
    "LOG_SOFTMAX",
    "MIN_SIZE",
    "PARALLEL_MIN_SIZE",
    "SOFTMAX",
    "THREADS",
    "kernels",
    "ready",
    "run",
    "wait_ready",
    "weighted",
]

SOFTMAX, LOG_SOFTMAX, LOGSUMEXP = 0, 1, 2  # the function to compute (as the kernels number them)

# Below MIN_SIZE entries the ufuncs cost less than a call into compiled code (measured: the call
# and its checks are about 1 us; NumPy's four ufunc passes over 4 096 entries, about as much).
# Tests set it to 1 to run the whole conformance suite through the kernels.
MIN_SIZE = int(os.environ.get("SOFTMAX_MULTI_FUSED_MIN_SIZE", "4096"))
# Below PARALLEL_MIN_SIZE entries one thread is quicker than handing work to another (a pool
# hand-off costs some 20 us here; 128K float32 entries take about 60 us on one core).
PARALLEL_MIN_SIZE = int(os.environ.get("SOFTMAX_MULTI_PARALLEL_MIN_SIZE", str(1 << 17)))
THREADS = max(1, int(os.environ.get("SOFTMAX_MULTI_NUM_THREADS", "0")) or len(os.sched_getaffinity(0)))
COLUMN_TILE = 256  # columns per tile when the softmax axis is not the last: 2 KiB of float64 per statistic
CHUNK = 1 << 13  # entries a thread claims at a time: small enough to balance, big enough to cost nothing
SPINS = 1 << 14  # rounds of spinning (about a millisecond) before a waiting thread yields its core
ROWS_PER_THREAD = 4  # fewer long rows than this per thread, not a multiple of the threads: each row is shared
LOAD_ENV = "SOFTMAX_MULTI_FUSED"  # "wait": load the kernels on the first call; "off": never

_lock = threading.Lock()
_module: ModuleType | None = None  # the kernels, once loaded
_loading: threading.Thread | None = None
_off = False  # Numba missing, unusable, or SOFTMAX_MULTI_FUSED=off
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0


def kernels() -> ModuleType | None:
    """The loaded kernels, or None while they load (in the background) or when they are off."""
    if _module is not None or _off:
        return _module
    if os.environ.get(LOAD_ENV) == "wait":
        return wait_ready()
    with _lock:
        global _loading
        if _module is None and not _off and (_loading is None or not _loading.is_alive()):
            _loading = threading.Thread(target=_load, name="softmax-multi-kernels", daemon=True)
            _loading.start()
    return _module


def wait_ready(timeout: float | None = None) -> ModuleType | None:
    """Load the kernels now (or wait for the background load); None when they are off."""
    if _module is None and not _off:
        thread = _loading
        if thread is not None and thread.is_alive():
            thread.join(timeout)
        else:
            _load()
    return _module


def ready() -> bool:
    """True once the kernels are loaded: calls from now on run them where they apply."""
    return _module is not None


def _load() -> None:
    """Import Numba and the kernels and compile or load each of them, then publish them."""
    global _module, _off
    if os.environ.get(LOAD_ENV) == "off":
        _off = True
        return
    try:
        _forget_stale_cache()
        from . import _kernels

        _warm(_kernels)
    except ImportError:  # Numba is not installed: the ufunc path does everything
        _off = True
    except Exception as err:  # Numba present but unusable here (no cache location, ...)
        warnings.warn(f"softmax-multi: the fused NumPy kernels are off: {err!r}", stacklevel=2)
        _off = True
    else:
        _module = _kernels


# The kernels inline code from these modules too, but Numba's cache checks only the file that
# defines each cached function (_kernels.py): a change to another one must drop the cache itself.
_KERNEL_SOURCES = ("_kernels.py", "_exp.py", "_intrinsics.py")


def _forget_stale_cache() -> None:
    """Delete Numba's cached kernels beside the sources when any source has changed since they
    were compiled (a fingerprint of the sources is kept with them)."""
    import hashlib
    import pathlib

    here = pathlib.Path(__file__).parent
    cache = here / "__pycache__"
    digest = hashlib.sha256(b"".join((here / name).read_bytes() for name in _KERNEL_SOURCES)).hexdigest()
    stamp = cache / "_kernels.fingerprint"
    try:
        if stamp.exists() and stamp.read_text() == digest:
            return
        for old in cache.glob("_kernels.*.nb[ic]"):
            old.unlink()
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only installation: Numba keeps its cache elsewhere, or none
        pass


def _warm(k: ModuleType) -> None:
    """Run every kernel once per dtype on a few entries, so that each is compiled (or loaded from
    Numba's cache) here, not in the first call that needs it."""
    for dtype in (np.float32, np.float64):
        for func in (k.SOFTMAX, k.LOG_SOFTMAX, k.LOGSUMEXP):
            for shape in ((6, 2, 1), (2, 3 * k.BLOCK, 1), (2, 3, 2)):  # short rows, long rows, columns
                x = np.zeros(shape, dtype)
                y = np.empty((shape[0], 1 if func == k.LOGSUMEXP else shape[1], shape[2]), dtype)
                _dispatch(k, func, x, y, 1)
            _long_row(k, func, np.zeros(12, dtype), np.empty(1 if func == k.LOGSUMEXP else 12, dtype), 1)
        x = np.zeros((2, 3), dtype)
        k.weighted_rows(
            x, x, np.empty(2, dtype), np.empty(2, dtype), np.zeros(k.STATE_SIZE, np.int64), 1, True, np.empty(k.BLOCK, dtype)
        )


def _forget_threads() -> None:
    """A forked child inherits the pool and a loading thread as objects, not as threads."""
    global _pool, _loading, _lock
    _pool = None
    _loading = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_threads)


def run(func: int, x: np.ndarray, axes: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray | None:
    """``func`` (0 softmax, 1 log_softmax, 2 logsumexp with the reduced axes kept) of ``x`` over
    ``axes`` through the kernels, written into ``out`` if given; None, with nothing written, where
    they do not apply."""
    if (
        x.size < MIN_SIZE
        or x.dtype.char not in "fd"
        or not x.dtype.isnative
        or not x.flags.c_contiguous
        or not axes
        or axes[-1] - axes[0] != len(axes) - 1
    ):
        return None
    k = kernels()
    if k is None:
        return None
    shape = x.shape
    outer = math.prod(shape[: axes[0]])
    n = math.prod(shape[axes[0] : axes[-1] + 1])
    inner = math.prod(shape[axes[-1] + 1 :])
    if func == LOGSUMEXP:
        y = np.empty(shape[: axes[0]] + (1,) * len(axes) + shape[axes[-1] + 1 :], x.dtype)
    elif out is None:
        y = np.empty_like(x)
    elif not out.flags.c_contiguous or (out is not x and np.may_share_memory(out, x)):
        y = np.empty_like(x)  # strided, or overlapping x without being x: computed aside, then copied
    else:
        y = out
    threads = THREADS if x.size >= PARALLEL_MIN_SIZE else 1
    _dispatch(k, func, x.reshape(outer, n, inner), y.reshape(outer, 1 if func == LOGSUMEXP else n, inner), threads)
    if out is not None and y is not out:
        np.copyto(out, y)
        return out
    return y


def weighted(x: np.ndarray, b: np.ndarray, axes: tuple[int, ...], return_sign: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """logsumexp of ``x`` with weights ``b`` (real, of x's shape and dtype) over ``axes``, the reduced
    axes kept: ``(value, sign)``; None where the kernels do not apply (then nothing is computed)."""
    if (
        x.size < MIN_SIZE
        or x.dtype.char not in "fd"
        or not x.dtype.isnative
        or b.dtype != x.dtype
        or not x.flags.c_contiguous
        or not axes
        or axes != tuple(range(axes[0], x.ndim))  # the trailing axes: rows of x and b
    ):
        return None
    k = kernels()
    if k is None:
        return None
    outer = math.prod(x.shape[: axes[0]])
    x2 = x.reshape(outer, -1)
    b2 = np.ascontiguousarray(b).reshape(outer, -1)  # a broadcast b is laid out once
    value, sign = np.empty((2, outer), x.dtype)
    threads = THREADS if x.size >= PARALLEL_MIN_SIZE else 1
    step = max(1, CHUNK // max(x2.shape[1], 1))
    _share(
        threads,
        lambda state, _: k.weighted_rows(x2, b2, value, sign, state, step, return_sign, np.empty(k.BLOCK, x.dtype)),
        outer,
    )
    kept = x.shape[: axes[0]] + (1,) * len(axes)
    return value.reshape(kept), sign.reshape(kept)


def _dispatch(k: ModuleType, func: int, x3: np.ndarray, y3: np.ndarray, threads: int) -> None:
    """Run the kernel that suits the layout, shared by up to ``threads`` threads."""
    outer, n, inner = x3.shape
    if inner > 1:
        step = max(1, CHUNK // (n * COLUMN_TILE))
        tiles = outer * -(-inner // COLUMN_TILE)
        _share(
            threads,
            lambda state, _: k.columns(func, x3, y3, state, step, COLUMN_TILE, np.empty(COLUMN_TILE), np.empty(3 * COLUMN_TILE)),
            tiles,
        )
        return
    x2, y2 = x3.reshape(outer, n), y3.reshape(outer, -1)
    if outer >= ROWS_PER_THREAD * threads or outer % threads == 0 or n * threads < CHUNK:
        step = max(1, k.CHUNK_ENTRIES // max(n, 1))  # rows per claim: a chunk of about CHUNK_ENTRIES entries
        scratch_shape = (step, n) if n <= k.BLOCK else (1, k.BLOCK)
        _share(
            threads,
            lambda state, _: k.rows(func, x2, y2, state, step, *np.empty((4, k.MAX_BLOCKS)), np.empty(scratch_shape, x2.dtype)),
            outer,
        )
    else:  # a few long rows: each one shared
        for i in range(outer):
            _long_row(k, func, x2[i], y2[i], threads)


def _long_row(k: ModuleType, func: int, row: np.ndarray, res: np.ndarray, threads: int) -> None:
    """One long row, shared: every thread takes blocks' statistics, all merge them, then every
    thread takes blocks to finish; a thread that joins late finds less left to do."""
    n = row.shape[0]
    block = k.block_size(n, k.MAX_BLOCKS)
    step = max(1, CHUNK // block)
    nb = -(-n // block)
    ms, ks, ts = np.empty((3, nb))
    claims = -(-nb // step)
    cms, cks, cts = np.empty((3, claims))
    taken = np.zeros(claims, np.int64)

    def part(state: np.ndarray, caller: bool) -> None:
        scratch = np.empty(k.BLOCK, row.dtype)
        while not (
            done := k.long_row(func, row, res, state, step, block, ms, ks, ts, cms, cks, cts, scratch, taken, caller, SPINS)
        ):
            os.sched_yield()  # waited long for another thread's blocks: let it have the core
        if done < 0:
            raise _Failed

    _share(threads, part, nb, k.DONE if func == k.LOGSUMEXP else k.DONE_2)


def _share(threads: int, part: Callable[[np.ndarray, bool], Any], total: int, counter: int | None = None) -> None:
    """Run ``part(state, caller)`` on this thread (caller True) and on up to ``threads - 1`` pool
    threads, all on one shared state; return once state[counter] (by default DONE) reaches
    ``total``, the number of items.

    Pool threads that have not started once this thread runs out of work are cancelled: they
    would find nothing left. So a busy pool (other callers) slows a call but cannot block it.
    """
    k = _module if _module is not None else _import_kernels()
    state = np.zeros(k.STATE_SIZE, np.int64)
    if threads == 1:
        part(state, True)
        return
    futures = [_executor().submit(_guarded, k, part, state, False) for _ in range(threads - 1)]
    try:
        _guarded(k, part, state, True)
        for f in futures:
            f.cancel()
        _wait(k, state, k.DONE if counter is None else counter, total)
    except _Failed:  # raise the error of the thread that failed first
        errors = [f.exception() for f in futures if not f.cancelled()]
        raise next(
            (e for e in errors if e is not None and not isinstance(e, _Failed)), RuntimeError("softmax-multi: a thread failed")
        ) from None
    finally:
        for f in futures:
            f.cancel()


def _import_kernels() -> ModuleType:
    from . import _kernels  # while warming up, before the module is published

    return _kernels


class _Failed(Exception):
    """Another thread that shares this call failed: its own error is the one to raise."""


def _guarded(k: ModuleType, part: Callable[[np.ndarray, bool], Any], state: np.ndarray, caller: bool) -> None:
    try:
        part(state, caller)
    except BaseException:
        state[k.FAILED] = 1  # the other threads stop waiting for this one's work
        raise


def _wait(k: ModuleType, state: np.ndarray, counter: int, total: int) -> None:
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
        with _lock:
            if _pool is None or _pool_pid != os.getpid():
                _pool = ThreadPoolExecutor(max_workers=max(1, THREADS - 1), thread_name_prefix="softmax-multi")
                _pool_pid = os.getpid()
    return _pool
