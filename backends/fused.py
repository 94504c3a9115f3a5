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
which claim items from counters in a small ``state`` array (see :mod:`._kernels`): our own team's
(:class:`_Team`), or, for rows, PyTorch's OpenMP threads where PyTorch is imported (:class:`_OpenMP`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import warnings
from collections.abc import Callable
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
    "openmp_threads",
    "ready",
    "row_stats",
    "rows_at",
    "run",
    "wait_ready",
    "weighted",
]

SOFTMAX, LOG_SOFTMAX, LOGSUMEXP = 0, 1, 2  # the function to compute (as the kernels number them)

# Below MIN_SIZE entries the ufuncs run. Once loaded, the kernels are quicker at every size
# (measured, smx.softmax with out=: 10.5 us against the ufuncs' 14.5 us for 8 entries, 19 against
# 52 us for 16 384), so only empty arrays, which the reference handles, stay out.
MIN_SIZE = int(os.environ.get("SOFTMAX_MULTI_FUSED_MIN_SIZE", "1"))
# Below PARALLEL_MIN_SIZE entries one thread is quicker than handing work to the team (measured,
# float32 softmax: 32 768 entries 32 us alone, 40 us with a worker; 65 536 entries 65 against 52 us).
# Tests set it to 1 to run the whole conformance suite through the threads.
PARALLEL_MIN_SIZE = int(os.environ.get("SOFTMAX_MULTI_PARALLEL_MIN_SIZE", str(1 << 16)))
THREADS = max(1, int(os.environ.get("SOFTMAX_MULTI_NUM_THREADS", "0")) or len(os.sched_getaffinity(0)))
COLUMN_TILE = 256  # columns per tile when the softmax axis is not the last: 2 KiB of float64 per statistic
CHUNK = 1 << 13  # entries a thread claims at a time: small enough to balance, big enough to cost nothing
SPINS = 1 << 14  # rounds of spinning (about a millisecond) before a waiting thread yields its core
WORKER_SPINS = 1 << 12  # rounds (a quarter of a millisecond) a worker spins for new work before it sleeps
JOIN_SPINS = 1 << 8  # rounds (about 10 us) a caller waits, without the GIL, for a spinning worker to join
ROWS_PER_THREAD = 4  # fewer long rows than this per thread, not a multiple of the threads: each row is shared
LOAD_ENV = "SOFTMAX_MULTI_FUSED"  # "wait": load the kernels on the first call; "off": never

_lock = threading.Lock()
_module: ModuleType | None = None  # the kernels, once loaded
_loading: threading.Thread | None = None
_off = False  # Numba missing, unusable, or SOFTMAX_MULTI_FUSED=off
_the_team: _Team | None = None
_team_pid = 0
_omp: _OpenMP | None = None  # PyTorch's OpenMP runtime, once found and the tasks loaded
_omp_loading: threading.Thread | None = None  # looking for it (started once PyTorch is imported)
_omp_forked = False  # a forked child: never on the OpenMP runtime (see _forget_threads)


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
    """Load the kernels now (or wait for the background load); None when they are off. Where
    PyTorch is imported, wait for the tasks that run them on its threads too (:func:`_openmp`)."""
    if _module is None and not _off:
        thread = _loading
        if thread is not None and thread.is_alive():
            thread.join(timeout)
        else:
            _load()
    if _module is not None and _openmp() is None and _omp_loading is not None:
        _omp_loading.join(timeout)
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
_KERNEL_SOURCES = ("_kernels.py", "_exp.py", "_intrinsics.py", "_tasks.py")


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
        for old in (*cache.glob("_kernels.*.nb[ic]"), *cache.glob("_tasks.*.nb[ic]")):
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
        k.weighted_rows(x, x, np.empty(2, dtype), np.empty(2, dtype), np.zeros(k.STATE_SIZE, np.int64), 1, True)
        for ws in (np.empty(0), np.zeros(3)):
            k.row_stats(x, ws, np.empty((4, 2)), np.zeros(k.STATE_SIZE, np.int64), 1)
    box, state = np.zeros(1, np.int64), np.ones(k.STATE_SIZE, np.int64)  # the team's waits
    k.post_and_join(box, state, 1)
    k.wait_change(box, 0, 1)
    k.wait_done(state, k.DONE, 1, 1)


def _forget_threads() -> None:
    """A forked child inherits the team and a loading thread as objects, not as threads; and
    PyTorch's OpenMP runtime there still counts its parent's threads, so that a parallel region
    waits for them forever (measured: a child's softmax of (400, 5000) hung): the child's calls
    stay on the kernels' own team."""
    global _the_team, _loading, _lock, _omp, _omp_loading, _omp_forked
    _the_team = None
    _loading = None
    _omp, _omp_loading, _omp_forked = None, None, True
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_threads)


def run(
    func: int,
    x: np.ndarray,
    axes: tuple[int, ...],
    out: np.ndarray | None = None,
    min_size: int | None = None,
    parallel_min_size: int | None = None,
) -> np.ndarray | None:
    """``func`` (0 softmax, 1 log_softmax, 2 logsumexp with the reduced axes kept) of ``x`` over
    ``axes`` through the kernels, written into ``out`` if given; None, with nothing written, where
    they do not apply (``min_size``, by default MIN_SIZE: fewer entries than this). The team
    shares calls of ``parallel_min_size`` entries or more (by default PARALLEL_MIN_SIZE)."""
    if (
        x.size < (MIN_SIZE if min_size is None else min_size)
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
    threads = THREADS if x.size >= (PARALLEL_MIN_SIZE if parallel_min_size is None else parallel_min_size) else 1
    _dispatch(k, func, x.reshape(outer, n, inner), y.reshape(outer, 1 if func == LOGSUMEXP else n, inner), threads)
    if out is not None and y is not out:
        np.copyto(out, y)
        return out
    return y


def row_stats(x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | None:
    """Each row's statistics for a loss, (4, rows) float64: ``(m, k, t, u)`` of the rows of the
    2-D C-contiguous float32 or float64 ``x`` as :func:`softmax_multi.loss.index_stats` defines
    them, ``u`` from ``weights`` (float64, one per column, NaN for a column that takes no part;
    None: u = 0). None, with nothing computed, while the kernels are not loaded."""
    k = kernels()
    if k is None:
        return None
    out = np.empty((4, x.shape[0]))
    ws = np.empty(0) if weights is None else weights
    threads = THREADS if x.size >= PARALLEL_MIN_SIZE else 1
    rows, cols = x.shape
    step = max(1, CHUNK // max(cols, 1))

    def on_openmp(omp: _OpenMP, threads: int) -> None:
        addresses = {"x": x.ctypes.data, "out": out.ctypes.data, "weights": ws.ctypes.data}
        _run_task(omp, threads, omp.tasks.ROW_STATS_TASK, 0, x.itemsize, rows, cols, 0, step, ws.shape[0], **addresses)

    _share(threads, lambda state, _: k.row_stats(x, ws, out, state, step), rows, on_openmp=on_openmp)
    return out


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
        lambda state, _: k.weighted_rows(x2, b2, value, sign, state, step, return_sign),
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
            lambda state, _: k.columns(func, x3, y3, state, step, COLUMN_TILE),
            tiles,
        )
        return
    x2, y2 = x3.reshape(outer, n), y3.reshape(outer, -1)
    if _by_rows(outer, n, threads):
        step = _rows_step(k, n)

        def on_openmp(omp: _OpenMP, threads: int) -> None:
            addresses = {"x": x2.ctypes.data, "out": y2.ctypes.data}
            _run_task(omp, threads, omp.tasks.ROWS_TASK, func, x2.itemsize, outer, n, y2.shape[1], step, **addresses)

        _share(threads, lambda state, _: k.rows(func, x2, y2, state, step), outer, on_openmp=on_openmp)
    else:  # a few long rows: each one shared
        for i in range(outer):
            _long_row(k, func, x2[i], y2[i], threads)


def _by_rows(rows: int, n: int, threads: int) -> bool:
    """Do the threads share rows of n entries whole (the rows kernel), rather than each row?"""
    return rows >= ROWS_PER_THREAD * threads or rows % threads == 0 or n * threads < CHUNK


def rows_at(func: int, x: int, out: int, size: int, n: int, itemsize: int) -> bool:
    """``func`` (SOFTMAX or LOG_SOFTMAX) of the rows of ``n`` entries of the C-contiguous float32
    (``itemsize`` 4) or float64 array of ``size`` entries at address ``x``, written into the one at
    ``out`` (``x`` itself, or sharing no memory with it), on PyTorch's OpenMP threads, as
    :func:`run` would compute it there. False, with nothing done, where :func:`run` would not:
    the kernels or PyTorch's runtime not loaded, fewer than PARALLEL_MIN_SIZE entries, or a few
    long rows, each shared. For the PyTorch backend, which so skips making NumPy arrays of its
    tensors (measured, (64, 1024) float32: about 4 us of a 20 us call)."""
    k = _module
    if k is None or size < PARALLEL_MIN_SIZE or THREADS < 2 or (omp := _openmp()) is None:
        return False
    rows = size // n
    if not _by_rows(rows, n, THREADS):
        return False
    _run_task(omp, THREADS, omp.tasks.ROWS_TASK, func, itemsize, rows, n, n, _rows_step(k, n), x=x, out=out)
    return True


def _rows_step(k: ModuleType, n: int) -> int:
    """Rows of n entries per claim of the rows kernel: a chunk of about CHUNK_ENTRIES entries."""
    return max(1, k.CHUNK_ENTRIES // max(n, 1))


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
        scratch = np.empty((2, block), row.dtype)  # a block's exps, and its copy where res is row (in place)
        while not (
            done := k.long_row(func, row, res, state, step, block, ms, ks, ts, cms, cks, cts, scratch, taken, caller, SPINS)
        ):
            os.sched_yield()  # waited long for another thread's blocks: let it have the core
        if done < 0:
            raise _Failed

    _share(threads, part, nb, k.DONE if func == k.LOGSUMEXP else k.DONE_2)


def _share(
    threads: int,
    part: Callable[[np.ndarray, bool], Any],
    total: int,
    counter: int | None = None,
    on_openmp: Callable[[_OpenMP, int], None] | None = None,
) -> None:
    """Run ``part(state, caller)`` on this thread (caller True) and on the team's worker threads,
    all on one shared state; return once state[counter] (by default DONE) reaches ``total``, the
    number of items. Where the work is also a task (``on_openmp(omp, threads)`` runs it: see
    :func:`_run_task`) and PyTorch's OpenMP runtime is loaded, its threads run that instead
    (:class:`_OpenMP`).

    Work is claimed from the state's counters, so any number of threads may take part: where the
    team is busy with another caller's work, this caller does its own alone. So concurrent callers
    slow each other but cannot block one another.
    """
    if threads > 1 and on_openmp is not None and (omp := _openmp()) is not None:
        on_openmp(omp, threads)
        return
    k = _module if _module is not None else _import_kernels()
    state = np.zeros(k.STATE_SIZE, np.int64)
    team = _team(k) if threads > 1 else None
    if team is None or not team.busy.acquire(blocking=False):
        part(state, True)
        return
    errors: list[BaseException] = []
    try:
        team.post(part, state, errors)
        _guarded(k, part, state, True, errors)
        _wait(k, state, k.DONE if counter is None else counter, total)
    except _Failed:  # raise the error of the thread that failed first
        raise next((e for e in errors if not isinstance(e, _Failed)), RuntimeError("softmax-multi: a thread failed")) from None
    finally:
        team.busy.release()


class _Team:
    """THREADS - 1 worker threads. Between two calls a worker spins for a moment (WORKER_SPINS
    rounds, without the GIL) on the team's epoch, so that work posted soon after starts at once:
    a sleeping thread takes tens of microseconds to wake (measured here: 50 us for a pool's
    future), more than a (64, 1024) softmax takes. Then it sleeps on a condition."""

    def __init__(self, k: ModuleType, size: int):
        self.k = k
        self.box = np.zeros(1, np.int64)  # the epoch: one more per posted task
        self.task: tuple[int, Callable[[np.ndarray, bool], Any], np.ndarray, list[BaseException]] | None = None
        self.busy = threading.Lock()  # one caller at a time shares the team
        self.wake = threading.Condition()
        self.sleeping = 0
        for i in range(size):
            threading.Thread(target=self._work, name=f"softmax-multi-{i}", daemon=True).start()

    def post(self, part: Callable[[np.ndarray, bool], Any], state: np.ndarray, errors: list[BaseException]) -> None:
        """Post the task (the epoch after it: a worker that sees the epoch finds its task). To a
        spinning worker, without the GIL, and wait until it has joined: a worker that saw the
        epoch while the caller still held the GIL slept on it until the caller entered its own
        kernel, and joined late (measured, (64, 1024) float32: 7-24 us median from the post to the
        worker's first claim, against 2.8-3.3 us posted so)."""
        epoch = int(self.box[0]) + 1
        self.task = (epoch, part, state, errors)
        if not self.sleeping:
            # a worker that went to sleep just as the epoch moved is woken below, after the wait
            if self.k.post_and_join(self.box, state, JOIN_SPINS) or not self.sleeping:
                return
        else:
            self.box[0] = epoch
        with self.wake:
            self.wake.notify_all()

    def _work(self) -> None:
        seen = 0
        while True:
            if not self.k.wait_change(self.box, seen, WORKER_SPINS):
                with self.wake:
                    self.sleeping += 1
                    while int(self.box[0]) == seen:
                        self.wake.wait()
                    self.sleeping -= 1
            task = self.task
            if task is None or task[0] == seen:
                seen = int(self.box[0])
                continue
            seen = task[0]
            _, part, state, errors = task
            with contextlib.suppress(BaseException):  # recorded in errors, and state[FAILED] set: the caller raises it
                _guarded(self.k, part, state, False, errors)


class _OpenMP:
    """PyTorch's OpenMP runtime, whose threads run the kernels' tasks where it is loaded.

    PyTorch's CPU operations (and MKL's, in its builds) run on an OpenMP team whose threads spin
    for a while after each parallel region, waiting for the next. Our own team's worker, started
    right after such an operation, found its core taken by a spinning thread: measured (2 cores,
    float32 softmax with out=, interleaved with torch.softmax), (2048, 1000) 1 629 us on our team
    against 785 us on torch's threads (torch 851 us); (512, 4096) 1 014 against 781 us. So where
    PyTorch has loaded its runtime, the kernels run as tasks (:mod:`._tasks`: a C function, without
    the GIL) on its threads: one team for both libraries, as many threads as PyTorch uses.
    """

    def __init__(self, path: str, tasks: ModuleType):
        import ctypes

        lib = ctypes.CDLL(path)  # the library already loaded: the same handle, the same threads
        self.parallel = lib.GOMP_parallel
        self.parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        self.parallel.restype = None
        self.max_threads = lib.omp_get_max_threads
        self.max_threads.restype = ctypes.c_int
        self.tasks, self.task = tasks, tasks.task.address
        # A task's int64 fields and the state after them, in one ctypes array: quicker to make
        # and fill than NumPy's (0.4 against 2 us measured), and it passes as the pointer itself.
        self.task_type = ctypes.c_int64 * (tasks.TASK_SIZE + tasks.STATE_SIZE)
        self.addressof = ctypes.addressof


def openmp_threads() -> int | None:
    """How many threads of PyTorch's OpenMP team share the kernels' work (:class:`_OpenMP`), or
    None where they run on their own team."""
    omp = _openmp()
    return None if omp is None else min(THREADS, omp.max_threads())


def _openmp() -> _OpenMP | None:
    """PyTorch's OpenMP runtime with the tasks loaded, once PyTorch is imported in this process
    (Linux; not in a forked child); never imports PyTorch. The first call that finds PyTorch starts loading the tasks in
    the background (as :func:`kernels` does the kernels: on that call with SOFTMAX_MULTI_FUSED=wait),
    and the kernels' own team serves calls until they are ready."""
    global _omp_loading
    if _omp is not None or _omp_loading is not None or _omp_forked:
        return _omp
    torch = sys.modules.get("torch")
    where = getattr(torch, "__file__", None)
    if where is None or not hasattr(torch, "get_num_threads"):
        return None  # not imported, or still importing: looked for again on a later call
    with _lock:
        if _omp_loading is None:
            _omp_loading = threading.Thread(target=_load_openmp, args=(where,), name="softmax-multi-openmp", daemon=True)
            _omp_loading.start()
    if os.environ.get(LOAD_ENV) == "wait":
        _omp_loading.join()
    return _omp


def _load_openmp(torch_file: str) -> None:
    """Find the GNU OpenMP runtime loaded from PyTorch's own folder and load the tasks for it."""
    global _omp
    with contextlib.suppress(Exception):  # not Linux, no OpenMP build, not the GNU runtime: our team
        home = os.path.dirname(os.path.realpath(torch_file)) + os.sep
        with open("/proc/self/maps") as maps:
            loaded = {line.split()[-1] for line in maps if line.rstrip().endswith((".so", ".so.1"))}
        paths = sorted(p for p in loaded if os.path.basename(p).startswith("libgomp") and os.path.realpath(p).startswith(home))
        if len(paths) == 1:
            from . import _tasks

            _omp = _OpenMP(paths[0], _tasks)


def _run_task(
    omp: _OpenMP,
    threads: int,
    kind: int,
    func: int,
    itemsize: int,
    rows: int,
    cols: int,
    out_cols: int,
    step: int,
    n_weights: int = 0,
    *,
    x: int,
    out: int,
    weights: int = 0,
) -> int:
    """Run a kernel as a task on up to ``threads`` of the OpenMP team (as many as it has):
    ``kind`` (``ROWS_TASK`` or ``ROW_STATS_TASK`` of :mod:`._tasks`), the function, the item size
    of x's dtype, the shapes of the C-contiguous x (rows, cols) and out (rows, out_cols), rows per
    claim, and the addresses of x, out and the row statistics' ``n_weights`` weights. The number
    of threads that took part."""
    t = omp.tasks
    task = omp.task_type()  # the fields, then the state whose counters the threads share: zeros
    task[t.KIND], task[t.FUNC], task[t.ITEMSIZE], task[t.STEP] = kind, func, itemsize, step
    task[t.X], task[t.OUT], task[t.WEIGHTS] = x, out, weights
    task[t.N_ROWS], task[t.N_COLS], task[t.OUT_COLS], task[t.N_WEIGHTS] = rows, cols, out_cols, n_weights
    task[t.STATE] = omp.addressof(task) + t.STATE_OFFSET
    omp.parallel(omp.task, task, max(1, min(threads, omp.max_threads())), 0)  # without the GIL
    return task[t.JOINED]


def _team(k: ModuleType) -> _Team | None:
    global _the_team, _team_pid
    if THREADS < 2:
        return None
    if _the_team is None or _team_pid != os.getpid():  # a forked child inherits the team object, not its threads
        with _lock:
            if _the_team is None or _team_pid != os.getpid():
                _the_team = _Team(k, THREADS - 1)
                _team_pid = os.getpid()
    return _the_team


def _import_kernels() -> ModuleType:
    from . import _kernels  # while warming up, before the module is published

    return _kernels


class _Failed(Exception):
    """Another thread that shares this call failed: its own error is the one to raise."""


def _guarded(
    k: ModuleType, part: Callable[[np.ndarray, bool], Any], state: np.ndarray, caller: bool, errors: list[BaseException]
) -> None:
    try:
        part(state, caller)
    except BaseException as err:
        errors.append(err)
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
