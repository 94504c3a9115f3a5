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
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from array_api_compat import array_namespace

from .loss import IndexStats, Target, index_grad, index_loss, index_stats, merge_index_stats, read_target, reduce_losses
from .reference import constant_like, quiet

__all__ = [
    "DEFAULT_CHUNK",
    "Chunk",
    "Classes",
    "Options",
    "block_grads",
    "block_loss",
    "block_stats",
    "chunk",
    "chunk_grad",
    "chunk_stats",
    "classes",
    "column_plan",
    "linear_cross_entropy",
    "logits",
    "plan",
    "row_terms",
    "target_weight",
]

Array = Any

# Logits held at once by default: 2**22 (16 MiB of float32; 131 rows of 32 000 classes), for the
# reference and the backends without a default of their own (NumPy's, PyTorch's and JAX's are in
# their modules). The matrix products of a block run near the BLAS's peak only with enough rows,
# and a gradient formed block by block adds each block's share into all of dW. Measured with
# PyTorch's operations on the tiles (N=4096, D=1024, V=32000, float32, 2 threads, forward and
# backward, "sum"): 2**20 took 6.9 s and 158 MiB above the inputs, 2**22 4.6 s and 194 MiB, 2**23
# 5.3 s and 274 MiB (the naive loss: 6.4 s, 1530 MiB).
DEFAULT_CHUNK = 2**22


class Options(NamedTuple):
    """A linear loss's arguments besides ``h``, ``weight`` and ``target``, as checked by
    :func:`softmax_multi.linear_cross_entropy`: what a backend's ``linear_cross_entropy(h, weight,
    target, options)`` receives."""

    bias: Array | None
    """(V,), of h's library and result dtype, or None."""
    where: Array | None
    """(V,) bool, or None."""
    class_weight: Array | None
    """(V,), or None."""
    label_smoothing: float
    ignore_index: int | None
    reduction: str
    """"none", "sum" or "mean"."""
    chunk_size: int | None
    """Logits per tile at most (None: the backend's default)."""
    compute: Any
    """The dtype the tiles are computed in (float32 for float16 and bfloat16)."""


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


def classes(xp: Any, weight: Array, where: Array | None, class_weight: Array | None, bias: Array | None, dtype: Any) -> Classes:
    """The classes' data in the compute dtype, with the totals the loss needs, on the device of
    ``weight`` (V, D)."""
    n_classes = weight.shape[0]
    device = getattr(weight, "device", None)
    cast = lambda a: a if a is None or a.dtype == dtype else xp.astype(a, dtype)
    class_weight, bias = cast(class_weight), cast(bias)
    if where is None:
        n_live = xp.asarray(float(n_classes), dtype=dtype, device=device)
        w_total = n_live if class_weight is None else xp.sum(class_weight)
    else:
        n_live = xp.sum(xp.astype(where, dtype))
        w_total = n_live if class_weight is None else xp.sum(xp.where(where, class_weight, xp.zeros_like(class_weight)))
    return Classes(where, class_weight, bias, n_live, w_total)


# Fewest classes per tile of a column plan, where the rows are many: below it the rows are taken
# in blocks too.
MIN_COLS = 256


def column_plan(n_rows: int, n_classes: int, chunk_size: int | None, default: int = DEFAULT_CHUNK) -> tuple[int, int]:
    """(rows per block, classes per chunk) for tiles of many rows and few classes: every row in one
    block unless that leaves fewer than MIN_COLS classes per tile. A gradient made chunk of classes
    by chunk writes each chunk's rows of dW once, in one product over all the rows, where row
    blocks would add into all of dW once per block."""
    chunk = chunk_size or default
    few = min(MIN_COLS, n_classes)
    rows = max(1, n_rows) if n_rows * few <= chunk else max(1, chunk // few)
    return rows, max(1, min(n_classes, chunk // rows))


def plan(n_rows: int, n_classes: int, chunk_size: int | None, default: int = DEFAULT_CHUNK) -> tuple[int, int]:
    """(rows per block, classes per chunk) holding at most ``chunk_size`` logits: whole rows of
    classes where a row fits, as many rows as fit beside them."""
    chunk = chunk_size or default
    cols = min(n_classes, chunk)
    return max(1, min(n_rows, chunk // cols)), cols


@quiet
def linear_cross_entropy(
    h: Array, weight: Array, target: Array, o: Options, *, xp: Any = None, accurate_sums: bool = True
) -> Array:
    """The loss, forward only, tile by tile (arguments checked by
    :func:`softmax_multi.linear_cross_entropy`).

    Examples
    --------
    >>> import numpy as np
    >>> h, w = np.eye(2), np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    >>> o = Options(None, None, None, 0.0, None, "none", None, np.float64)
    >>> linear_cross_entropy(h, w, np.array([0, 2]), o).round(4)
    array([0.1698, 1.0986])
    """
    xp = xp or array_namespace(h)
    lead, n_features = tuple(h.shape[:-1]), h.shape[-1]
    n_rows = math.prod(lead)
    cl = classes(xp, weight, o.where, o.class_weight, o.bias, o.compute)
    loss, share = row_terms(
        xp,
        xp.reshape(h, (n_rows, n_features)),
        weight,
        xp.reshape(target, (n_rows, 1)),
        cl,
        float(o.label_smoothing),
        o.ignore_index,
        o.chunk_size,
        o.compute,
        accurate_sums,
    )
    shape = (*lead, 1)
    return reduce_losses(xp, xp.reshape(loss, shape), xp.reshape(share, shape), len(lead), o.reduction, accurate_sums)


def row_terms(
    xp: Any,
    h2: Array,
    weight: Array,
    y: Array,
    cl: Classes,
    eps: float,
    ignore_index: int | None,
    chunk_size: int | None,
    compute: Any,
    accurate: bool = True,
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


class Chunk(NamedTuple):
    """A chunk of classes: its rows of the weight matrix and its slices of the classes' data."""

    start: Any
    """The first class (an int, or a traced one under ``jax.lax.scan``)."""
    weight: Array
    """(c, D) rows of the weight matrix."""
    bias: Array | None
    """(c,) or None."""
    live: Array | None
    """(1, c) the classes taking part, or None (all)."""
    w_live: Array | None
    """(1, c) the class weights taking part (0 elsewhere), or None for unit weights, all taking part."""


def chunk(xp: Any, weight: Array, cl: Classes, c0: Any, n: int, take: Any = None) -> Chunk:
    """The ``n`` classes from ``c0`` (``take(a, c0, n)``: how to slice them, for a traced ``c0``)."""
    cut = (lambda a: a[c0 : c0 + n, ...]) if take is None else (lambda a: take(a, c0, n))
    row = lambda a: None if a is None else xp.reshape(cut(a), (1, -1))
    live, w = row(cl.live), row(cl.weight)
    if live is not None:
        w = xp.where(live, xp.ones_like(live, dtype=cl.n_live.dtype) if w is None else w, constant_like(xp, cl.n_live, 0.0))
    return Chunk(c0, cut(weight), None if cl.bias is None else cut(cl.bias), live, w)


def logits(xp: Any, hb: Array, ch: Chunk, compute: Any) -> Array:
    """The tile ``hb @ weight_c.T + bias_c`` in the compute dtype."""
    z = xp.matmul(hb, xp.permute_dims(_cast(xp, ch.weight, compute), (1, 0)))
    return z if ch.bias is None else z + ch.bias


def _onehot(xp: Any, tg: Target, ch: Chunk, n: int) -> Array:
    offsets = xp.reshape(xp.arange(n, dtype=tg.safe.dtype, device=getattr(tg.safe, "device", None)), (1, n))
    return (tg.safe - ch.start) == offsets


def chunk_stats(
    xp: Any, hb: Array, tg: Target, ch: Chunk, eps: float, compute: Any, accurate: bool = True, target: bool = True
) -> tuple[IndexStats, Array, Array]:
    """A tile's statistics, its classes' total weight taking part, and the tile (``target=False``:
    the target's logit ``z_y`` left 0, for the caller to gather)."""
    z = logits(xp, hb, ch, compute)
    n = z.shape[1]
    smooth = None if not eps else (ch.w_live if ch.w_live is not None else xp.ones_like(z[:1, :]))
    st = index_stats(xp, z, 1, _onehot(xp, tg, ch, n) if target else None, ch.live, smooth, accurate)
    total = constant_like(xp, z, float(n)) if ch.w_live is None else xp.sum(ch.w_live, axis=1, keepdims=True)
    return st, total, z


def chunk_grad(
    xp: Any,
    hb: Array,
    tg: Target,
    ch: Chunk,
    cl: Classes,
    eps: float,
    compute: Any,
    st: IndexStats,
    w_y: Array,
    scale: Array,
    z: Array | None = None,
) -> Array:
    """``scale * d loss / d logits`` of a tile from its rows' final statistics ``st`` (the tile
    ``z`` itself if kept, else recomputed)."""
    z = logits(xp, hb, ch, compute) if z is None else z
    g = index_grad(xp, z, st, _onehot(xp, tg, ch, z.shape[1]), tg, w_y, ch.live, ch.w_live, cl.w_total, cl.n_live, eps)
    return scale * g


def block_stats(
    xp: Any,
    hb: Array,
    tg: Target,
    weight: Array,
    cl: Classes,
    eps: float,
    cols: int,
    compute: Any,
    accurate: bool = True,
    stats: Callable[..., tuple[IndexStats, Array, Array]] = chunk_stats,
) -> tuple[IndexStats, Array | None]:
    """A row block's statistics over every chunk of classes, and the tile itself when one chunk
    held them all (a backward in the same pass needs no second matrix product). ``stats`` gives
    a chunk's, as :func:`chunk_stats` does (a backend's kernels may)."""
    n_classes = weight.shape[0]
    st = total = z = None
    for c0 in range(0, n_classes, cols):
        s, w_chunk, z = stats(xp, hb, tg, chunk(xp, weight, cl, c0, min(cols, n_classes - c0)), eps, compute, accurate)
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
    w_y = target_weight(xp, cl, tg, st.m)
    for c0 in range(0, n_classes, cols):
        c1 = min(c0 + cols, n_classes)
        yield c0, c1, chunk_grad(xp, hb, tg, chunk(xp, weight, cl, c0, c1 - c0), cl, eps, compute, st, w_y, scale, z)


def target_weight(xp: Any, cl: Classes, tg: Target, like: Array) -> Array:
    """Each row's target class weight (1 unweighted)."""
    w_y = _gather(xp, cl.weight, tg)
    return constant_like(xp, like, 1.0) if w_y is None else w_y
