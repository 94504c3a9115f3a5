"""The cross-entropy of ``h @ weight.T + bias`` without ever holding the logits, written against
the Python array API standard.

The rows of ``h`` are taken in blocks and the classes in chunks; each tile of logits (rows by
classes, ``chunk_size`` of them at most) is summarised by :func:`softmax_multi.loss.index_stats`
— the online softmax's ``(m, k, t)`` and the two sums the loss needs — and the chunks of a row
block merge with :func:`softmax_multi.loss.merge_index_stats`, so that memory stays one tile
whatever the number of classes. The backends that differentiate (PyTorch, JAX) use the same
pieces for their gradients: :func:`block_grads` gives each tile's ``d loss / d logits`` from the
row block's final statistics, for ``dh += G @ W_c``, ``dW_c += G.T @ h_b`` and ``db_c += sum(G)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

from array_api_compat import array_namespace

from .loss import IndexStats, Target, index_grad, index_loss, index_stats, merge_index_stats, read_target, reduce_losses
from .reference import constant_like, quiet

__all__ = ["DEFAULT_CHUNK", "Classes", "block_grads", "block_loss", "block_stats", "classes", "linear_cross_entropy", "plan", "row_terms"]

Array = Any

# Logits held at once by default: 2**20 (4 MiB of float32): a tile's statistics, a handful of
# passes, then stay in the 2 MiB-per-core L2 and the shared L3 of the machines measured, and the
# matrix products on 2**20 / V rows (32 rows for V = 32 000) still run near the BLAS's peak.
DEFAULT_CHUNK = 2**20


class Classes(NamedTuple):
    """The classes' own data, the same for every row: mask, weights, bias and their totals."""

    live: Array | None
    """(V,) bool: the classes taking part (None: all)."""
    weight: Array | None
    """(V,) class weights (None: all 1)."""
    bias: Array | None
    """(V,) bias of the logits, or None."""
    n_live: Array
    """0-d: how many classes take part."""
    w_total: Array
    """0-d: their total weight."""


def classes(xp: Any, n_classes: int, where: Array | None, class_weight: Array | None, bias: Array | None, dtype: Any) -> Classes:
    """The classes' data in the compute dtype, with the totals the loss needs."""
    device = getattr(bias if bias is not None else class_weight, "device", None)
    cast = (lambda a: a if a is None or a.dtype == dtype else xp.astype(a, dtype))
    class_weight, bias = cast(class_weight), cast(bias)
    if where is None:
        n_live = xp.asarray(float(n_classes), dtype=dtype, device=device)
        w_total = n_live if class_weight is None else xp.sum(class_weight)
    else:
        n_live = xp.sum(xp.astype(where, dtype))
        w_total = n_live if class_weight is None else xp.sum(xp.where(where, class_weight, xp.zeros_like(class_weight)))
    return Classes(where, class_weight, bias, n_live, w_total)


def plan(n_rows: int, n_classes: int, chunk_size: int | None) -> tuple[int, int]:
    """(rows per block, classes per chunk) holding at most ``chunk_size`` logits: whole rows of
    classes where a row fits, as many rows as fit beside them."""
    chunk = chunk_size or DEFAULT_CHUNK
    cols = min(n_classes, chunk)
    return max(1, min(n_rows, chunk // cols)), cols


@quiet
def linear_cross_entropy(
    h: Array,
    weight: Array,
    target: Array,
    bias: Array | None,
    where: Array | None,
    class_weight: Array | None,
    label_smoothing: float,
    ignore_index: int | None,
    reduction: str,
    chunk_size: int | None,
    compute: Any,
    *,
    xp: Any = None,
    accurate_sums: bool = True,
) -> Array:
    """The loss, forward only, tile by tile (arguments checked by
    :func:`softmax_multi.linear_cross_entropy`; ``compute`` the dtype the tiles are computed in).

    Examples
    --------
    >>> import numpy as np
    >>> h, w = np.eye(2), np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    >>> linear_cross_entropy(h, w, np.array([0, 2]), None, None, None, 0.0, None, "none", None, np.float64).round(4)
    array([0.1698, 1.0986])
    """
    xp = xp or array_namespace(h)
    lead, n_features = tuple(h.shape[:-1]), h.shape[-1]
    n_rows, n_classes = math.prod(lead), weight.shape[0]
    cl = classes(xp, n_classes, where, class_weight, bias, compute)
    loss, share = row_terms(
        xp, xp.reshape(h, (n_rows, n_features)), weight, xp.reshape(target, (n_rows, 1)), cl, float(label_smoothing),
        ignore_index, chunk_size, compute, accurate_sums,
    )
    return reduce_losses(xp, xp.reshape(loss, (*lead, 1)), xp.reshape(share, (*lead, 1)), len(lead), reduction, accurate_sums)


def row_terms(
    xp: Any, h2: Array, weight: Array, y: Array, cl: Classes, eps: float, ignore_index: int | None, chunk_size: int | None,
    compute: Any, accurate: bool = True,
) -> tuple[Array, Array]:
    """The losses of the rows of ``h2`` (N, D) against ``y`` (N, 1), and their shares of a
    ``"mean"``, each (N, 1), a row block at a time."""
    n_rows, n_classes = h2.shape[0], weight.shape[0]
    rows, cols = plan(n_rows, n_classes, chunk_size)
    losses, shares = [], []
    for r0 in range(0, n_rows, rows):
        hb = _cast(xp, h2[r0 : r0 + rows, :], compute)
        tg = read_target(xp, y[r0 : r0 + rows, :], n_classes, ignore_index)
        st, _ = block_stats(xp, hb, tg, weight, cl, eps, cols, compute, accurate)
        loss, share = block_loss(xp, st, tg, cl, eps)
        losses.append(loss)
        shares.append(share)
    return _concat(xp, losses, n_rows, compute, h2), _concat(xp, shares, n_rows, compute, h2)


def _concat(xp: Any, parts: list[Array], n_rows: int, dtype: Any, like: Array) -> Array:
    if not parts:  # no rows at all
        return xp.zeros((n_rows, 1), dtype=dtype, device=getattr(like, "device", None))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _cast(xp: Any, a: Array, dtype: Any) -> Array:
    return a if a.dtype == dtype else xp.astype(a, dtype)


def logits(xp: Any, hb: Array, weight: Array, cl: Classes, c0: int, c1: int, compute: Any) -> Array:
    """The tile ``hb @ weight[c0:c1].T + bias[c0:c1]`` in the compute dtype."""
    z = xp.matmul(hb, xp.permute_dims(_cast(xp, weight[c0:c1, :], compute), (1, 0)))
    return z if cl.bias is None else z + cl.bias[c0:c1]


def _chunk(xp: Any, a: Array | None, c0: int, c1: int) -> Array | None:
    return None if a is None else xp.reshape(a[c0:c1], (1, c1 - c0))


def _onehot(xp: Any, tg: Target, c0: int, c1: int) -> Array:
    classes_ = xp.reshape(xp.arange(c0, c1, dtype=tg.safe.dtype, device=getattr(tg.safe, "device", None)), (1, c1 - c0))
    return tg.safe == classes_


def _live_weights(xp: Any, cl: Classes, c0: int, c1: int, like: Array) -> tuple[Array | None, Array]:
    """The chunk's class weights taking part, (1, c) or None for unit weights, and their total."""
    live, w = _chunk(xp, cl.live, c0, c1), _chunk(xp, cl.weight, c0, c1)
    if w is None:
        w_full = xp.ones((1, c1 - c0), dtype=like.dtype, device=getattr(like, "device", None))
    else:
        w_full = w
    if live is not None:
        w_full = xp.where(live, w_full, constant_like(xp, w_full, 0.0))
    return (None if w is None and live is None else w_full), xp.sum(w_full, axis=1, keepdims=True)


def block_stats(
    xp: Any, hb: Array, tg: Target, weight: Array, cl: Classes, eps: float, cols: int, compute: Any, accurate: bool = True
) -> tuple[IndexStats, Array | None]:
    """A row block's statistics over every chunk of classes, and the tile itself when one chunk
    held them all (a backward in the same pass needs no second matrix product)."""
    n_classes = weight.shape[0]
    st = total = z = None
    for c0 in range(0, n_classes, cols):
        c1 = min(c0 + cols, n_classes)
        z = logits(xp, hb, weight, cl, c0, c1, compute)
        w_live, w_chunk = _live_weights(xp, cl, c0, c1, z)
        smooth = None if not eps else (w_live if w_live is not None else xp.ones_like(z[:1, :]))
        s = index_stats(xp, z, 1, _onehot(xp, tg, c0, c1), _chunk(xp, cl.live, c0, c1), smooth, accurate)
        if st is None:
            st, total = s, w_chunk
        else:
            st, total = merge_index_stats(xp, st, s, total, w_chunk), total + w_chunk
    assert st is not None  # n_classes > 0, checked by the caller
    return st, (z if cols >= n_classes else None)


def _gather(xp: Any, vector: Array | None, tg: Target) -> Array | None:
    if vector is None:
        return None
    return xp.reshape(xp.take(vector, xp.reshape(tg.safe, (-1,)), axis=0), tuple(tg.safe.shape))


def block_loss(xp: Any, st: IndexStats, tg: Target, cl: Classes, eps: float) -> tuple[Array, Array]:
    """A row block's per-example losses (rows, 1) and their shares of a ``"mean"``."""
    w_y = _gather(xp, cl.weight, tg)
    live_y = _gather(xp, cl.live, tg)
    return index_loss(xp, st, tg, constant_like(xp, st.m, 1.0) if w_y is None else w_y, live_y, cl.w_total, cl.n_live, eps)


def block_grads(
    xp: Any,
    hb: Array,
    tg: Target,
    weight: Array,
    cl: Classes,
    eps: float,
    cols: int,
    compute: Any,
    st: IndexStats,
    scale: Array,
    z: Array | None = None,
) -> Iterator[tuple[int, int, Array]]:
    """``(c0, c1, G)`` for each chunk of classes: ``G = scale * d loss / d logits`` of the row
    block (``scale`` per row: the incoming gradient), from its final statistics ``st``; the tile
    ``z`` of :func:`block_stats` is used where it was kept, else each chunk is recomputed."""
    n_classes = weight.shape[0]
    w_y = _gather(xp, cl.weight, tg)
    w_y = constant_like(xp, st.m, 1.0) if w_y is None else w_y
    for c0 in range(0, n_classes, cols):
        c1 = min(c0 + cols, n_classes)
        tile = z if z is not None else logits(xp, hb, weight, cl, c0, c1, compute)
        w_live, _ = _live_weights(xp, cl, c0, c1, tile)
        g = index_grad(xp, tile, st, _onehot(xp, tg, c0, c1), tg, w_y, _chunk(xp, cl.live, c0, c1), w_live, cl.w_total, cl.n_live, eps)
        yield c0, c1, scale * g
