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
    cl = linear.classes(np, n_classes, o.where, o.class_weight, o.bias, compute)
    w_live = np.ones(n_classes) if cl.weight is None else cl.weight.astype(np.float64)
    if cl.live is not None:
        w_live = np.where(cl.live, w_live, 0.0)
    gap_weights = None if not eps else (w_live if cl.live is None else np.where(cl.live, w_live, np.nan))
    masked = None if cl.live is None else ~cl.live
    buffer = np.empty(rows * min(cols, n_classes), dtype=compute)
    losses, shares = np.empty((n_rows, 1), dtype=compute), np.empty((n_rows, 1), dtype=compute)
    for r0 in range(0, n_rows, rows):
        r1 = min(r0 + rows, n_rows)
        hb = np.asarray(h2[r0:r1], dtype=compute)
        tg = loss.read_target(np, y[r0:r1], n_classes, o.ignore_index)
        st, st_total, z_y = None, 0.0, np.zeros((r1 - r0, 1))
        for c0 in range(0, n_classes, cols):
            c1 = min(c0 + cols, n_classes)
            z = buffer[: (r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
            np.matmul(hb, w[c0:c1].T, out=z)
            if cl.bias is not None:
                z += cl.bias[c0:c1]
            if masked is not None:
                z[:, masked[c0:c1]] = -np.inf
            stats = fused.row_stats(z, None if gap_weights is None else gap_weights[c0:c1])
            assert stats is not None  # the kernels were loaded above, and stay
            m, k, t, u = (a.reshape(-1, 1) for a in stats)
            here = np.flatnonzero((tg.safe[:, 0] >= c0) & (tg.safe[:, 0] < c1))
            z_y[here, 0] = z[here, tg.safe[here, 0] - c0]
            chunk, total = loss.IndexStats(m, k, t, u, 0.0), np.sum(w_live[c0:c1])
            st = chunk if st is None else loss.merge_index_stats(np, st, chunk, st_total, total)
            st_total += total
        assert st is not None  # n_classes > 0, checked by the caller
        losses[r0:r1], shares[r0:r1] = linear.block_loss(np, st._replace(z_y=z_y), tg, cl, eps)
    shape = (*lead, 1)
    return loss.reduce_losses(np, losses.reshape(shape), shares.reshape(shape), len(lead), o.reduction)
