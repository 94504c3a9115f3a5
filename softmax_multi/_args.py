"""Argument checks shared by every backend, so that the same bad input fails the same way everywhere.

Everything here looks at shapes, ndim and dtypes only, never at array values, so it runs
unchanged on tracers (``jax.jit``) and fake tensors (``torch.compile``).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

__all__ = ["AxisError", "check_where", "dtype_name", "normalize_axes", "resolve_dtypes"]


class AxisError(ValueError, IndexError):
    """An ``axis`` argument is out of range or names an axis twice (like ``numpy.exceptions.AxisError``)."""


_AXES_CACHE: dict[tuple[Any, int], tuple[int, ...]] = {}
_DTYPE_CACHE: dict[tuple[int, Any, Any], tuple[Any, Any]] = {}
_CACHE_LIMIT = 4096


def _remember(cache: dict, key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def normalize_axes(func: str, axis: Any, ndim: int) -> tuple[int, ...]:
    """Return the sorted, non-negative axes that ``axis`` names for an array of ``ndim`` dimensions.

    ``None`` names every axis. A 0-d array has no axes to reduce, but accepts ``axis`` 0 or -1
    (as PyTorch does), treating the scalar as a row of one element.

    >>> normalize_axes("softmax", -1, 3), normalize_axes("softmax", (0, -1), 3)
    ((2,), (0, 2))
    """
    # Only exact ints are cached: True == 1 and hashes alike, yet is refused.
    cacheable = type(axis) is int or (type(axis) is tuple and all(type(a) is int for a in axis))
    if cacheable:
        hit = _AXES_CACHE.get((axis, ndim))
        if hit is not None:
            return hit
    if axis is None:
        axes = tuple(range(ndim))
    elif isinstance(axis, tuple):
        axes = tuple(_one_axis(func, a, ndim, axis) for a in axis)
        if len(set(axes)) != len(axes):
            raise AxisError(f"{func}: axis {axis!r} names the same axis twice (array of ndim {ndim})")
        axes = tuple(sorted(axes))
    else:
        axes = (_one_axis(func, axis, ndim, axis),)
    if ndim == 0:
        axes = ()
    if cacheable:
        _remember(_AXES_CACHE, (axis, ndim), axes)
    return axes


def _one_axis(func: str, a: Any, ndim: int, whole: Any) -> int:
    if isinstance(a, bool):
        raise TypeError(f"{func}: axis must be an int, a tuple of ints or None, got {whole!r}")
    try:
        a = operator.index(a)
    except TypeError:
        raise TypeError(
            f"{func}: axis must be an int, a tuple of ints or None, got {whole!r}"
        ) from None
    size = max(ndim, 1)
    if not -size <= a < size:
        raise AxisError(f"{func}: axis {a} is out of bounds for an array of ndim {ndim}")
    return a % size if ndim else 0


def resolve_dtypes(func: str, xp: Any, x_dtype: Any, dtype: Any) -> tuple[Any, Any]:
    """Return ``(compute_dtype, result_dtype)`` for input dtype ``x_dtype`` and the ``dtype=`` argument.

    Integers and booleans promote to the namespace's default real floating dtype; float16 and
    bfloat16 are computed in float32 and returned in their own dtype; complex is refused.
    """
    try:
        key = (id(xp), x_dtype, dtype)
        hit = _DTYPE_CACHE.get(key)
    except TypeError:  # an unhashable dtype argument: check it the slow way
        key = hit = None
    if hit is not None:
        return hit
    isdtype = xp.isdtype
    if isdtype(x_dtype, "complex floating"):
        raise TypeError(f"{func}: complex input is not supported (x has dtype {dtype_name(x_dtype)}); expected real numbers")
    if not isdtype(x_dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"{func}: x must hold real numbers, got dtype {dtype_name(x_dtype)}")
    if dtype is None:
        target = x_dtype
        if not isdtype(target, "real floating"):
            target = _default_float(xp)
    else:
        target = _as_dtype(xp, dtype)
        try:
            ok = target is not None and isdtype(target, "real floating")
        except Exception:  # not a dtype of this library at all
            ok = False
        if not ok:
            raise TypeError(f"{func}: dtype must be a real floating dtype, got {dtype!r}")
    compute = xp.float32 if xp.finfo(target).bits < 32 else target
    result = (compute, target)
    if key is not None:
        _remember(_DTYPE_CACHE, key, result)
    return result


def _as_dtype(xp: Any, dtype: Any) -> Any:
    """``dtype`` as a dtype of ``xp``, or None; strings name dtypes (``"float32"``) on every library."""
    if isinstance(dtype, str):
        return getattr(xp, dtype, None)
    if xp is np:  # NumPy also spells dtypes as ``np.float32`` or ``float``
        try:
            return np.dtype(dtype)
        except TypeError:
            return None
    return dtype


def _default_float(xp: Any) -> Any:
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None:
        return info().default_dtypes()["real floating"]
    return xp.float64


def dtype_name(dtype: Any) -> str:
    """``float32`` for NumPy's, torch's (``torch.float32``) and array-api-strict's float32 alike."""
    return str(dtype).rpartition(".")[2]


def check_where(func: str, xp: Any, where: Any, x_shape: tuple) -> None:
    """Refuse a ``where`` that is not boolean or does not broadcast to ``x_shape``."""
    if not xp.isdtype(where.dtype, "bool"):
        raise TypeError(f"{func}: where must be a boolean array, got dtype {dtype_name(where.dtype)}")
    w_shape = tuple(where.shape)
    ok = len(w_shape) <= len(x_shape) and all(
        w == 1 or w == s for w, s in zip(reversed(w_shape), reversed(x_shape))
    )
    if not ok:
        raise ValueError(
            f"{func}: where of shape {w_shape} does not broadcast to the shape of x {tuple(x_shape)}"
        )
