"""Fused softmax kernels for float32 and float64 NumPy arrays, compiled with Numba.

NumPy's ufuncs make one pass over memory per operation and a fresh array per result; softmax
needs a max, a shifted exp, a sum and a division, so the ufunc path reads and writes the data
four or five times. These kernels read a slice, keep it in cache while they work on it, and
write the result once:

* **Statistics** of a slice in one pass: blocks of ``BLOCK`` entries, each read twice while it
  sits in L1 (block max, then the sum of ``exp(x - block max)``), and the blocks' ``(m, s)``
  pairs merged at the end with the exact overall max (Milakov & Gimelshein's online softmax,
  without its running rescale, so no rounding error compounds from block to block).
* **Finishing**: the statistics pass leaves ``exp(x - block max)`` (softmax) or
  ``x - block max`` (log_softmax) in the output, still in cache; one more pass multiplies each
  block by ``exp(block max - M) / S`` or subtracts ``(M - block max) + log S``.

``exp`` is a polynomial the compiler vectorises (8 float32 or 4 float64 lanes with AVX2):
Cody-Waite reduction ``x = n ln2 + r`` with ``|r| <= ln2/2``, a polynomial whose error is
far below half an ulp (minimax for float32, Taylor for float64), and ``2**n`` built from its
bits. Sums are taken
in float64 (float32 data) or in vector partial sums of at most ``SUB`` terms per lane
combined with Neumaier compensation (float64 data), so accuracy does not depend on the slice
length. The conformance suite checks the result against a long-double oracle.

Every kernel releases the GIL and takes its work from counters it shares with the other
threads that ``numpy_backend`` starts on the same call (see "sharing work between threads").
Non-finite slices take the same answers as the ufunc path: a slice whose max is not finite, or
whose sum is NaN, is all NaN (softmax, log_softmax), and logsumexp gives its max (``-inf`` for
an all ``-inf`` slice, ``+inf``) or NaN when it holds one.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

# error_model "numpy": a float division by zero gives inf or NaN as in NumPy instead of raising,
# so that no kernel can stop halfway through its share of work that other threads wait on.
_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}
# Only this set of fast-math flags is allowed on the sums: reassociation lets the compiler keep
# several vector partial sums, and the code below bounds how many terms each one takes.
_SUM = {"reassoc", "nsz", "contract"}
_EXP = {"contract"}  # every caller of exp_diff has the same flags, so that it is inlined
SHORT = 32  # rows up to this length are done a chunk of rows at a time
BLOCK = 2048  # entries per block of the statistics pass (16 KiB of float64: stays in L1)
SUB = 512  # entries per vectorised partial sum of float64 data, combined with compensation
MAX_BLOCKS = 8192  # statistics scratch per slice: at most 8192 (m, s) pairs, 128 KiB

_LN2_HI = 0.693145751953125  # 16 significant bits: n * _LN2_HI is exact for |n| < 2**37 (2**8 in float32)
_LN2_LO = 1.42860682030941723212e-6
_LOG2E = 1.4426950408889634
_SHIFT_F32 = 1.5 * 2.0**23
_SHIFT_F64 = 1.5 * 2.0**52
_SHIFT_F32_BITS = int(np.float32(_SHIFT_F32).view(np.int32))
_SHIFT_F64_BITS = int(np.float64(_SHIFT_F64).view(np.int64))
# 1/k! for k = 13 .. 2: the Taylor tail of exp(r) on |r| <= ln2/2, error below 2**-60 relative.
_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(13, 1, -1))
# float32: exp(r) = 1 + r + r**2 q(r), q of degree 4 fitted for least maximum relative error on
# |r| <= ln2/2 (Lawson's iteration): 2**-28.0, as Taylor's to degree 7 (2**-27.1), one term shorter.
_MINIMAX_F32 = (0.499999982549872, 0.16666520862591622, 0.041667226583712316, 0.008368694320550138, 0.0013879685986756263)


def exp_diff(x, m):  # pragma: no cover - replaced by the overload below inside kernels
    """exp(x - m) for x <= m (or x = -inf, or NaN), vectorisable; exact to about one ulp.

    ``x - m`` is taken exactly: its rounding error (Knuth's two-sum) joins the reduced argument.
    Rounded, it would cost up to half an ulp of ``|x - m|`` in relative error: 16 eps at 40.
    """
    raise NotImplementedError


@overload(exp_diff, jit_options={"fastmath": _EXP})
def _exp_diff(x, m):
    if x == numba.types.float32:
        return _exp_f32
    if x == numba.types.float64:
        return _exp_f64
    return None


def _exp_f32(x, m):
    f = np.float32
    r = x - m
    bb = r - x
    lo = (x - (r - bb)) - (m + bb)  # r + lo == x - m exactly; NaN when x is -inf, unused then
    under = r < f(-104.0)  # exp rounds to 0 below -103.97 (half the least subnormal)
    r = f(-104.0) if under else r  # NaN stays NaN: the comparison is False
    # Adding 1.5 * 2**23 rounds r / ln2 to the integer n, which then sits in the low bits.
    t = r * f(_LOG2E) + f(_SHIFT_F32)
    n = t - f(_SHIFT_F32)
    g = ((r - n * f(_LN2_HI)) - n * f(_LN2_LO)) + lo
    g2 = g * g  # Estrin's scheme: a shorter chain of dependent operations than Horner's
    c = _MINIMAX_F32
    q = (f(c[0]) + g * f(c[1])) + g2 * ((f(c[2]) + g * f(c[3])) + g2 * f(c[4]))
    y = (g2 * q + g) + f(1.0)
    k = np.float32(t).view(np.int32) - _SHIFT_F32_BITS  # n, in [-150, 0]
    # 2**k from its bits: 2**(k + 64) is a normal float for every k here, and 2**k exact even
    # where it is subnormal (k >= -149), so y * 2**k rounds once; it is off the critical path.
    scale = np.int32((k + 127 + 64) << 23).view(np.float32) * f(2.0**-64)
    y = y * scale
    return f(0.0) if under else y


def _exp_f64(x, m):
    r = x - m
    bb = r - x
    lo = (x - (r - bb)) - (m + bb)
    under = r < -746.0  # exp rounds to 0 below -745.13
    r = -746.0 if under else r
    t = r * _LOG2E + _SHIFT_F64
    n = t - _SHIFT_F64
    g = ((r - n * _LN2_HI) - n * _LN2_LO) + lo
    g2 = g * g
    g4 = g2 * g2
    c = _TAYLOR  # 1/13!, 1/12!, ..., 1/2!
    q0 = (c[11] + g * c[10]) + g2 * (c[9] + g * c[8])
    q1 = (c[7] + g * c[6]) + g2 * (c[5] + g * c[4])
    q2 = (c[3] + g * c[2]) + g2 * (c[1] + g * c[0])
    q = q0 + g4 * (q1 + g4 * q2)
    y = (g2 * q + g) + 1.0
    k = np.float64(t).view(np.int64) - _SHIFT_F64_BITS  # n, in [-1077, 0]
    scale = np.int64((k + 1023 + 64) << 52).view(np.float64) * 2.0**-64
    y = y * scale
    return 0.0 if under else y


@intrinsic
def maxnum(typingctx, a, b):
    """LLVM's maxnum: the larger of a and b, ignoring a NaN. Unlike a compare-and-select, the
    compiler turns a loop of these into a vector reduction."""

    def codegen(context, builder, signature, args):
        t = args[0].type
        return builder.call(builder.module.declare_intrinsic("llvm.maxnum", [t], ir.FunctionType(t, [t, t])), args)

    return a(a, b), codegen


# --- sharing work between threads ---------------------------------------------------------------
#
# Work is cut into ranges of items (rows, tiles, blocks) that threads claim from a counter in a
# small int64 ``state`` array; each thread adds what it finished to a second counter. A thread
# waits only for ranges that another running thread has claimed, never for one that has not
# started: so any number of threads may join late, or not at all, and none can deadlock.

CLAIMED, DONE, DONE_2, FAILED = range(4)  # the entries of a state array


@intrinsic
def _fetch_add(typingctx, a, i, v):
    """a[i] += v atomically (a: an int64 array); the value before."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])
        return builder.atomic_rmw("add", ptr, context.cast(builder, args[2], signature.args[2], types.int64), "seq_cst")

    return types.int64(a, i, v), codegen


@intrinsic
def _load_acquire(typingctx, a, i):
    """a[i], read atomically (a: an int64 array)."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(a, i), codegen


@intrinsic
def _spin_pause(typingctx):
    """The x86 ``pause`` hint for spin loops."""

    def codegen(context, builder, signature, args):
        builder.call(builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), [])), [])
        return context.get_dummy_value()

    return types.none(), codegen


@numba.njit(**_JIT)
def _claim(state, counter, step, total):
    """The next ``step`` items of [0, total) that no thread has claimed yet: (lo, hi), empty when none are left."""
    lo = min(_fetch_add(state, counter, step), total)
    return lo, min(lo + step, total)

# Each kernel below repeats the loop "claim a range, work on it, add it to DONE". A generator
# yielding the claimed ranges would say it once, but a cached kernel that iterates a cached
# Numba generator fails to load from the cache in a fresh process (KeyError on the generator
# type; numba/numba#8679): the CI run of that version failed 49 tests. Passing the work as a
# function argument defeats caching instead (numba/numba#6251).


@numba.njit(**_JIT)
def wait_done(state, counter, total, spins):
    """Spin until state[counter] reaches total: True; False when another thread failed (state[FAILED])
    or after ``spins`` rounds, so that the caller can yield the core."""
    for _ in range(spins):
        if _load_acquire(state, counter) >= total:
            return True
        if _load_acquire(state, FAILED):
            return False
        _spin_pause()
    return _load_acquire(state, counter) >= total


@numba.njit(fastmath={"nnan", "nsz", "reassoc"}, **_JIT)
def _max(x, lo, hi):
    """Largest entry of x[lo:hi] (hi > lo); may miss a NaN, which the sum then reveals."""
    xs = x[lo:hi]
    m = xs[0]
    for j in range(1, xs.shape[0]):
        m = maxnum(m, xs[j])
    return m


@numba.njit(fastmath=_EXP, **_JIT)
def _exp_shifted(x, lo, hi, m, buf):
    """buf[:hi - lo] = exp(x[lo:hi] - m), vectorised."""
    xs = x[lo:hi]  # slices, so that indices are known non-negative and the loop vectorises
    for j in range(xs.shape[0]):
        buf[j] = exp_diff(xs[j], m)


@numba.njit(fastmath=_SUM, **_JIT)
def _sum_run(buf, lo, hi):
    """Sum of buf[lo:hi] in float64, as vector partial sums."""
    xs = buf[lo:hi]
    s = 0.0
    for j in range(xs.shape[0]):
        s += np.float64(xs[j])
    return s


@numba.njit(**_JIT)
def _sum_exp(x, lo, hi, m, buf):
    """Sum of exp(x[j] - m) over [lo, hi): runs of SUB terms, combined with Neumaier compensation."""
    s = 0.0
    c = 0.0
    for a in range(lo, hi, buf.shape[0]):
        b = min(a + buf.shape[0], hi)
        _exp_shifted(x, a, b, m, buf)
        for r in range(0, b - a, SUB):
            t = _sum_run(buf, r, min(r + SUB, b - a))
            u = s + t
            c += (s - u) + t if s >= t else (t - u) + s
            s = u
    return s + c


@numba.njit(**_JIT)
def slice_stats(x, lo, hi, ms, ss, scratch, out, func):
    """(max, sum of exp(x - max)) of x[lo:hi], hi > lo, and the block size used.

    ms and ss receive each block's stats; scratch holds a block's exps. What stays in out[lo:hi]
    for :func:`finish_blocks`: softmax (func 0) the exps, log_softmax (1) ``x - block max``,
    logsumexp (2) nothing.
    """
    block = block_size(hi - lo, ms.shape[0])
    nb = 0
    for a in range(lo, hi, block):
        ms[nb], ss[nb] = _block_stats(x, a, min(a + block, hi), scratch, out, func)
        nb += 1
    big, s = merge_blocks(ms, ss, nb)
    return big, s, block


@numba.njit(**_JIT)
def block_size(size, max_blocks):
    """BLOCK, or more where ``size`` entries would need over ``max_blocks`` blocks of it."""
    return max(BLOCK, -(-size // max_blocks))


@numba.njit(**_JIT)
def _block_stats(x, a, b, scratch, out, func):
    """(max, sum of exp(x - max)) of the block x[a:b], keeping in out[a:b] what slice_stats says."""
    m = _max(x, a, b)
    if m == -np.inf:  # an all -inf block adds nothing
        if func == 0:
            out[a:b] = 0.0
        elif func == 1:
            out[a:b] = -np.inf
        return m, 0.0
    if not m < np.inf:
        return m, np.nan  # +inf or NaN: the whole slice is NaN (softmax) or decided by logsumexp_of
    if func == 0:
        return m, _sum_exp(x, a, b, m, out[a:b])
    if func == 1:
        _shift(x, out, a, b, m)
    return m, _sum_exp(x, a, b, m, scratch)


@numba.njit(**_JIT)
def _shift(x, out, a, b, m):
    xs = x[a:b]
    ys = out[a:b]
    for j in range(xs.shape[0]):
        ys[j] = xs[j] - m


@numba.njit(**_JIT)
def merge_blocks(ms, ss, nb):
    """The exact max of the blocks, and their sums brought to it with Neumaier compensation."""
    big = -np.inf
    for i in range(nb):
        big = max(big, np.float64(ms[i]))
    if nb == 1:
        return big, ss[0]
    if not -np.inf < big < np.inf:
        return big, np.nan
    s = 0.0
    c = 0.0
    for i in range(nb):
        t = ss[i] * exp_diff(ms[i], big) if ms[i] > -np.inf else 0.0
        u = s + t
        c += (s - u) + t if s >= t else (t - u) + s
        s = u
    return big, s + c


@numba.njit(**_JIT)
def finish_blocks(func, out, lo, hi, block, ms, m, s):
    """Turn what slice_stats kept in out[lo:hi] into the result, from the slice's (m, s):
    softmax multiplies block i by exp(ms[i] - m) / s, log_softmax subtracts (m - ms[i]) + log s."""
    if not (-np.inf < m < np.inf and not math.isnan(s)):
        out[lo:hi] = np.nan
        return
    log_s = math.log(s)
    i = 0
    for a in range(lo, hi, block):
        b = min(a + block, hi)
        if func == 0:
            _scale(out, a, b, out.dtype.type(exp_diff(ms[i], m) / s) if ms[i] > -np.inf else out.dtype.type(0.0))
        elif ms[i] > -np.inf:  # an all -inf block holds -inf already
            # (m - ms[i]) + log s as the sum of two numbers of out's dtype: subtracted in that
            # dtype, without converting each entry to float64 and back.
            c = (m - np.float64(ms[i])) + log_s
            c_hi = out.dtype.type(c)
            _offset(out, a, b, c_hi, out.dtype.type(c - np.float64(c_hi)))
        i += 1


@numba.njit(**_JIT)
def _offset(out, lo, hi, c_hi, c_lo):
    ys = out[lo:hi]
    for j in range(ys.shape[0]):
        ys[j] = (ys[j] - c_hi) - c_lo


@numba.njit(**_JIT)
def _scale(out, lo, hi, f):
    ys = out[lo:hi]
    for j in range(ys.shape[0]):
        ys[j] *= f


@numba.njit(**_JIT)
def logsumexp_of(x, lo, hi, m, s):
    """logsumexp of x[lo:hi] from its statistics."""
    if -np.inf < m < np.inf and not math.isnan(s):
        return m + math.log(s)
    if m == np.inf and not np.isnan(x[lo:hi]).any():
        return m
    return m if np.isnan(m) or m == -np.inf else np.nan


@numba.njit(**_JIT)
def rows(func, x, out, state, step, ms, ss, buf):
    """softmax (func 0), log_softmax (1) or logsumexp (2) of the rows of the 2-D x, ``step``
    rows at a time, shared with the other threads that run this on the same ``state``."""
    while True:
        r0, r1 = _claim(state, CLAIMED, step, x.shape[0])
        if r0 >= r1:
            return
        _rows(func, x, out, r0, r1, ms, ss, buf)
        _fetch_add(state, DONE, r1 - r0)


@numba.njit(**_JIT)
def _rows(func, x, out, r0, r1, ms, ss, buf):
    """rows() of rows r0..r1."""
    n = x.shape[1]
    for i in range(r0, r1):
        row = x[i]
        if n == 0:
            if func == 2:
                out[i, 0] = -np.inf
            continue
        m, s, block = slice_stats(row, 0, n, ms, ss, buf, out[i], func)
        if func == 2:
            out[i, 0] = logsumexp_of(row, 0, n, m, s)
        else:
            finish_blocks(func, out[i], 0, n, block, ms, m, s)


@numba.njit(**_JIT)
def short_rows(func, x, out, n, state, ms, buf):
    """rows() for short rows (n <= SHORT), x and out flat: a row at a time costs too much per call.

    In chunks of ``len(ms)`` rows: each row's max (spread over its entries in buf), then one
    vectorised exp over the whole chunk, then each row's sum and result.
    """
    while True:
        c0, c1 = _claim(state, CLAIMED, ms.shape[0], x.shape[0] // n)
        if c0 >= c1:
            return
        _short_rows(func, x, out, n, c0, c1, ms, buf)
        _fetch_add(state, DONE, c1 - c0)


@numba.njit(fastmath=_EXP, **_JIT)
def _short_rows(func, x, out, n, c0, c1, ms, buf):
    """short_rows() of rows c0..c1, at most len(ms) of them."""
    xs = x[c0 * n : c1 * n]
    es = buf[: xs.shape[0]]
    for i in range(c1 - c0):
        row = xs[i * n : i * n + n]
        m = row[0]
        for j in range(1, n):
            m = maxnum(m, row[j])
        ms[i] = m
        es[i * n : i * n + n] = m
    for k in range(es.shape[0]):  # NaN for all -inf, +inf or NaN rows: found below by the sum
        es[k] = exp_diff(xs[k], es[k])
    for i in range(c1 - c0):
        e = es[i * n : i * n + n]
        s = 0.0
        for j in range(n):
            s += np.float64(e[j])
        r = c0 + i
        if func == 2:
            out[r] = logsumexp_of(xs, i * n, i * n + n, np.float64(ms[i]), s)
            continue
        o = out[r * n : r * n + n]
        if not (-np.inf < ms[i] < np.inf and not math.isnan(s)):
            o[:] = np.nan
        elif func == 0:
            inv = x.dtype.type(1.0 / s)
            for j in range(n):
                o[j] = e[j] * inv
        else:
            row = xs[i * n : i * n + n]
            log_s = math.log(s)
            m = ms[i]
            for j in range(n):
                o[j] = np.float64(row[j] - m) - log_s


@numba.njit(**_JIT)
def long_row(func, x, out, state, step, block, ms, ss, cms, css, buf, taken, caller, spins):
    """One thread's share of one long 1-D row; every thread sharing it runs this on one ``state``.

    1. Statistics: blocks of ``block`` entries, ``step`` blocks per claim; each block's (max,
       sum) goes to ms[b], ss[b] and each claim's merged pair to cms[c], css[c]; ``out`` keeps
       what :func:`slice_stats` says.
    2. Wait for every claim to be done, and merge the claims' pairs (each thread alike).
    3. Finish: softmax or log_softmax, claim by claim (taken[c] marks claim c as finished or
       being finished). A thread first takes the claims it did in 1, the latest first: what
       they left in ``out`` is still in its core's cache. logsumexp is written by the caller only, since the
       caller must not return while another thread still writes.

    Returns 1 when this thread's share is done; 0 after ``spins`` rounds of waiting in 2 (call
    again: claims already taken are skipped); -1 when a thread sharing the row failed.
    """
    n = x.shape[0]
    mine = np.empty(cms.shape[0], np.int64)
    count = 0
    while True:
        b0, b1 = _claim(state, CLAIMED, step, ms.shape[0])
        if b0 >= b1:
            break
        for b in range(b0, b1):
            a = b * block
            ms[b], ss[b] = _block_stats(x, a, min(a + block, n), buf, out, func)
        mine[count] = b0 // step
        count += 1
        cms[b0 // step], css[b0 // step] = merge_blocks(ms[b0:b1], ss[b0:b1], b1 - b0)
        _fetch_add(state, DONE, b1 - b0)
    if not wait_done(state, DONE, ms.shape[0], spins):
        return -1 if _load_acquire(state, FAILED) else 0
    m, s = merge_blocks(cms, css, cms.shape[0])
    if func == 2:
        if caller:
            out[0] = logsumexp_of(x, 0, n, m, s)
        return 1
    for i in range(count + cms.shape[0]):
        c = mine[count - 1 - i] if i < count else i - count
        if _fetch_add(taken, c, 1) == 0:
            b0, b1 = c * step, min(c * step + step, ms.shape[0])
            finish_blocks(func, out, b0 * block, min(b1 * block, n), block, ms[b0:b1], m, s)
            _fetch_add(state, DONE_2, b1 - b0)
    return 1


@numba.njit(**_JIT)
def columns(func, x, out, state, step, width, ms, ss):
    """The same along the middle axis of the 3-D x (outer, n, inner), ``step`` tiles at a time."""
    tiles = x.shape[0] * -(-x.shape[2] // width)
    while True:
        t0, t1 = _claim(state, CLAIMED, step, tiles)
        if t0 >= t1:
            return
        _columns(func, x, out, t0, t1, width, ms, ss)
        _fetch_add(state, DONE, t1 - t0)


@numba.njit(fastmath=_EXP, **_JIT)
def _columns(func, x, out, t0, t1, width, ms, ss):
    """columns() over tiles t0..t1.

    A tile is ``width`` adjacent columns of one outer index; its max and compensated sum are
    kept per column in ms[:width] and ss[:width] (plus ss[width:2 width] for the compensation),
    each pass reading rows of ``width`` contiguous entries.
    """
    n = x.shape[1]
    inner = x.shape[2]
    tiles_per_outer = -(-inner // width)
    for t in range(t0, t1):
        o = t // tiles_per_outer
        j0 = (t % tiles_per_outer) * width
        j1 = min(j0 + width, inner)
        w = j1 - j0
        m = ms[:w]
        s = ss[:w]
        c = ss[width : width + w]
        m[:] = -np.inf
        for k in range(n):
            for j in range(w):
                m[j] = maxnum(m[j], np.float64(x[o, k, j0 + j]))  # misses NaN; the sum below finds it
        s[:] = 0.0
        c[:] = 0.0
        for k in range(n):
            for j in range(w):
                mj = x.dtype.type(m[j])
                t_ = np.float64(exp_diff(x[o, k, j0 + j], mj))
                u = s[j] + t_
                c[j] += (s[j] - u) + t_ if s[j] >= t_ else (t_ - u) + s[j]
                s[j] = u
        for j in range(w):
            s[j] += c[j]
            if func == 2:
                out[o, 0, j0 + j] = logsumexp_of(x[o, :, j0 + j], 0, n, m[j], s[j])
            elif not -np.inf < m[j] < np.inf or math.isnan(s[j]):
                m[j] = np.nan
            elif func == 1:
                s[j] = math.log(s[j])
            else:
                s[j] = 1.0 / s[j]
        if func == 2:
            continue
        for k in range(n):
            for j in range(w):
                v = x[o, k, j0 + j]
                mj = x.dtype.type(m[j])
                if func == 0:
                    out[o, k, j0 + j] = exp_diff(v, mj) * x.dtype.type(s[j])
                else:
                    out[o, k, j0 + j] = np.float64(v - mj) - s[j]
