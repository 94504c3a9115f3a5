"""The public losses: their arguments checked the same way for every backend, then the backend's
native loss or the array-API reference of :mod:`softmax_multi.loss` (and :mod:`softmax_multi.linear`)."""

from __future__ import annotations

import functools
import numbers
import operator
from typing import Any

from . import linear, loss
from ._api import _PYTHON_INPUTS, _backend, _blame, _cast, _from_python, _like_x, _where_like
from ._args import dtype_name, normalize_axes, resolve_dtypes
from .registry import BackendSpec

__all__ = ["cross_entropy", "linear_cross_entropy"]

Array = Any


def cross_entropy(
    logits: Array,
    target: Array,
    /,
    axis: int = -1,
    *,
    where: Array | None = None,
    class_weight: Array | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    reduction: str = "none",
    dtype: Any = None,
) -> Array:
    """The cross-entropy loss of ``logits`` (classes along ``axis``) against ``target``, as
    ``torch.nn.functional.cross_entropy`` defines it, on any backend.

    Parameters
    ----------
    logits
        Scores of any registered library (integers promote to its default floating dtype).
    target
        Of ``logits``' library. Class indices (an integer array of ``logits``' shape without
        ``axis``) or class probabilities (a floating array of ``logits``' shape).
    axis
        The class axis (one int).
    where
        Boolean mask broadcastable to ``logits``: masked classes take no part, as in
        :func:`softmax`; smoothing spreads over the others; a target on a masked class gives
        +inf (its gradient stays finite: softmax minus the target).
    class_weight
        Shape ``(C,)``: rescales each class as torch's ``weight=`` does, smoothing included.
    label_smoothing
        In [0, 1]: the target becomes ``(1 - label_smoothing) q + label_smoothing / n`` over the
        ``n`` classes taking part.
    ignore_index
        With class indices only: examples whose target equals it give 0 and a zero gradient, and
        take no part in a ``"mean"``.
    reduction
        ``"none"`` (per-example losses), ``"sum"``, or ``"mean"``: the sum over the total weight
        of the examples not ignored (their count when unweighted; the number of examples for
        probability targets), as torch.
    dtype
        Cast ``logits`` (and probability targets, class weights) to this floating dtype first.

    Returns
    -------
    The losses, of ``logits``' library, device and dtype (float16 and bfloat16 computed in
    float32). A class index outside ``[0, C)`` that is not ``ignore_index`` gives NaN for its
    example, never an exception: no host synchronisation, so it works under ``jax.jit`` and on
    GPUs. A slice holding NaN or +inf gives NaN.

    Examples
    --------
    >>> import numpy as np, softmax_multi as smx
    >>> z = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    >>> smx.cross_entropy(z, np.array([0, 2])).round(4)
    array([0.1698, 1.0986])
    >>> float(smx.cross_entropy(z, np.array([0, -100]), ignore_index=-100, reduction="mean").round(4))
    0.1698
    """
    func = "cross_entropy"
    if type(logits) in _PYTHON_INPUTS:
        logits = _from_python(func, logits)
    spec, xp = _backend(func, logits)
    ndim = logits.ndim
    if ndim == 0:
        raise ValueError(f"{func}: logits must have a class axis, got a 0-d array")
    axis = _class_axis(func, axis, ndim)
    n_classes = logits.shape[axis]
    if n_classes == 0:
        raise ValueError(f"{func}: logits have no classes along axis {axis} (shape {tuple(logits.shape)})")
    compute, result = resolve_dtypes(func, xp, logits.dtype, dtype)
    target = _target(func, spec, xp, logits, target, axis)
    eps, ignore_index, reduction = _options(func, label_smoothing, ignore_index, reduction, xp, target)
    if where is not None:
        where = _where_like(func, spec, xp, logits, where, tuple(logits.shape))
    if class_weight is not None:
        class_weight = _class_weight(func, spec, xp, logits, class_weight, n_classes)
        class_weight = _cast(xp, class_weight, compute, result)
    if xp.isdtype(target.dtype, "real floating"):
        target = _cast(xp, target, compute, result)
    z = _cast(xp, logits, compute, result)
    impl = spec.cross_entropy or functools.partial(loss.cross_entropy, xp=xp, accurate_sums=spec.accurate_sums)
    try:
        y = impl(z, target, axis, where, class_weight, eps, ignore_index, reduction)
    except Exception as err:
        _blame(err, spec, func)
        raise
    return y if compute == result else xp.astype(y, result)


def linear_cross_entropy(
    h: Array,
    weight: Array,
    target: Array,
    /,
    *,
    bias: Array | None = None,
    where: Array | None = None,
    class_weight: Array | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    reduction: str = "none",
    chunk_size: int | None = None,
) -> Array:
    """The cross-entropy of the logits ``h @ weight.T + bias`` against ``target``, computed chunk
    by chunk so that the logits (and their gradient) are never held whole.

    Parameters
    ----------
    h
        Features, shape ``(..., D)``.
    weight
        Shape ``(V, D)``, as ``torch.nn.Linear.weight``; of ``h``'s library (a Dask ``h`` also
        takes a NumPy ``weight``, as dask.array's matmul does).
    target
        Class indices, ``h``'s shape without its last axis, of an integer dtype.
    bias
        Shape ``(V,)``, or None.
    where, class_weight
        Shape ``(V,)`` each: a class mask (boolean) and class weights, as :func:`cross_entropy`.
    label_smoothing, ignore_index, reduction
        As :func:`cross_entropy`.
    chunk_size
        How many logits to hold at once (rows times classes); None picks a size (see
        docs/loss.md) that keeps the working set a few MiB per thread.

    Returns
    -------
    As :func:`cross_entropy` of ``h @ weight.T + bias``: ``h``'s shape without its last axis, or
    a 0-d array. float16 and bfloat16 ``h`` and ``weight`` accumulate in float32.

    Gradients: PyTorch autograd and JAX (``jax.grad``, ``jax.vjp`` under ``jit``; a custom VJP,
    so ``jax.jacfwd`` does not apply). With ``"sum"`` or ``"mean"`` the gradients are formed in
    the forward pass; with ``"none"`` the backward recomputes each chunk's logits.

    Examples
    --------
    >>> import numpy as np, softmax_multi as smx
    >>> h, w = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    >>> smx.linear_cross_entropy(h, w, np.array([0, 2])).round(4)
    array([0.1698, 1.0986])
    """
    func = "linear_cross_entropy"
    if type(h) in _PYTHON_INPUTS:
        h = _from_python(func, h)
    spec, xp = _backend(func, h)
    if h.ndim < 1:
        raise ValueError(f"{func}: h must have shape (..., D), got a 0-d array")
    weight = _weight_matrix(func, spec, xp, h, weight)
    n_classes = weight.shape[0]
    if n_classes == 0:
        raise ValueError(f"{func}: weight has no classes (shape {tuple(weight.shape)})")
    compute, result = resolve_dtypes(func, xp, h.dtype, None)
    if resolve_dtypes(func, xp, weight.dtype, None)[1] != result:
        raise TypeError(f"{func}: weight has dtype {dtype_name(weight.dtype)}, expected {dtype_name(result)} (h's dtype)")
    target = _like_x(func, spec, xp, h, "target", target)
    if not xp.isdtype(target.dtype, "integral"):
        raise TypeError(f"{func}: target must hold class indices (an integer dtype), got dtype {dtype_name(target.dtype)}")
    if tuple(target.shape) != tuple(h.shape[:-1]):
        raise ValueError(f"{func}: target has shape {tuple(target.shape)}, expected {tuple(h.shape[:-1])} (h's shape without D)")
    eps, ignore_index, reduction = _options(func, label_smoothing, ignore_index, reduction, xp, target)
    bias = None if bias is None else _class_vector(func, spec, xp, h, "bias", bias, n_classes, result)
    class_weight = (
        None if class_weight is None else _class_vector(func, spec, xp, h, "class_weight", class_weight, n_classes, result)
    )
    if where is not None:
        where = _like_x(func, spec, xp, h, "where", where)
        if not xp.isdtype(where.dtype, "bool"):
            raise TypeError(f"{func}: where must be a boolean array, got dtype {dtype_name(where.dtype)}")
        if tuple(where.shape) != (n_classes,):
            raise ValueError(f"{func}: where has shape {tuple(where.shape)}, expected ({n_classes},) (one flag per class)")
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
            raise ValueError(f"{func}: chunk_size must be a positive int (logits held at once), got {chunk_size!r}")
        chunk_size = int(chunk_size)
    impl = spec.linear_cross_entropy or functools.partial(linear.linear_cross_entropy, xp=xp, accurate_sums=spec.accurate_sums)
    options = linear.Options(bias, where, class_weight, eps, ignore_index, reduction, chunk_size, compute)
    try:
        y = impl(h, weight, target, options)
    except Exception as err:
        _blame(err, spec, func)
        raise
    return y if y.dtype == result else xp.astype(y, result)


def _class_axis(func: str, axis: Any, ndim: int) -> int:
    if axis is None or isinstance(axis, tuple):
        raise TypeError(f"{func}: axis must be one int (the class axis), got {axis!r}")
    return normalize_axes(func, axis, ndim)[0]


def _target(func: str, spec: BackendSpec, xp: Any, logits: Array, target: Any, axis: int) -> Array:
    """``target`` as an array of ``logits``' library, of the shape its dtype calls for."""
    target = _like_x(func, spec, xp, logits, "target", target)
    shape = tuple(logits.shape)
    if xp.isdtype(target.dtype, "integral"):
        expected = shape[:axis] + shape[axis + 1 :]
        what = "class indices: logits' shape without the class axis"
    elif xp.isdtype(target.dtype, "real floating"):
        expected, what = shape, "probabilities: logits' shape"
    else:
        raise TypeError(
            f"{func}: target must hold class indices (an integer dtype) or probabilities (a real floating dtype), "
            f"got dtype {dtype_name(target.dtype)}"
        )
    if tuple(target.shape) != expected:
        raise ValueError(f"{func}: target has shape {tuple(target.shape)}, expected {expected} ({what})")
    return target


def _options(
    func: str, label_smoothing: Any, ignore_index: Any, reduction: Any, xp: Any, target: Array
) -> tuple[float, int | None, str]:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"{func}: label_smoothing must be a real number in [0, 1], got {label_smoothing!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:  # NaN fails too
        raise ValueError(f"{func}: label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    if ignore_index is not None:
        if isinstance(ignore_index, bool):
            raise TypeError(f"{func}: ignore_index must be an int or None, got {ignore_index!r}")
        try:
            ignore_index = operator.index(ignore_index)
        except TypeError:
            raise TypeError(f"{func}: ignore_index must be an int or None, got {ignore_index!r}") from None
        if not xp.isdtype(target.dtype, "integral"):
            raise ValueError(f"{func}: ignore_index applies to class-index targets only; target holds probabilities")
    if reduction not in loss.REDUCTIONS:
        raise ValueError(f"{func}: reduction must be one of 'none', 'sum', 'mean', got {reduction!r}")
    return float(label_smoothing), ignore_index, reduction


def _class_weight(func: str, spec: BackendSpec, xp: Any, logits: Array, value: Any, n_classes: int) -> Array:
    value = _like_x(func, spec, xp, logits, "class_weight", value)
    if not xp.isdtype(value.dtype, ("real floating", "integral")):
        raise TypeError(f"{func}: class_weight must hold real numbers, got dtype {dtype_name(value.dtype)}")
    if tuple(value.shape) != (n_classes,):
        raise ValueError(f"{func}: class_weight has shape {tuple(value.shape)}, expected ({n_classes},) (one weight per class)")
    return value


def _weight_matrix(func: str, spec: BackendSpec, xp: Any, h: Array, weight: Any) -> Array:
    weight = _matrix_like(func, spec, xp, h, weight)
    if weight.ndim != 2 or weight.shape[1] != h.shape[-1]:
        raise ValueError(
            f"{func}: weight has shape {tuple(weight.shape)}, expected (V, {h.shape[-1]}) (classes by h's last axis)"
        )
    return weight


def _matrix_like(func: str, spec: BackendSpec, xp: Any, h: Array, weight: Any) -> Array:
    """``weight`` of ``h``'s library; a backend may accept others (Dask takes NumPy weights)."""
    accepts = getattr(spec, "accepts_weight", None)
    if accepts is not None and accepts(weight):
        return weight
    return _like_x(func, spec, xp, h, "weight", weight)


def _class_vector(func: str, spec: BackendSpec, xp: Any, h: Array, name: str, value: Any, n_classes: int, result: Any) -> Array:
    value = _matrix_like(func, spec, xp, h, value) if name == "bias" else _like_x(func, spec, xp, h, name, value)
    if not xp.isdtype(value.dtype, ("real floating", "integral")):
        raise TypeError(f"{func}: {name} must hold real numbers, got dtype {dtype_name(value.dtype)}")
    if tuple(value.shape) != (n_classes,):
        raise ValueError(f"{func}: {name} has shape {tuple(value.shape)}, expected ({n_classes},) (one per class)")
    return value if value.dtype == result else xp.astype(value, result)
