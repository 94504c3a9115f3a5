"""Online softmax: statistics of chunks that merge, then finish into any of the three functions.

The softmax of a slice needs its max ``m`` and ``sum(exp(x - m))``; the statistics keep that
sum in two parts, ``k`` (how many entries equal ``m``) and ``t`` (the sum of ``exp(x - m)``
over the others), so that ``log(k + t) = log1p((k - 1) + t)`` keeps relative precision when one
entry dominates. Those of two chunks of the slice merge without revisiting the data (Milakov &
Gimelshein, 2018)::

    M = max(m1, m2)
    K = k1 [m1 = M] + k2 [m2 = M]
    T = (t1 if m1 = M else (k1 + t1) exp(m1 - M)) + (the same for chunk 2)

so a slice can be summarised chunk by chunk, in any grouping and order (the merge is associative
and commutative up to rounding), and then finished: ``logsumexp = M + log1p((K - 1) + T)``, and
each chunk's ``softmax = exp(x - M) / (K + T)`` and ``log_softmax = x - M - log1p((K - 1) + T)``.
This is what the Dask backend does across blocks, and what a streaming or distributed caller can
do by hand.

Conventions, so that the answers equal :mod:`softmax_multi.reference` for every input: ``m`` is
the max of the unmasked entries (``-inf`` for an empty or fully masked chunk, with ``k = t = 0``;
NaN when one is NaN), and for ``m = +inf``, ``k`` counts the +inf entries. A merge never computes
``inf - inf``: a chunk whose max equals the merged max keeps its parts as they are.

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

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

from array_api_compat import array_namespace

from ._args import normalize_axes
from .reference import constant_like, logsumexp_from_stats, quiet

__all__ = ["Stats", "chunk_stats", "finish_log_softmax", "finish_logsumexp", "finish_softmax", "merge", "merge_all", "reduce"]

Array = Any


class Stats(NamedTuple):
    """A chunk's statistics along the reduced axes, kept with length 1 (``keepdims``)."""

    m: Array
    """The max of the unmasked entries; -inf when there are none, NaN when one is NaN."""
    k: Array
    """How many unmasked entries equal ``m`` (0 where there are none)."""
    t: Array
    """``sum(exp(x - m))`` over the unmasked entries below ``m``: 0 where ``m`` is -inf, NaN where
    it is +inf (softmax of such a slice is NaN; its logsumexp, +inf)."""

    @property
    def s(self) -> Array:
        """``sum(exp(x - m))`` over the unmasked entries: ``k + t``."""
        return self.k + self.t


@quiet
def chunk_stats(
    x: Array, axis: int | tuple[int, ...] | None = -1, *, where: Array | None = None, b: Array | None = None
) -> Stats:
    """The statistics of ``x`` along ``axis`` (an int, a tuple of ints, or None for all).

    With weights ``b`` (real, of ``x``'s shape), ``k`` is the weight at the max and ``t`` the
    weighted sum below it; entries of weight 0 take no part, and a NaN weight makes its slice NaN.
    """
    xp = array_namespace(x)
    axes = normalize_axes("chunk_stats", axis, x.ndim)
    neg_inf = constant_like(xp, x, -math.inf)
    if b is not None:
        x = xp.where(xp.isnan(b), constant_like(xp, x, math.nan), xp.where(b == 0, neg_inf, x))
    if where is not None:
        x = xp.where(where, x, neg_inf)
    if any(x.shape[a] == 0 for a in axes):  # an empty chunk: nothing to take the max of
        shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
        zeros = xp.zeros(shape, dtype=x.dtype)
        return Stats(xp.full(shape, -math.inf, dtype=x.dtype), zeros, zeros)
    m = xp.max(x, axis=axes, keepdims=True)
    top = xp.logical_and(x == m, x > -math.inf)
    zero = constant_like(xp, x, 0.0)
    weight = constant_like(xp, x, 1.0) if b is None else b
    k = xp.sum(xp.where(top, weight, zero), axis=axes, keepdims=True)
    e = xp.exp(x - _shift(xp, m))
    t = xp.sum(xp.where(top, zero, e if b is None else b * e), axis=axes, keepdims=True)
    # -inf: nothing below the max; +inf: NaN, so that softmax and log_softmax of the slice are NaN
    t = xp.where(xp.isfinite(m), t, xp.where(m == math.inf, constant_like(xp, x, math.nan), zero))
    return Stats(m, k, t)


@quiet
def merge(a: Stats, b: Stats) -> Stats:
    """The statistics of two chunks of the same slices together."""
    xp = array_namespace(a.m, b.m)
    m = xp.maximum(a.m, b.m)  # NaN if either is NaN
    ka, ta = _relative_to(xp, a, m)
    kb, tb = _relative_to(xp, b, m)
    return Stats(m, ka + kb, ta + tb)


@quiet
def reduce(stats: Stats, axis: int | tuple[int, ...] | None) -> Stats:
    """Merge statistics laid side by side along ``axis`` (one chunk per position) into one."""
    xp = array_namespace(stats.m)
    axes = normalize_axes("reduce", axis, stats.m.ndim)
    m = xp.max(stats.m, axis=axes, keepdims=True)
    k, t = _relative_to(xp, stats, m)
    return Stats(m, xp.sum(k, axis=axes, keepdims=True), xp.sum(t, axis=axes, keepdims=True))


def merge_all(stats: Iterable[Stats]) -> Stats:
    """The statistics of any number of chunks, merged as a balanced tree (pairwise)."""
    level = list(stats)
    if not level:
        raise ValueError("merge_all: stats must hold at least one Stats")
    while len(level) > 1:
        level = [merge(*level[i : i + 2]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


@quiet
def finish_softmax(x: Array, stats: Stats, *, where: Array | None = None) -> Array:
    """The softmax of the chunk ``x``, given the statistics of the whole slices it belongs to."""
    xp = array_namespace(x)
    if where is not None:
        x = xp.where(where, x, constant_like(xp, x, -math.inf))
    y = xp.exp(x - _shift(xp, stats.m)) / stats.s
    return y if where is None else xp.where(where, y, constant_like(xp, y, 0.0))


@quiet
def finish_log_softmax(x: Array, stats: Stats, *, where: Array | None = None) -> Array:
    """The log_softmax of the chunk ``x``, given the statistics of the whole slices."""
    xp = array_namespace(x)
    if where is not None:
        x = xp.where(where, x, constant_like(xp, x, -math.inf))
    y = (x - _shift(xp, stats.m)) - _log_s(xp, stats)
    return y if where is None else xp.where(where, y, constant_like(xp, y, -math.inf))


@quiet
def finish_logsumexp(stats: Stats, *, return_sign: bool = False) -> Array | tuple[Array, Array]:
    """logsumexp of the slices (reduced axes kept with length 1): the max itself where it is not
    finite (-inf for empty or fully masked slices, +inf, NaN). With weights, as
    :func:`softmax_multi.logsumexp`: NaN for a negative total, or ``(log|total|, sign)`` with
    ``return_sign``."""
    xp = array_namespace(stats.m)
    r, sign = logsumexp_from_stats(xp, stats.m, stats.k, stats.t, return_sign)
    return (r, sign) if return_sign else r


def _log_s(xp: Any, stats: Stats) -> Array:
    """log(k + t) as log1p((k - 1) + t): exact where one entry dominates."""
    return xp.log1p((stats.k - 1) + stats.t)


def _shift(xp: Any, m: Array) -> Array:
    """The max to subtract: 0 where it is -inf (exp(-inf - 0) = 0, never -inf - -inf)."""
    return xp.where(m == -math.inf, constant_like(xp, m, 0.0), m)


def _relative_to(xp: Any, st: Stats, merged: Array) -> tuple[Array, Array]:
    """``st``'s parts against the merged max: as they are where its max is the merged one (both
    -inf or both +inf included), else all of its sum below the max, scaled by exp(m - merged)."""
    same = st.m == merged
    zero = constant_like(xp, st.t, 0.0)
    scaled = (st.k + st.t) * xp.exp(xp.where(same, zero, st.m - merged))
    return xp.where(same, st.k, zero), xp.where(same, st.t, scaled)
