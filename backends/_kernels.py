"""Fused softmax kernels for float32 and float64 NumPy arrays, compiled with Numba.

NumPy's ufuncs make one pass over memory per operation and a fresh array per result; softmax
needs a max, a shifted exp, a sum and a division, so the ufunc path reads and writes the data
four or five times. These kernels read a slice, keep it in cache while they work on it, and
write the result once:

* **Statistics** of a slice, block by block (``BLOCK`` entries, in L1): the block's max ``m``,
  then ``exp(x - m)`` summed as two parts, the number ``k`` of entries equal to the max (whose
  exp is exactly 1) and the sum ``t`` of the others, so that ``log(k + t) = log1p((k - 1) + t)``
  keeps relative precision when one entry dominates (``logsumexp([0, -40])`` is 4.25e-18, not 0).
  The blocks' statistics merge at the end with the exact overall max (Milakov & Gimelshein's
  online softmax, without a running rescale, so no rounding error compounds from block to block).
* **Finishing**: the statistics pass leaves ``exp(x - block max)`` (softmax) or
  ``x - block max`` (log_softmax) in the output, still in cache; one more pass multiplies each
  block by ``exp(block max - M) / (K + T)`` or subtracts ``(M - block max) + log1p((K - 1) + T)``.

``exp`` is :func:`softmax_multi.backends._exp.exp_diff`. float32 sums are taken in the pass
that computes the exps, as float32 vector partial sums over runs of ``RUN`` entries added in
float64 (rows of at least ``FUSED_ROW`` entries, ``FUSED_SOFTMAX_ROW`` for softmax; shorter
rows in a float32 pass of their own); float64 sums in vector partial sums of at most ``SUB``
terms per lane combined with Neumaier compensation. Either way accuracy does not depend on the
slice length. The conformance suite checks the result against a long-double oracle.

Every kernel releases the GIL and takes its work from counters it shares with the other threads
that :mod:`softmax_multi.backends.fused` starts on the same call: a ``state`` array whose
entries ``CLAIMED``, ``DONE``, ``DONE_2`` and ``FAILED`` count claimed items, finished items (two
phases for a long row) and failed threads. A thread waits only for items another running thread
has claimed, never for one that has not started, so any number of threads may join late, or not
at all, and none can deadlock. The same kernels also run as *tasks* on other threads
(:mod:`._tasks`).

Non-finite slices take the same answers as the ufunc path: a slice whose max is not finite, or
whose sum is NaN, is all NaN (softmax, log_softmax), and logsumexp gives its max (``-inf`` for
an all ``-inf`` slice, ``+inf``) or NaN when it holds one.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._exp import EXP_FLAGS, exp_diff, log1p_f64
from ._intrinsics import fetch_add, load_acquire, maxnum, spin_pause, wide_vectors

# The function a kernel computes: an argument of every kernel, a constant inside them.
SOFTMAX, LOG_SOFTMAX, LOGSUMEXP = 0, 1, 2
# The entries of a ``state`` array shared by the threads of one call.
CLAIMED, DONE, DONE_2, FAILED = range(4)
STATE_SIZE = 4

# error_model "numpy": a float division by zero gives inf or NaN as in NumPy instead of raising,
# so that no kernel can stop halfway through its share of work that other threads wait on.
_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}
# Only this set of fast-math flags is allowed on the sums: reassociation lets the compiler keep
# several vector partial sums, and the code below bounds how many terms each one takes. It must
# never reach exp_diff, whose exact steps reassociation would undo.
_SUM = {"reassoc", "nsz", "contract"}
BLOCK = 8192  # entries per block of the statistics pass, and the longest row done as a chunk (32-64 KiB: in L2)
CHUNK_ENTRIES = 8192  # entries per chunk of short rows (rows of up to BLOCK): 32-64 KiB, in L1 or L2 between passes
SUB = 512  # entries per vectorised partial sum of float64 data, combined with compensation
RUN = 2048  # float32 entries per run summed in float32 vector partial sums (16 lanes: 128 terms each)
# float32 rows at least this long sum their exps in the pass that computes them (_exp_row32):
# log_softmax and logsumexp (two sums), softmax (one). Shorter rows sum in a pass of their own.
# Each row's vector sums cost a fixed time to set up and combine (64 entries a round: 16 lanes,
# 4 partial sums), so the fused pass pays off only from some length. Measured, one thread, a
# chunk's passes over 64 MiB of rows, separate / fused, ms: log_softmax rows of 128: 14.8 / 17.1,
# 256: 16.3 / 14.9, 1 024: 16.3 / 12.4; softmax rows of 256: 11.2 / 13.1, 512: 10.5 / 11.0,
# 1 024: 11.2 / 10.9, 8 192: 10.0 / 9.0.
FUSED_ROW = 256
FUSED_SOFTMAX_ROW = 1024
MAX_BLOCKS = 8192  # statistics scratch per slice: at most 8192 (m, k, t) triples, 192 KiB


# --- one block: max, exp, the two parts of the sum ----------------------------------------------


@numba.njit(fastmath={"nnan", "nsz", "reassoc"}, **_JIT)
def _max(xs):
    """Largest entry of xs (not empty); may miss a NaN, which the sum then reveals."""
    wide_vectors()
    m = xs[0]
    for j in range(1, xs.shape[0]):
        m = maxnum(m, xs[j])
    return m


@numba.njit(fastmath=EXP_FLAGS, **_JIT)
def _exp_into(xs, m, es):
    """es[:] = exp(xs - m), vectorised."""
    wide_vectors()
    for j in range(xs.shape[0]):
        es[j] = exp_diff(xs[j], m)


@numba.njit(fastmath=EXP_FLAGS, **_JIT)
def _exp_shift_into(xs, m, es, ys):
    """es[:] = exp(xs - m) and ys[:] = xs - m, in one pass."""
    wide_vectors()
    for j in range(xs.shape[0]):
        v = xs[j]
        es[j] = exp_diff(v, m)
        ys[j] = v - m


@numba.njit(fastmath=_SUM, **_JIT)
def _parts(es):
    """(k, t) of exps: how many are exactly 1 (the max's own), and the float64 sum of the others."""
    wide_vectors()
    k = 0.0
    t = 0.0
    for j in range(es.shape[0]):
        e = es[j]
        below = es.dtype.type(e != 1)  # arithmetic, not a select: LLVM vectorises both sums then
        t += np.float64(e * below)  # 0 for the max's own entries; a NaN reaches t (NaN * 1)
        k += np.float64(1 - below)
    return k, t


@numba.njit(fastmath=_SUM, **_JIT)
def _total(es):
    """(0, the float64 sum of exps): softmax needs only the total, not its two parts."""
    wide_vectors()
    t = 0.0
    for j in range(es.shape[0]):
        t += np.float64(es[j])
    return 0.0, t


@numba.njit(**_JIT)
def _sum_parts(es, split):
    """(k, t) of a block's exps (``split``), or (0, total); in runs of SUB terms combined with
    Neumaier compensation for float64 data (a float32 block is summed in float64 in one run)."""
    n = es.shape[0]
    if es.itemsize == 4:
        return _parts(es) if split else _total(es)
    k = 0.0
    s = 0.0
    c = 0.0
    for a in range(0, n, SUB):
        run = es[a : min(a + SUB, n)]
        kr, tr = _parts(run) if split else _total(run)
        k += kr
        u = s + tr
        c += (s - u) + tr if s >= tr else (tr - u) + s
        s = u
    return k, s + c


@numba.njit(fastmath=_SUM, inline="always", **_JIT)
def _exp_row32(func, xs, m, ys):
    """(k, t) of the float32 row xs shifted by its max m, as float64, in one pass that also writes
    ys: softmax the exps, log_softmax ``x - m``, logsumexp nothing. Runs of RUN entries are summed
    in float32 vector partial sums, the runs' sums in float64. The exps are exp_diff's to the bit:
    LLVM's fast-math flags belong to each instruction, and exp_diff's keep theirs when inlined
    into these reassociated sums (``tests/test_numpy_backend.py`` checks it). Inlined by Numba
    into its two callers, which are compiled with the sums' flags.

    (A float64 sum in the pass of the exps halves its vector width; a pass of its own over stored
    exps, as float64 data takes, 40 % more: log_softmax, 8 192 entries in cache, 5.2 and 4.1 us
    against 2.9.)"""
    f = xs.dtype.type
    n = xs.shape[0]
    k = 0.0
    t = 0.0
    for a in range(0, n, RUN):
        xr = xs[a : min(a + RUN, n)]  # a slice, indexed from 0: a loop from a to b does not vectorise
        yr = ys[a : min(a + RUN, n)]
        kr = f(0.0)
        tr = f(0.0)
        if func == SOFTMAX:
            for j in range(xr.shape[0]):
                e = exp_diff(xr[j], m)
                yr[j] = e
                tr += e
        else:
            for j in range(xr.shape[0]):
                v = xr[j]
                e = exp_diff(v, m)
                if func == LOG_SOFTMAX:  # loop-invariant: as fast as a loop of its own (measured)
                    yr[j] = v - m
                below = f(e != 1)  # as in _parts
                tr += e * below
                kr += f(1.0) - below
        k += np.float64(kr)
        t += np.float64(tr)
    return k, t


@numba.njit(fastmath=_SUM, **_JIT)
def _exp_sums32(func, xs, m, ys):
    """:func:`_exp_row32` of one block."""
    wide_vectors()
    return _exp_row32(func, xs, m, ys)


@numba.njit(fastmath=_SUM, **_JIT)
def _chunk_exp_sums32(func, x, ms, ys, ks, ts):
    """:func:`_exp_row32` of each row of a chunk of float32 rows."""
    wide_vectors()
    for i in range(x.shape[0]):
        ks[i], ts[i] = _exp_row32(func, x[i], x.dtype.type(ms[i]), ys[i])


@numba.njit(**_JIT)
def in_place(x, out):
    """Is ``out`` x's own memory? Then a loop that reads x and writes out must read a copy:
    LLVM vectorises such a loop only behind a run-time check that the two arrays are apart, and
    takes its scalar version where they overlap (measured, 16 MiB of rows in place, before the
    copies: 3-6x slower, and float32 sums in another order, so other bits)."""
    return x.ctypes.data == out.ctypes.data


@numba.njit(**_JIT)
def block_stats(xs, ys, scratch, func):
    """(m, k, t) of the block xs, keeping in ys what :func:`finish_blocks` needs: softmax the
    exps, log_softmax ``x - m``, logsumexp nothing (scratch[0] holds the exps then). ``scratch``
    has two rows of at least the block's length; where ys is xs (in place), the block is read
    from a copy in the second."""
    if func != LOGSUMEXP and in_place(xs, ys):
        copy = scratch[1, : xs.shape[0]]
        copy[:] = xs
        return _block_stats(copy, ys, scratch[0], func)
    return _block_stats(xs, ys, scratch[0], func)


@numba.njit(**_JIT)
def _block_stats(xs, ys, scratch, func):
    m = _max(xs)
    if m == -np.inf:  # an all -inf block adds nothing
        if func == SOFTMAX:
            ys[:] = 0.0
        elif func == LOG_SOFTMAX:
            ys[:] = -np.inf
        return np.float64(m), 0.0, 0.0
    if not m < np.inf:
        return np.float64(m), 0.0, np.nan  # +inf or NaN: the slice is NaN, or decided by logsumexp_of
    if xs.itemsize == 4:
        k, t = _exp_sums32(func, xs, m, ys)
        return np.float64(m), k, t
    es = ys if func == SOFTMAX else scratch[: xs.shape[0]]
    if func == LOG_SOFTMAX:
        _exp_shift_into(xs, m, es, ys)
    else:
        _exp_into(xs, m, es)
    k, t = _sum_parts(es, func != SOFTMAX)
    return np.float64(m), k, t


# --- statistics of many blocks, and the finish ----------------------------------------------------


@numba.njit(**_JIT)
def merge_blocks(ms, ks, ts, nb):
    """(M, K, T) of the first nb blocks: the exact max, the count at it, and the sums brought to
    it, with Neumaier compensation."""
    big = -np.inf
    for i in range(nb):
        big = max(big, ms[i])
    if nb == 1:
        return big, ks[0], ts[0]
    if not -np.inf < big < np.inf:
        return big, 0.0, np.nan
    kk = 0.0
    s = 0.0
    c = 0.0
    for i in range(nb):
        if ms[i] == big:
            kk += ks[i]
            v = ts[i]
        elif ms[i] > -np.inf:
            v = (ks[i] + ts[i]) * exp_diff(ms[i], big)
        else:
            v = 0.0
        u = s + v
        c += (s - u) + v if s >= v else (v - u) + s
        s = u
    return big, kk, s + c


@numba.njit(**_JIT)
def log_total(k, t):
    """log(k + t) as log1p((k - 1) + t): exact where one entry dominates."""
    return math.log1p((k - 1.0) + t)


@numba.njit(**_JIT)
def finish_blocks(func, ys, block, ms, m, k, t):
    """Turn what block_stats kept in ys into the result, from the slice's (m, k, t): softmax
    multiplies block i by exp(ms[i] - m) / (k + t), log_softmax subtracts (m - ms[i]) + log(k + t)."""
    n = ys.shape[0]
    if not (-np.inf < m < np.inf and not math.isnan(t)):
        ys[:] = np.nan
        return
    total = k + t
    log_s = log_total(k, t)
    i = 0
    for a in range(0, n, block):
        yb = ys[a : min(a + block, n)]
        if func == SOFTMAX:
            f = exp_diff(ms[i], m) / total if ms[i] > -np.inf else 0.0
            _scale(yb, ys.dtype.type(f))
        elif ms[i] > -np.inf:  # an all -inf block holds -inf already
            # (m - ms[i]) + log s as the sum of two numbers of ys's dtype: subtracted in that
            # dtype, without converting each entry to float64 and back.
            c = (m - ms[i]) + log_s
            c_hi = ys.dtype.type(c)
            _offset(yb, c_hi, ys.dtype.type(c - np.float64(c_hi)))
        i += 1


@numba.njit(**_JIT)
def _offset(ys, c_hi, c_lo):
    wide_vectors()
    for j in range(ys.shape[0]):
        ys[j] = (ys[j] - c_hi) - c_lo


@numba.njit(**_JIT)
def _scale(ys, f):
    wide_vectors()
    for j in range(ys.shape[0]):
        ys[j] *= f


@numba.njit(**_JIT)
def logsumexp_of(xs, m, k, t):
    """logsumexp of the slice xs from its statistics."""
    if -np.inf < m < np.inf and not math.isnan(t):
        return m + log_total(k, t)
    if m == np.inf and not np.isnan(xs).any():
        return m
    return m if np.isnan(m) or m == -np.inf else np.nan


@numba.njit(**_JIT)
def block_size(size, max_blocks):
    """BLOCK, or more where ``size`` entries would need over ``max_blocks`` blocks of it."""
    return max(BLOCK, -(-size // max_blocks))


@numba.njit(**_JIT)
def slice_stats(xs, ys, ms, ks, ts, scratch, func):
    """(m, k, t, block) of the slice xs (not empty), block by block; ys keeps what block_stats says."""
    n = xs.shape[0]
    block = block_size(n, ms.shape[0])
    nb = 0
    for a in range(0, n, block):
        b = min(a + block, n)
        ms[nb], ks[nb], ts[nb] = block_stats(xs[a:b], ys[a:b], scratch, func)
        nb += 1
    m, k, t = merge_blocks(ms, ks, ts, nb)
    return m, k, t, block


# --- the kernels: each a loop that claims work, shared by the threads of one call -----------------


@numba.njit(**_JIT)
def _claim(state, counter, step, total):
    """The next ``step`` items of [0, total) that no thread has claimed yet: (lo, hi), empty when
    none are left."""
    lo = min(fetch_add(state, counter, step), total)
    return lo, min(lo + step, total)


# Each kernel below repeats the loop "claim a range, work on it, add it to DONE". A generator
# yielding the claimed ranges would say it once, but a cached kernel that iterates a cached
# Numba generator fails to load from the cache in a fresh process (KeyError on the generator
# type; numba/numba#8679), and passing the work as a function argument defeats caching instead
# (numba/numba#6251).


@numba.njit(**_JIT)
def wait_change(box, seen, spins):
    """Spin until box[0] differs from ``seen`` (new work was posted): True; False after ``spins``
    rounds, so that a waiting worker can go to sleep."""
    for _ in range(spins):
        if load_acquire(box, 0) != seen:
            return True
        spin_pause()
    return load_acquire(box, 0) != seen


@numba.njit(**_JIT)
def post_and_join(box, state, spins):
    """Post new work (box[0] += 1) without the GIL, then spin until a thread has claimed some of it
    (state[CLAIMED] moved) or failed: True; False after ``spins`` rounds. A worker that sees the
    post takes the free GIL at once and enters its kernel while the caller waits here; posted while
    the caller held the GIL, it slept on the GIL until the caller entered its own kernel."""
    fetch_add(box, 0, 1)
    for _ in range(spins):
        if load_acquire(state, CLAIMED) != 0 or load_acquire(state, FAILED):
            return True
        spin_pause()
    return False


@numba.njit(**_JIT)
def wait_done(state, counter, total, spins):
    """Spin until state[counter] reaches total: True; False when another thread failed (state[FAILED])
    or after ``spins`` rounds, so that the caller can yield the core."""
    for _ in range(spins):
        if load_acquire(state, counter) >= total:
            return True
        if load_acquire(state, FAILED):
            return False
        spin_pause()
    return load_acquire(state, counter) >= total


@numba.njit(**_JIT)
def rows(func, x, out, state, step):
    """softmax, log_softmax or logsumexp of the rows of the 2-D x, ``step`` rows at a time,
    shared with the other threads that run this on the same ``state``. For logsumexp, out is
    (rows, 1). Rows of up to BLOCK entries go a chunk of ``step`` rows at a time (each pass over
    the whole chunk, in cache: see :func:`_chunk`); longer ones a row at a time, block by block.

    The scratch is allocated here, once per thread and call: each array argument costs the call
    half a microsecond in Numba's dispatcher, more than this allocation does."""
    n = x.shape[1]
    copied = in_place(x, out)  # each chunk (or block) read from a copy: see in_place
    if n <= BLOCK:
        stats = np.empty((4, step))
        scratch = np.empty((step if x.itemsize == 8 or n < FUSED_ROW else 0, n), x.dtype)
        copy = np.empty((step if copied else 0, n), x.dtype)
    else:
        stats = np.empty((4, min(-(-n // BLOCK), MAX_BLOCKS)))
        scratch = np.empty((2, block_size(n, stats.shape[1])), x.dtype)
        copy = scratch[:0]
    while True:
        r0, r1 = _claim(state, CLAIMED, step, x.shape[0])
        if r0 >= r1:
            return
        if n <= BLOCK and copied:
            c = copy[: r1 - r0]
            c[:] = out[r0:r1]
            _chunk(func, c, out[r0:r1], stats[0], stats[1], stats[2], stats[3], scratch)
        elif n <= BLOCK:
            _chunk(func, x[r0:r1], out[r0:r1], stats[0], stats[1], stats[2], stats[3], scratch)
        else:
            for i in range(r0, r1):
                _row(func, x[i], out[i], stats[0], stats[1], stats[2], scratch)
        fetch_add(state, DONE, r1 - r0)


@numba.njit(**_JIT)
def _row(func, xs, ys, ms, ks, ts, scratch):
    """One row longer than BLOCK, block by block: statistics, then the finish."""
    m, k, t, block = slice_stats(xs, ys, ms, ks, ts, scratch, func)
    if func == LOGSUMEXP:
        ys[0] = logsumexp_of(xs, m, k, t)
    else:
        finish_blocks(func, ys, block, ms, m, k, t)


# A chunk of short rows: each pass below runs over the whole chunk, rows in the outer loop and
# their entries in the inner one, so that one call serves many rows (a call per row costs more
# than a short row's work) and the chunk stays in cache between the passes.


@numba.njit(fastmath={"nnan", "nsz", "reassoc"}, **_JIT)
def _chunk_max(x, ms):
    """Each row's largest entry. The loop runs over the row as a slice, from 0 (x[i, 0] taken
    twice): from 1, and indexed in two dimensions, short rows took up to twice as long (best of
    40 runs, a chunk of 8 192 float32 entries: rows of 8 3.0 against 1.7 us, 32 1.9 against 1.4,
    128 0.72 against 0.56; float64 rows of 32 1.8 against 1.3; rows of 255 and more the same)."""
    wide_vectors()
    for i in range(x.shape[0]):
        xr = x[i]
        m = xr[0]
        for j in range(xr.shape[0]):
            m = maxnum(m, xr[j])
        ms[i] = m


@numba.njit(fastmath=EXP_FLAGS, **_JIT)
def _chunk_exp(x, ms, es):
    wide_vectors()
    for i in range(x.shape[0]):
        m = x.dtype.type(ms[i])
        for j in range(x.shape[1]):
            es[i, j] = exp_diff(x[i, j], m)


@numba.njit(fastmath=_SUM, **_JIT)
def _chunk_sums(es, ks, ts, split):
    """ts[i] = the sum of row i's exps, or with ``split`` (log_softmax, logsumexp) the sum of those
    below 1, and ks[i] the count of those equal to 1 (the max's own), so that a dominant entry
    keeps its relative precision. float32 rows here are shorter than FUSED_ROW, or
    FUSED_SOFTMAX_ROW (longer ones take :func:`_exp_row32`, in the pass of their exps), and are
    summed in float32: at most 1 023 terms, in vector partial sums where the row is long enough
    (measured: 3.8 eps at worst on 255 equal terms; float64 sums made the pass 10-15 % slower).
    float64 rows go as blocks' do (:func:`_sum_parts`: runs of SUB terms, compensated), since
    float64 has no wider type to sum in: one plain loop over 8 192 equal terms was measured 29
    eps off."""
    wide_vectors()
    n = es.shape[1]
    if es.itemsize == 8:
        for i in range(es.shape[0]):
            ks[i], ts[i] = _sum_parts(es[i], split)
        return
    for i in range(es.shape[0]):
        er = es[i]  # a row slice: 1-6 % quicker than es[i, j] (best of 40, as for _chunk_max)
        t = es.dtype.type(0.0)
        k = es.dtype.type(0.0)
        if split:
            for j in range(n):
                e = er[j]
                # arithmetic, not a select, so that the loop vectorises; a product, not e - [e == 1],
                # which reassociation would turn into sum(e) - count and lose the rest again
                below = es.dtype.type(e != 1)
                t += e * below  # 0 for the max's own entries; a NaN reaches t (NaN * 1)
                k += 1 - below
        else:
            for j in range(n):
                t += er[j]
        ks[i] = k
        ts[i] = t


@numba.njit(fastmath=EXP_FLAGS, **_JIT)
def _chunk_constants(func, ms, ks, ts, cs):
    """Each row's constant, in one vectorised loop over the rows (a call to libm's log per row cost
    more than a short row's whole softmax): softmax 1 / (k + t), log_softmax and logsumexp
    log(k + t) = log1p((k - 1) + t); NaN for a row whose max is not finite or whose sum is NaN."""
    wide_vectors()
    for i in range(ms.shape[0]):
        ok = -np.inf < ms[i] < np.inf and ts[i] == ts[i]
        if func == SOFTMAX:
            c = 1.0 / (ks[i] + ts[i])
        else:
            c = log1p_f64((ks[i] - 1.0) + ts[i])
        cs[i] = c if ok else np.nan


@numba.njit(**_JIT)
def _chunk_scale(ys, cs):
    """Softmax rows: each row's exps times its constant (NaN for a NaN row)."""
    wide_vectors()
    for i in range(ys.shape[0]):
        f = ys.dtype.type(cs[i])
        for j in range(ys.shape[1]):
            ys[i, j] *= f


@numba.njit(fastmath=EXP_FLAGS, **_JIT)
def _chunk_exp_shift(x, ms, es, ys):
    """es[:] = exp(x - m) and ys[:] = x - m, in one pass over x (log_softmax)."""
    wide_vectors()
    for i in range(x.shape[0]):
        m = x.dtype.type(ms[i])
        for j in range(x.shape[1]):
            v = x[i, j]
            es[i, j] = exp_diff(v, m)
            ys[i, j] = v - m


@numba.njit(**_JIT)
def _chunk_offset(ys, cs):
    """log_softmax rows, from ys = x - m in place: minus the row's log(k + t), as two numbers of
    ys's dtype (NaN for a NaN row)."""
    wide_vectors()
    for i in range(ys.shape[0]):
        c_hi = ys.dtype.type(cs[i])
        c_lo = ys.dtype.type(cs[i] - np.float64(c_hi))
        yr = ys[i]  # a row slice: rows of 32 took 0.8 against 1.0 us a chunk with ys[i, j]
        for j in range(yr.shape[0]):
            yr[j] = (yr[j] - c_hi) - c_lo


@numba.njit(**_JIT)
def _chunk(func, x, out, ms, ks, ts, cs, scratch):
    """A chunk of rows of up to BLOCK entries: the rows' maxima, exps and sums, pass by pass over
    the whole chunk, then each row's constant and the result; ``scratch`` is (rows, n) or taller."""
    rows = x.shape[0]
    mx = ms[:rows]
    kk = ks[:rows]
    tt = ts[:rows]
    cc = cs[:rows]
    _chunk_max(x, mx)
    if x.itemsize == 4 and x.shape[1] >= (FUSED_SOFTMAX_ROW if func == SOFTMAX else FUSED_ROW):
        _chunk_exp_sums32(func, x, mx, out, kk, tt)
    elif func == SOFTMAX:
        _chunk_exp(x, mx, out)
        _chunk_sums(out, kk, tt, False)
    else:
        es = scratch[:rows]  # (rows, n): a slice of whole rows keeps it C-contiguous, so the loops vectorise
        if func == LOG_SOFTMAX:
            _chunk_exp_shift(x, mx, es, out)
        else:
            _chunk_exp(x, mx, es)
        _chunk_sums(es, kk, tt, True)
    _chunk_constants(func, mx, kk, tt, cc)
    if func == SOFTMAX:
        _chunk_scale(out, cc)
    elif func == LOG_SOFTMAX:
        _chunk_offset(out, cc)
    else:
        for i in range(rows):
            m = mx[i]
            out[i, 0] = m + cc[i] if -np.inf < m < np.inf and tt[i] == tt[i] else logsumexp_of(x[i], m, kk[i], tt[i])


@numba.njit(**_JIT)
def long_row(func, x, out, state, step, block, ms, ks, ts, cms, cks, cts, scratch, taken, caller, spins):
    """One thread's share of one long 1-D row; every thread sharing it runs this on one ``state``.

    1. Statistics: blocks of ``block`` entries, ``step`` blocks per claim; each block's (m, k, t)
       goes to ms[b], ks[b], ts[b] and each claim's merged triple to cms[c], cks[c], cts[c];
       ``out`` keeps what :func:`block_stats` says.
    2. Wait for every claim to be done, and merge the claims' triples (each thread alike).
    3. Finish: softmax or log_softmax, claim by claim (taken[c] marks claim c as finished or
       being finished). A thread first takes the claims it did in 1, the latest first: what
       they left in ``out`` is still in its core's cache. logsumexp is written by the caller
       only, since the caller must not return while another thread still writes.

    Returns 1 when this thread's share is done; 0 after ``spins`` rounds of waiting in 2 (call
    again: claims already taken are skipped); -1 when a thread sharing the row failed.
    """
    n = x.shape[0]
    nb = ms.shape[0]
    mine = np.empty(cms.shape[0], np.int64)
    count = 0
    while True:
        b0, b1 = _claim(state, CLAIMED, step, nb)
        if b0 >= b1:
            break
        for b in range(b0, b1):
            a = b * block
            e = min(a + block, n)
            ms[b], ks[b], ts[b] = block_stats(x[a:e], out[a:e], scratch, func)
        c = b0 // step
        mine[count] = c
        count += 1
        cms[c], cks[c], cts[c] = merge_blocks(ms[b0:b1], ks[b0:b1], ts[b0:b1], b1 - b0)
        fetch_add(state, DONE, b1 - b0)
    if not wait_done(state, DONE, nb, spins):
        return -1 if load_acquire(state, FAILED) else 0
    m, k, t = merge_blocks(cms, cks, cts, cms.shape[0])
    if func == LOGSUMEXP:
        if caller:
            out[0] = logsumexp_of(x, m, k, t)
        return 1
    for i in range(count + cms.shape[0]):
        c = mine[count - 1 - i] if i < count else i - count
        if fetch_add(taken, c, 1) == 0:
            b0, b1 = c * step, min(c * step + step, nb)
            finish_blocks(func, out[b0 * block : min(b1 * block, n)], block, ms[b0:b1], m, k, t)
            fetch_add(state, DONE_2, b1 - b0)
    return 1


@numba.njit(**_JIT)
def columns(func, x, out, state, step, width):
    """The same along the middle axis of the 3-D x (outer, n, inner), ``step`` tiles at a time."""
    ms = np.empty(width)
    ss = np.empty(3 * width)
    copy = np.empty(width if func != LOGSUMEXP and in_place(x, out) else 0, x.dtype)
    tiles = x.shape[0] * -(-x.shape[2] // width)
    while True:
        t0, t1 = _claim(state, CLAIMED, step, tiles)
        if t0 >= t1:
            return
        _columns(func, x, out, t0, t1, width, ms, ss, copy)
        fetch_add(state, DONE, t1 - t0)


@numba.njit(fastmath=EXP_FLAGS, **_JIT)
def _columns(func, x, out, t0, t1, width, ms, ss, copy):
    """columns() over tiles t0..t1.

    A tile is ``width`` adjacent columns of one outer index; its max and compensated sum are kept
    per column in ms[:width] and ss (k, t and the compensation of t, ``width`` each), each pass
    reading rows of ``width`` contiguous entries. In place (``copy`` not empty: see
    :func:`in_place`), the last pass reads each row of the tile from a copy.
    """
    n = x.shape[1]
    inner = x.shape[2]
    tiles_per_outer = -(-inner // width)
    for tile in range(t0, t1):
        o = tile // tiles_per_outer
        j0 = (tile % tiles_per_outer) * width
        j1 = min(j0 + width, inner)
        w = j1 - j0
        m = ms[:w]
        k = ss[:w]
        t = ss[width : width + w]
        c = ss[2 * width : 2 * width + w]
        m[:] = -np.inf
        for r in range(n):
            for j in range(w):
                m[j] = maxnum(m[j], np.float64(x[o, r, j0 + j]))  # misses NaN; the sum below finds it
        k[:] = 0.0
        t[:] = 0.0
        c[:] = 0.0
        for r in range(n):
            for j in range(w):
                mj = x.dtype.type(m[j])
                e = np.float64(exp_diff(x[o, r, j0 + j], mj))
                if e == 1:
                    k[j] += 1.0
                else:
                    u = t[j] + e
                    c[j] += (t[j] - u) + e if t[j] >= e else (e - u) + t[j]
                    t[j] = u
        for j in range(w):
            t[j] += c[j]
            if func == LOGSUMEXP:
                out[o, 0, j0 + j] = logsumexp_of(x[o, :, j0 + j], m[j], k[j], t[j])
            elif not -np.inf < m[j] < np.inf or math.isnan(t[j]):
                m[j] = np.nan
            elif func == LOG_SOFTMAX:
                t[j] = log_total(k[j], t[j])
            else:
                t[j] = 1.0 / (k[j] + t[j])
        if func == LOGSUMEXP:
            continue
        for r in range(n):
            if copy.shape[0]:
                row = copy[:w]
                row[:] = x[o, r, j0:j1]
                _finish_columns(func, row, out[o, r, j0:j1], m, t)
            else:
                _finish_columns(func, x[o, r, j0:j1], out[o, r, j0:j1], m, t)


@numba.njit(fastmath=EXP_FLAGS, inline="always", **_JIT)
def _finish_columns(func, xs, ys, m, t):
    """One row of a tile of columns: softmax or log_softmax from the columns' max m and constant t."""
    for j in range(xs.shape[0]):
        v = xs[j]
        mj = xs.dtype.type(m[j])
        if func == SOFTMAX:
            ys[j] = exp_diff(v, mj) * xs.dtype.type(t[j])
        else:
            ys[j] = np.float64(v - mj) - t[j]


# --- logsumexp with weights (SciPy's b=): two passes over each row of x and b ------------------


@numba.njit(fastmath={"nnan", "nsz", "reassoc"}, **_JIT)
def _weighted_max(xs, bs):
    """The max of xs where bs != 0 (-inf if there is none); may miss a NaN (counted apart)."""
    wide_vectors()
    neg_inf = xs.dtype.type(-np.inf)
    m = neg_inf
    for j in range(xs.shape[0]):
        m = maxnum(m, xs[j] if bs[j] != 0 else neg_inf)
    return m


@numba.njit(**_JIT)
def _weighted_nans(xs, bs):
    """How many entries make the slice NaN: a NaN weight, or a NaN x of non-zero weight."""
    wide_vectors()
    count = 0
    for j in range(xs.shape[0]):
        count += 1 if (bs[j] != bs[j]) or (bs[j] != 0 and xs[j] != xs[j]) else 0
    return count


@numba.njit(fastmath=EXP_FLAGS, **_JIT)
def _weighted_terms(xs, bs, m, es):
    """es[:] = b exp(x - m) where b != 0 and x < m, else 0 (the max's entries are counted apart)."""
    wide_vectors()
    for j in range(xs.shape[0]):
        es[j] = bs[j] * exp_diff(xs[j], m) if bs[j] != 0 and xs[j] != m else es.dtype.type(0.0)


@numba.njit(fastmath=_SUM, **_JIT)
def _weighted_top(xs, bs, m):
    """The weight at the max: the sum of b where x == m."""
    wide_vectors()
    k = 0.0
    for j in range(xs.shape[0]):
        k += np.float64(bs[j]) if xs[j] == m else 0.0
    return k


@numba.njit(**_JIT)
def weighted_stats(xs, bs, scratch):
    """(m, k, t, nan) of one weighted slice: the max of the entries of non-zero weight, the weight
    at it, the weighted sum of exp(x - m) below it, and whether it is NaN."""
    if _weighted_nans(xs, bs):
        return np.nan, 0.0, 0.0, True
    m = _weighted_max(xs, bs)
    if not -np.inf < m < np.inf:
        k = _weighted_top(xs, bs, m) if m == np.inf else 0.0
        return np.float64(m), k, 0.0, False
    n = xs.shape[0]
    k = _weighted_top(xs, bs, m)
    s = 0.0
    c = 0.0
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        es = scratch[: b - a]
        _weighted_terms(xs[a:b], bs[a:b], m, es)
        _, tr = _sum_parts(es, False)
        u = s + tr
        c += (s - u) + tr if s >= tr else (tr - u) + s
        s = u
    return np.float64(m), k, s + c, False


@numba.njit(**_JIT)
def weighted_finish(m, k, t, nan, empty, return_sign):
    """(value, sign) from a weighted slice's statistics, as softmax_multi.reference's
    logsumexp_from_stats: -inf with sign -1 for an empty slice (SciPy's), NaN for a negative
    total without return_sign."""
    if empty:
        return -np.inf, -1.0
    if nan:
        return np.nan, np.nan
    if m == -np.inf:
        return -np.inf, 0.0
    if m == np.inf:
        if k == 0 or math.isnan(k):
            return np.nan, np.nan
        sign = 1.0 if k > 0 else -1.0
        return (np.inf if return_sign or sign > 0 else np.nan), sign
    total = k + t
    sign = 1.0 if total > 0 else (-1.0 if total < 0 else 0.0)
    if k == 0:
        r = m + math.log(abs(t)) if t != 0 else -np.inf
    else:
        u = (sign * k - 1.0) + sign * t
        r = m + math.log1p(u) if u > -1.0 else -np.inf
    if sign < 0 and not return_sign:
        r = np.nan
    return r, sign


@numba.njit(**_JIT)
def weighted_rows(x, b, value, sign, state, step, return_sign):
    """logsumexp with weights b (of x's shape) of the rows of the 2-D x: value[i], sign[i]."""
    n = x.shape[1]
    scratch = np.empty(BLOCK, x.dtype)
    while True:
        r0, r1 = _claim(state, CLAIMED, step, x.shape[0])
        if r0 >= r1:
            return
        for i in range(r0, r1):
            if n == 0:
                value[i], sign[i] = weighted_finish(0.0, 0.0, 0.0, False, True, return_sign)
                continue
            m, k, t, nan = weighted_stats(x[i], b[i], scratch)
            value[i], sign[i] = weighted_finish(m, k, t, nan, False, return_sign)
        fetch_add(state, DONE, r1 - r0)


# --- the statistics of each row, for a loss: (m, k, t) and the weighted distance to the max -----


@numba.njit(fastmath=_SUM, **_JIT)
def _gaps(xs, ws, m):
    """The float64 sum of w (m - x) over the entries whose weight w is not NaN (m: 0 if not finite)."""
    wide_vectors()
    u = 0.0
    for j in range(xs.shape[0]):
        w = ws[j]
        u += 0.0 if math.isnan(w) else w * (m - np.float64(xs[j]))
    return u


@numba.njit(**_JIT)
def row_stats(x, ws, out, state, step):
    """For each row i of the 2-D x: out[:, i] = (m, k, t, u), the statistics of
    :func:`block_stats` merged over the row and, where ``ws`` (float64, a weight per column, NaN
    for a column that takes no part) is not empty, u = sum of ws (m - x) over the columns taking
    part (m taken as 0 where it is not finite), as :func:`softmax_multi.loss.index_stats` defines
    them; else u = 0."""
    n = x.shape[1]
    nb = max(1, min(-(-n // BLOCK), MAX_BLOCKS))
    ms, ks, ts = np.empty(nb), np.empty(nb), np.empty(nb)
    scratch = np.empty((1, block_size(n, nb)), x.dtype)
    while True:
        r0, r1 = _claim(state, CLAIMED, step, x.shape[0])
        if r0 >= r1:
            return
        for i in range(r0, r1):
            m, k, t, _ = slice_stats(x[i], x[i], ms, ks, ts, scratch, LOGSUMEXP)  # LOGSUMEXP writes nothing to ys
            out[0, i], out[1, i], out[2, i] = m, k, t
            out[3, i] = _gaps(x[i], ws, m if -np.inf < m < np.inf else 0.0) if ws.shape[0] else 0.0
        fetch_add(state, DONE, r1 - r0)
