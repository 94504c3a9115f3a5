"""Dask backend: lazy softmax, log_softmax and logsumexp on dask.array, in bounded memory.

Nothing is computed here; each function returns a dask array. When every softmax axis lies
inside one block, each block is done on its own (one blockwise pass, by the block's own backend:
NumPy, CuPy, ...). When the axes span several blocks, two passes over the blocks:

1. the online-softmax statistics ``(m, s)`` of every block, merged in one tree reduction
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

from softmax_multi import online
from softmax_multi.registry import BackendSpec


def _namespace(x: Any = None) -> Any:
    import array_api_compat.dask.array

    return array_api_compat.dask.array


def softmax(x: Any, axes: tuple[int, ...], where: Any = None) -> Any:
    return _normalised("softmax", x, axes, where)


def log_softmax(x: Any, axes: tuple[int, ...], where: Any = None) -> Any:
    return _normalised("log_softmax", x, axes, where)


def logsumexp(x: Any, axes: tuple[int, ...], where: Any = None, keepdims: bool = False) -> Any:
    m, s = statistics(x, axes, _aligned(x, where))
    r = m.map_blocks(_finish_logsumexp, s, dtype=x.dtype, meta=x._meta)
    return r if keepdims or not axes else r.squeeze(axis=axes)


def _normalised(func: str, x: Any, axes: tuple[int, ...], where: Any) -> Any:
    import dask.array as da
    from dask.graph_manipulation import bind

    where = _aligned(x, where)
    extra = () if where is None else (where,)
    if all(len(x.chunks[a]) == 1 for a in axes):  # every slice inside one block: one pass
        return da.map_blocks(_whole_slices, x, *extra, function=func, axes=axes, dtype=x.dtype, meta=x._meta)
    m, s = statistics(x, axes, where)
    # The second pass reads the input again, after the statistics, rather than keeping it all.
    again = bind((x, *extra), (m, s))
    finish = online.finish_softmax if func == "softmax" else online.finish_log_softmax
    return da.map_blocks(_finish_block, *again, m, s, finish=finish, masked=where is not None, dtype=x.dtype, meta=x._meta)


def statistics(x: Any, axes: tuple[int, ...], where: Any = None) -> tuple[Any, Any]:
    """The merged ``(m, s)`` of every slice, as two dask arrays with the reduced axes of length 1.

    Each block's statistics are stacked on a new leading axis of length 2, then reduced by one
    tree reduction whose every step is the online merge.
    """
    import dask.array as da

    extra = () if where is None else (where,)
    chunks = ((2,),) + tuple((1,) * len(c) if i in axes else c for i, c in enumerate(x.chunks))
    per_block = da.map_blocks(
        _block_stats, x, *extra, axes=axes, new_axis=0, chunks=chunks, dtype=x.dtype, meta=x._meta
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
    return merged[0], merged[1]


def _aligned(x: Any, where: Any) -> Any:
    """``where`` broadcast to ``x`` and cut into the same blocks."""
    import dask.array as da

    if where is None:
        return None
    return da.broadcast_to(where, x.shape).rechunk(x.chunks)


def _whole_slices(block: Any, where: Any = None, *, function: str, axes: tuple[int, ...]) -> Any:
    import softmax_multi

    return getattr(softmax_multi, function)(block, axis=axes, where=where)


def _block_stats(block: Any, where: Any = None, *, axes: tuple[int, ...]) -> Any:
    from array_api_compat import array_namespace

    st = online.chunk_stats(block, axes, where=where)
    return array_namespace(block).stack([st.m, st.s])


def _keep(stacked: Any, axis: Any = None, keepdims: bool = True) -> Any:
    return stacked  # per-block statistics: their reduced axes are already of length 1


def _merge_stacked(stacked: Any, axis: tuple[int, ...], keepdims: bool = True) -> Any:
    """Merge the statistics laid side by side along ``axis`` into one (length 1 there)."""
    from array_api_compat import array_namespace

    st = online.reduce(online.Stats(stacked[0], stacked[1]), tuple(a - 1 for a in axis))
    return array_namespace(stacked).stack([st.m, st.s])


def _finish_block(block: Any, *rest: Any, finish: Any, masked: bool) -> Any:
    where, m, s = (rest[0], rest[1], rest[2]) if masked else (None, rest[0], rest[1])
    return finish(block, online.Stats(m, s), where=where)


def _finish_logsumexp(m: Any, s: Any) -> Any:
    return online.finish_logsumexp(online.Stats(m, s))


def _from_numpy(a: np.ndarray, device: str | None = None) -> Any:
    """A dask array cut in two along every axis that can be: both passes get exercised."""
    import dask.array as da

    return da.from_array(np.array(a, copy=True), chunks=tuple(max(1, math.ceil(n / 2)) for n in a.shape))


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x.compute())


spec = BackendSpec(
    name="dask",
    array_types=(("dask.array.core", "Array"),),
    module="dask",
    distribution="dask",
    namespace=_namespace,
    softmax=softmax,
    log_softmax=log_softmax,
    logsumexp=logsumexp,
    from_numpy=_from_numpy,
    to_numpy=_to_numpy,
    dtypes=("float32", "float64"),
    out="Dask arrays are lazy; use the returned array (da.store or to_zarr writes it out)",
)
