"""Online softmax: statistics of chunks that merge, then finish into any of the three functions.

The softmax of a slice needs two numbers, its max ``m`` and ``s = sum(exp(x - m))``. Those of two
chunks of the slice merge without revisiting the data (Milakov & Gimelshein, 2018)::

    M = max(m1, m2)        S = s1 * exp(m1 - M) + s2 * exp(m2 - M)

so a slice can be summarised chunk by chunk, in any grouping and order (the merge is associative
and commutative up to rounding), and then finished: ``logsumexp = M + log(S)``, and each chunk's
``softmax = exp(x - M) / S`` and ``log_softmax = x - M - log(S)``. This is what the Dask backend
does across blocks, and what a streaming or distributed caller can do by hand.

Conventions, so that the answers equal :mod:`softmax_multi.reference` for every input: ``m`` is
the max of the unmasked entries (``-inf`` for an empty or fully masked chunk, NaN when one is
NaN) and ``s`` is taken relative to ``m``, or to 0 where ``m`` is ``-inf`` (so ``s = 0`` there).
A merge never computes ``inf - inf``: a chunk whose max equals the merged max keeps its sum as it is.

Everything is written against the Python array API standard, with the statistics kept with the
reduced axes of length 1 (``keepdims``), so they broadcast against the chunk.

Examples
--------
>>> import numpy as np
>>> from softmax_multi import online
>>> x = np.array([[1.0, 2.0, 3.0, 4.0]])
>>> a, b = online.chunk_stats(x[:, :2]), online.chunk_stats(x[:, 2:])
>>> both = online.merge(a, b)
>>> online.finish_softmax(x[:, 2:], both).round(4)
array([[0.2369, 0.6439]])
>>> float(online.finish_logsumexp(both)[0, 0].round(4))
4.4402
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace

from ._args import normalize_axes

__all__ = ["Stats", "chunk_stats", "finish_log_softmax", "finish_logsumexp", "finish_softmax", "merge", "merge_all", "reduce"]

Array = Any


class Stats(NamedTuple):
    """A chunk's statistics along the reduced axes, kept with length 1 (``keepdims``)."""

    m: Array
    """The max of the unmasked entries; -inf when there are none, NaN when one is NaN."""
    s: Array
    """``sum(exp(x - m))`` over the unmasked entries, ``m`` taken as 0 where it is -inf."""


def _quiet(f):
    """inf - inf, 0/0 and log(0) are part of the answers for non-finite slices: no NumPy warnings."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return f(*args, **kwargs)

    return wrapper


@_quiet
def chunk_stats(x: Array, axis: int | tuple[int, ...] | None = -1, *, where: Array | None = None) -> Stats:
    """The statistics of ``x`` along ``axis`` (an int, a tuple of ints, or None for all)."""
    xp = array_namespace(x)
    axes = normalize_axes("chunk_stats", axis, x.ndim)
    neg_inf = _const(xp, x, -math.inf)
    if where is not None:
        x = xp.where(where, x, neg_inf)
    if any(x.shape[a] == 0 for a in axes):  # an empty chunk: nothing to take the max of
        shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
        return Stats(xp.full(shape, -math.inf, dtype=x.dtype), xp.zeros(shape, dtype=x.dtype))
    m = xp.max(x, axis=axes, keepdims=True)
    s = xp.sum(xp.exp(x - _shift(xp, m)), axis=axes, keepdims=True)
    return Stats(m, s)


@_quiet
def merge(a: Stats, b: Stats) -> Stats:
    """The statistics of two chunks of the same slices together."""
    xp = array_namespace(a.m, b.m)
    m = xp.maximum(a.m, b.m)  # NaN if either is NaN
    return Stats(m, a.s * _factor(xp, a.m, m) + b.s * _factor(xp, b.m, m))


@_quiet
def reduce(stats: Stats, axis: int | tuple[int, ...] | None) -> Stats:
    """Merge statistics laid side by side along ``axis`` (one chunk per position) into one."""
    xp = array_namespace(stats.m)
    axes = normalize_axes("reduce", axis, stats.m.ndim)
    m = xp.max(stats.m, axis=axes, keepdims=True)
    return Stats(m, xp.sum(stats.s * _factor(xp, stats.m, m), axis=axes, keepdims=True))


def merge_all(stats: Iterable[Stats]) -> Stats:
    """The statistics of any number of chunks, merged as a balanced tree (pairwise)."""
    level = list(stats)
    if not level:
        raise ValueError("merge_all: stats must hold at least one Stats")
    while len(level) > 1:
        level = [merge(*level[i : i + 2]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


@_quiet
def finish_softmax(x: Array, stats: Stats, *, where: Array | None = None) -> Array:
    """The softmax of the chunk ``x``, given the statistics of the whole slices it belongs to."""
    xp = array_namespace(x)
    if where is not None:
        x = xp.where(where, x, _const(xp, x, -math.inf))
    y = xp.exp(x - _shift(xp, stats.m)) / stats.s
    return y if where is None else xp.where(where, y, _const(xp, y, 0.0))


@_quiet
def finish_log_softmax(x: Array, stats: Stats, *, where: Array | None = None) -> Array:
    """The log_softmax of the chunk ``x``, given the statistics of the whole slices."""
    xp = array_namespace(x)
    if where is not None:
        x = xp.where(where, x, _const(xp, x, -math.inf))
    y = (x - _shift(xp, stats.m)) - xp.log(stats.s)
    return y if where is None else xp.where(where, y, _const(xp, y, -math.inf))


@_quiet
def finish_logsumexp(stats: Stats) -> Array:
    """logsumexp of the slices (reduced axes kept with length 1): the max itself where it is not
    finite (-inf for empty or fully masked slices, +inf, NaN)."""
    xp = array_namespace(stats.m)
    finite = xp.isfinite(stats.m)
    s = xp.where(finite, stats.s, _const(xp, stats.s, 1.0))
    return xp.where(finite, stats.m + xp.log(s), stats.m)


def _shift(xp: Any, m: Array) -> Array:
    """The max to subtract: 0 where it is -inf (exp(-inf - 0) = 0, never -inf - -inf)."""
    return xp.where(m == -math.inf, _const(xp, m, 0.0), m)


def _factor(xp: Any, m: Array, merged: Array) -> Array:
    """exp(m - merged), and exactly 1 where they are equal (both -inf or both +inf included)."""
    return xp.where(m == merged, _const(xp, m, 1.0), xp.exp(m - merged))


def _const(xp: Any, x: Array, value: float) -> Array:
    return xp.asarray(value, dtype=x.dtype, device=getattr(x, "device", None))
