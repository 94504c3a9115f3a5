"""The losses on NumPy arrays through the fused kernels: one pass over the logits or over each tile of them.

``cross_entropy`` of class indices is ``-log_softmax(z)[target]`` (smoothed, weighted), with the
log_softmax by the fused kernels (:mod:`softmax_multi.backends.fused`), precise at the max, and
the cases of :mod:`softmax_multi.loss` read from its -inf and NaN
(:func:`softmax_multi.loss.from_log_softmax`). ``linear_cross_entropy`` takes tiles of many rows
and a chunk of classes (:func:`softmax_multi.linear.column_plan`): the matrix product writes each
tile into one reused buffer, a kernel reads it once more for each row's statistics
(:func:`softmax_multi.backends.fused.row_stats`: the max, the sum of exps below it, the weighted
distance to it for smoothing, in float64), and the chunks merge as the reference's do
(:func:`softmax_multi.loss.merge_index_stats`); no tile of log-probabilities is written. Tiles of
whole rows (a block of rows by every class) were slower: measured (N=4096, D=1024, V=32000,
float32, 2 threads, interleaved, medians of 5) the products alone took 2.65 s in blocks of 262
rows, 1.62 s in chunks of 2048 classes over every row and 1.57 s as one product into an
``out=`` array (blocks of rows read the whole weight matrix, 125 MiB, once a block).
Probability targets, dtypes other than float32 and float64 (float16 and bfloat16 are computed in
float32), and calls while the kernels load go to the reference.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from softmax_multi import linear, loss, reference
from softmax_multi.backends import fused

# Logits per tile by default: 2**23 (32 MiB of float32; every row of 4096 by 2048 classes).
# Measured (N=4096, D=1024, V=32000, float32, 2 threads, interleaved, medians of 5 runs; the naive
# loss took 1.82 s and holds 1008 MiB above its inputs): 2**22 1.95 s, 2**23 1.67 s (41 MiB),
# 2**24 1.87 s.
DEFAULT_CHUNK = 2**23


@reference.quiet
def cross_entropy(
    z: np.ndarray, target: np.ndarray, axis: int, where: Any, class_weight: Any, eps: float, ignore_index: Any, reduction: str
) -> np.ndarray:
    if target.dtype.kind == "f" or fused.kernels() is None:
        return loss.cross_entropy(z, target, axis, where, class_weight, eps, ignore_index, reduction, xp=np)
    from softmax_multi.backends.numpy_backend import log_softmax

    log_p = log_softmax(z, (axis,), where)
    per_example, share = loss.from_log_softmax(np, log_p, target, axis, where, class_weight, eps, ignore_index)
    return loss.reduce_losses(np, per_example, share, axis, reduction)


@reference.quiet
def linear_cross_entropy(h: np.ndarray, weight: np.ndarray, target: np.ndarray, o: linear.Options) -> np.ndarray:
    lead, n_features = h.shape[:-1], h.shape[-1]
    n_rows, n_classes = int(np.prod(lead)), weight.shape[0]
    compute = np.dtype(o.compute)
    if n_rows == 0 or fused.kernels() is None or compute.char not in "fd":
        return linear.linear_cross_entropy(h, weight, target, o, xp=np)
    rows, cols = linear.column_plan(n_rows, n_classes, o.chunk_size, DEFAULT_CHUNK)
    h2, y = h.reshape(n_rows, n_features), target.reshape(n_rows, 1)
    w = np.asarray(weight, dtype=compute)  # a copy for float16 and bfloat16 only
    eps = float(o.label_smoothing)
    cl = linear.classes(np, weight, o.where, o.class_weight, o.bias, compute)
    stats = functools.partial(_tile_stats, np.empty(rows * min(cols, n_classes), dtype=compute))
    losses, shares = np.empty((n_rows, 1), dtype=compute), np.empty((n_rows, 1), dtype=compute)
    for r0 in range(0, n_rows, rows):
        r1 = min(r0 + rows, n_rows)
        tg = loss.read_target(np, y[r0:r1], n_classes, o.ignore_index)
        st, _ = linear.block_stats(np, np.asarray(h2[r0:r1], dtype=compute), tg, w, cl, eps, cols, compute, stats=stats)
        losses[r0:r1], shares[r0:r1] = linear.block_loss(np, st, tg, cl, eps)
    shape = (*lead, 1)
    return loss.reduce_losses(np, losses.reshape(shape), shares.reshape(shape), len(lead), o.reduction)


def _tile_stats(
    buffer: np.ndarray, xp: Any, hb: np.ndarray, tg: loss.Target, ch: linear.Chunk, eps: float, compute: Any, accurate: bool
) -> tuple[loss.IndexStats, Any, np.ndarray]:
    """:func:`softmax_multi.linear.chunk_stats` by the kernels: the tile written into ``buffer``
    by the matrix product, each row's statistics read by :func:`fused.row_stats` in float64, the
    target's logit gathered."""
    n = ch.weight.shape[0]
    z = buffer[: hb.shape[0] * n].reshape(hb.shape[0], n)
    np.matmul(hb, ch.weight.T, out=z)
    if ch.bias is not None:
        z += ch.bias
    if ch.live is not None:
        z[:, ~ch.live[0]] = -np.inf
    w_live = None if ch.w_live is None else ch.w_live[0].astype(np.float64)
    gaps = None
    if eps:
        gaps = np.ones(n) if w_live is None else w_live
        gaps = gaps if ch.live is None else np.where(ch.live[0], gaps, np.nan)  # NaN: takes no part
    stats = fused.row_stats(z, gaps)
    assert stats is not None  # the kernels were loaded before the first tile, and stay
    m, k, t, u = (a.reshape(-1, 1) for a in stats)
    z_y = np.zeros_like(m)  # the target's logit where this chunk holds it (the chunks' sum is it)
    here = np.flatnonzero((tg.safe[:, 0] >= ch.start) & (tg.safe[:, 0] < ch.start + n))
    z_y[here, 0] = z[here, tg.safe[here, 0] - ch.start]
    total = float(n) if w_live is None else np.sum(w_live)
    return loss.IndexStats(m, k, t, u, z_y), total, z
