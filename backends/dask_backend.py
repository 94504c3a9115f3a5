"""Dask backend: lazy softmax, log_softmax and logsumexp on dask.array, in bounded memory.

Nothing is computed here; each function returns a dask array. When every softmax axis lies
inside one block, each block is done on its own (one blockwise pass, by the block's own backend:
NumPy, CuPy, ...). When the axes span several blocks, two passes over the blocks:

1. the online-softmax statistics ``(m, k, t)`` of every block, merged in one tree reduction
   (:mod:`softmax_multi.online`);
2. every block normalised with the merged statistics of its slices.

The second pass reads the input again (its graph is cloned behind the statistics with
``dask.graph_manipulation.bind``) instead of holding every block from the first pass until the
second, so peak memory stays a few blocks whatever the array's size; each input block is read
exactly twice. logsumexp needs the first pass only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from softmax_multi import linear, loss, online, reference
from softmax_multi.registry import BackendSpec


def _namespace(x: Any = None) -> Any:
    import array_api_compat.dask.array

    return array_api_compat.dask.array


def softmax(x: Any, axes: tuple[int, ...], where: Any = None) -> Any:
    return _normalised("softmax", x, axes, where)


def log_softmax(x: Any, axes: tuple[int, ...], where: Any = None) -> Any:
    return _normalised("log_softmax", x, axes, where)


def logsumexp(x: Any, axes: tuple[int, ...], where: Any = None, keepdims: bool = False) -> Any:
    m, k, t = statistics(x, axes, _aligned(x, where))
    r = m.map_blocks(_finish_logsumexp, k, t, dtype=x.dtype, meta=x._meta)
    return r if keepdims or not axes else r.squeeze(axis=axes)


def weighted_logsumexp(x: Any, axes: tuple[int, ...], where: Any, keepdims: bool, b: Any, return_sign: bool) -> Any:
    """Weights and signs through the same statistics, weighted; complex input and empty slices by
    the reference implementation on dask.array (lazy too)."""
    empty = any(x.shape[a] == 0 for a in axes)  # SciPy's sign of an empty sum is -1: the reference's
    if empty or x.dtype.kind == "c" or (b is not None and b.dtype.kind == "c"):
        return reference.logsumexp(x, axes, where, keepdims, b, return_sign, xp=_namespace())
    m, k, t = statistics(x, axes, _aligned(x, where), None if b is None else _aligned(x, b))
    r = m.map_blocks(_finish_weighted, k, t, part=0, return_sign=return_sign, dtype=x.dtype, meta=x._meta)
    sign = m.map_blocks(_finish_weighted, k, t, part=1, return_sign=True, dtype=x.dtype, meta=x._meta) if return_sign else None
    if axes and not keepdims:
        r = r.squeeze(axis=axes)
        sign = None if sign is None else sign.squeeze(axis=axes)
    return (r, sign) if return_sign else r


def _normalised(func: str, x: Any, axes: tuple[int, ...], where: Any) -> Any:
    import dask.array as da
    from dask.graph_manipulation import bind

    where = _aligned(x, where)
    extra = () if where is None else (where,)
    if all(len(x.chunks[a]) == 1 for a in axes):  # every slice inside one block: one pass
        return da.map_blocks(_whole_slices, x, *extra, function=func, axes=axes, dtype=x.dtype, meta=x._meta)
    m, k, t = statistics(x, axes, where)
    # The second pass reads the input again, after the statistics, rather than keeping it all.
    again = bind((x, *extra), (m, k, t))
    finish = online.finish_softmax if func == "softmax" else online.finish_log_softmax
    return da.map_blocks(_finish_block, *again, m, k, t, finish=finish, masked=where is not None, dtype=x.dtype, meta=x._meta)


def statistics(x: Any, axes: tuple[int, ...], where: Any = None, b: Any = None) -> tuple[Any, Any, Any]:
    """The merged ``(m, k, t)`` of every slice (:class:`softmax_multi.online.Stats`), as three
    dask arrays with the reduced axes of length 1.

    Each block's statistics are stacked on a new leading axis of length 3, then reduced by one
    tree reduction whose every step is the online merge.
    """
    import dask.array as da

    extra = tuple(a for a in (where, b) if a is not None)
    chunks = ((3,),) + tuple((1,) * len(c) if i in axes else c for i, c in enumerate(x.chunks))
    per_block = da.map_blocks(
        _block_stats,
        x,
        *extra,
        axes=axes,
        masked=where is not None,
        weighted=b is not None,
        new_axis=0,
        chunks=chunks,
        dtype=x.dtype,
        meta=x._meta,
    )
    merged = da.reduction(
        per_block,
        chunk=_keep,
        combine=_merge_stacked,
        aggregate=_merge_stacked,
        axis=tuple(a + 1 for a in axes),
        keepdims=True,
        dtype=x.dtype,
        meta=x._meta,
    )
    return merged[0], merged[1], merged[2]


def _aligned(x: Any, a: Any) -> Any:
    """``a`` (a mask or weights) broadcast to ``x`` and cut into the same blocks."""
    import dask.array as da

    if a is None:
        return None
    return da.broadcast_to(a, x.shape).rechunk(x.chunks)


def _whole_slices(block: Any, where: Any = None, *, function: str, axes: tuple[int, ...]) -> Any:
    import softmax_multi

    return getattr(softmax_multi, function)(block, axis=axes, where=where)


def _block_stats(block: Any, *rest: Any, axes: tuple[int, ...], masked: bool, weighted: bool) -> Any:
    from array_api_compat import array_namespace

    where = rest[0] if masked else None
    b = rest[-1] if weighted else None
    st = online.chunk_stats(block, axes, where=where, b=b)
    return array_namespace(block).stack(list(st))


def _keep(stacked: Any, axis: Any = None, keepdims: bool = True) -> Any:
    return stacked  # per-block statistics: their reduced axes are already of length 1


def _merge_stacked(stacked: Any, axis: tuple[int, ...], keepdims: bool = True) -> Any:
    """Merge the statistics laid side by side along ``axis`` into one (length 1 there)."""
    from array_api_compat import array_namespace

    st = online.reduce(online.Stats(stacked[0], stacked[1], stacked[2]), tuple(a - 1 for a in axis))
    return array_namespace(stacked).stack(list(st))


def _finish_block(block: Any, *rest: Any, finish: Any, masked: bool) -> Any:
    where, stats = (rest[0], rest[1:]) if masked else (None, rest)
    return finish(block, online.Stats(*stats), where=where)


def _finish_logsumexp(m: Any, k: Any, t: Any) -> Any:
    return online.finish_logsumexp(online.Stats(m, k, t))


def _finish_weighted(m: Any, k: Any, t: Any, *, part: int, return_sign: bool) -> Any:
    """The value (part 0) or the sign (part 1) of weighted logsumexp from merged statistics."""
    if not return_sign:
        return online.finish_logsumexp(online.Stats(m, k, t))
    return online.finish_logsumexp(online.Stats(m, k, t), return_sign=True)[part]


def _from_numpy(a: np.ndarray, device: str | None = None) -> Any:
    """A dask array cut in two along every axis that can be: both passes get exercised."""
    import dask.array as da

    return da.from_array(np.array(a, copy=True), chunks=tuple(max(1, math.ceil(n / 2)) for n in a.shape))


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x.compute())


def cross_entropy(
    z: Any, target: Any, axis: int, where: Any, class_weight: Any, eps: float, ignore_index: Any, reduction: str
) -> Any:
    """The reference on the dask arrays; logits with no entries by NumPy's arrays of their shapes
    (nothing to read), as dask.array's own max of no rows raises (``da.max(da.zeros((0, 4)),
    axis=1)``: "zero-size array to reduction operation maximum") where NumPy's has shape (0,)."""
    import dask.array as da

    if z.size:
        return loss.cross_entropy(z, target, axis, where, class_weight, eps, ignore_index, reduction, xp=_namespace())
    empty = [None if a is None else np.zeros(a.shape, dtype=a.dtype) for a in (z, target, where, class_weight)]
    return da.from_array(loss.cross_entropy(empty[0], empty[1], axis, empty[2], empty[3], eps, ignore_index, reduction, xp=np))


def linear_cross_entropy(h: Any, weight: Any, target: Any, o: linear.Options) -> Any:
    """Lazy: each block of rows of ``h`` (its features in one block) against the whole of
    ``weight`` (NumPy or Dask) by the reference on the block's own arrays, tile by tile; the
    losses then reduced as dask arrays."""
    import dask.array as da

    lead, n_features = tuple(h.shape[:-1]), h.shape[-1]
    n_rows = math.prod(lead)
    h2 = h.reshape(n_rows, n_features).rechunk({1: -1})
    y = target.reshape(n_rows).rechunk((h2.chunks[0],))
    whole = [None if a is None else da.asarray(a).rechunk(-1) for a in (weight, o.bias, o.where, o.class_weight)]
    args = [h2, "ij", y, "i", whole[0], "kj"]
    for a in whole[1:]:
        args += [a, None if a is None else "k"]
    parts = da.blockwise(
        _linear_rows,
        "ic",
        *args,
        new_axes={"c": 2},
        concatenate=True,
        dtype=o.compute,
        meta=np.empty((0, 0), dtype=o.compute),
        eps=o.label_smoothing,
        ignore_index=o.ignore_index,
        chunk_size=o.chunk_size,
        compute=o.compute,
    )
    shape = (*lead, 1)
    per_example, share = parts[:, 0].reshape(shape), parts[:, 1].reshape(shape)
    return loss.reduce_losses(_namespace(), per_example, share, len(lead), o.reduction)


@reference.quiet
def _linear_rows(
    hb: Any,
    yb: Any,
    weight: Any,
    bias: Any,
    where: Any,
    class_weight: Any,
    *,
    eps: float,
    ignore_index: Any,
    chunk_size: Any,
    compute: Any,
) -> Any:
    """One block of rows: their losses and shares side by side, (rows, 2)."""
    from array_api_compat import array_namespace

    xp = array_namespace(hb)
    cl = linear.classes(xp, weight, where, class_weight, bias, compute)
    per_example, share = linear.row_terms(xp, hb, weight, yb[:, None], cl, eps, ignore_index, chunk_size, compute)
    return xp.concat([per_example, share], axis=1)


spec = BackendSpec(
    name="dask",
    array_types=(("dask.array.core", "Array"),),
    module="dask",
    distribution="dask",
    namespace=_namespace,
    softmax=softmax,
    log_softmax=log_softmax,
    logsumexp=logsumexp,
    weighted_logsumexp=weighted_logsumexp,
    from_numpy=_from_numpy,
    to_numpy=_to_numpy,
    dtypes=("float32", "float64", "complex64", "complex128"),
    out="Dask arrays are lazy; use the returned array (da.store or to_zarr writes it out)",
    accurate_sums=True,  # each block summed pairwise by NumPy, the blocks' sums as a tree
    cross_entropy=cross_entropy,
    linear_cross_entropy=linear_cross_entropy,
    accepts_weight=lambda w: isinstance(w, np.ndarray),
)
