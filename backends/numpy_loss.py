"""The losses on NumPy arrays through the fused kernels: one log_softmax pass, then a gather.

``cross_entropy`` of class indices is ``-log_softmax(z)[target]`` (smoothed, weighted), with the
log_softmax by the fused kernels (:mod:`softmax_multi.backends.fused`), precise at the max, and
the cases of :mod:`softmax_multi.loss` read from its -inf and NaN
(:func:`softmax_multi.loss.from_log_softmax`). ``linear_cross_entropy`` takes the rows of ``h`` in
blocks holding every class: each block's logits are written into one reused buffer by the matrix
product, their log_softmax into a second one, and gathered, so that memory stays two tiles and no
page is touched twice. (Not in place: the kernels' loops are vectorised only where LLVM's runtime
check finds input and output apart; in place a tile's log_softmax took 31-45 ms, into the second
buffer 10-12 ms, for 262 x 32 000 float32.) Probability targets, other dtypes, and class chunks (a row of
classes longer than ``chunk_size``) go to the reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from softmax_multi import linear, loss, reference
from softmax_multi.backends import fused

# Logits per tile by default: 2**23 (32 MiB of float32, 262 rows of 32 000 classes): BLAS runs the
# product of a block near its peak only with enough rows. Measured (N=4096, D=1024, V=32000,
# float32, 2 threads, interleaved, seconds, with the log_softmax into a second tile; the naive loss
# took 3.5-4.1 s and holds 1008 MiB above its inputs): 2**22 1.82-2.20, 2**23 1.70-2.00, 2**24
# 1.65-2.35.
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
    rows, cols = linear.plan(n_rows, n_classes, o.chunk_size or DEFAULT_CHUNK)
    compute, where, eps, ignore_index = o.compute, o.where, o.label_smoothing, o.ignore_index
    if cols < n_classes or fused.kernels() is None or np.dtype(compute).char not in "fd":
        return linear.linear_cross_entropy(h, weight, target, o, xp=np)
    h2 = h.reshape(n_rows, n_features)
    y = target.reshape(n_rows)
    w_t = np.asarray(weight, dtype=compute).T  # a transposed view (a copy for float16 and bfloat16 only)
    bias = None if o.bias is None else np.asarray(o.bias, dtype=compute)
    class_weight = None if o.class_weight is None else np.asarray(o.class_weight, dtype=compute)
    masked = None if where is None else ~where
    buffer, log_buffer = np.empty((rows, n_classes), dtype=compute), np.empty((rows, n_classes), dtype=compute)
    losses, shares = np.empty((n_rows, 1), dtype=compute), np.empty((n_rows, 1), dtype=compute)
    for r0 in range(0, n_rows, rows):
        r1 = min(r0 + rows, n_rows)
        z = buffer[: r1 - r0]
        np.matmul(np.asarray(h2[r0:r1], dtype=compute), w_t, out=z)
        if bias is not None:
            z += bias
        if masked is not None:
            z[:, masked] = -np.inf
        log_p = fused.run(fused.LOG_SOFTMAX, z, (1,), log_buffer[: r1 - r0], min_size=1)
        if log_p is None:  # not the kernels' layout after all
            log_p = reference.log_softmax(z, (1,), where, xp=np)
        losses[r0:r1], shares[r0:r1] = loss.from_log_softmax(np, log_p, y[r0:r1], 1, where, class_weight, eps, ignore_index)
    shape = (*lead, 1)
    return loss.reduce_losses(np, losses.reshape(shape), shares.reshape(shape), len(lead), o.reduction)
