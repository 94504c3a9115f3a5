"""Argument checks shared by every backend, so that the same bad input fails the same way everywhere.

Everything here looks at shapes, ndim and dtypes only, never at array values, so it runs
unchanged on tracers (``jax.jit``) and fake tensors (``torch.compile``).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

__all__ = [
    "AxisError",
    "check_broadcast",
    "check_where",
    "dtype_name",
    "floating_dtype",
    "native_dtype",
    "normalize_axes",
    "promote_weights",
    "resolve_dtypes",
]


class AxisError(ValueError, IndexError):
    """An ``axis`` argument is out of range or names an axis twice (like ``numpy.exceptions.AxisError``)."""


_AXES_CACHE: dict[tuple[Any, int], tuple[int, ...]] = {}
_DTYPE_CACHE: dict[tuple[Any, ...], tuple[Any, Any]] = {}
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
        raise TypeError(f"{func}: axis must be an int, a tuple of ints or None, got {whole!r}") from None
    size = max(ndim, 1)
    if not -size <= a < size:
        raise AxisError(f"{func}: axis {a} is out of bounds for an array of ndim {ndim}")
    return a % size if ndim else 0


def resolve_dtypes(func: str, xp: Any, x_dtype: Any, dtype: Any, *, complex_ok: bool = False) -> tuple[Any, Any]:
    """Return ``(compute_dtype, result_dtype)`` for input dtype ``x_dtype`` and the ``dtype=`` argument.

    Integers and booleans promote to the namespace's default real floating dtype; float16 and
    bfloat16 are computed in float32 and returned in their own dtype; complex is refused unless
    ``complex_ok`` (logsumexp). Results come in the native byte order.
    """
    key: tuple[Any, ...] | None = (id(xp), x_dtype, dtype, complex_ok)
    try:
        hit = _DTYPE_CACHE.get(key)  # type: ignore[arg-type]
    except TypeError:  # an unhashable dtype argument: check it the slow way
        key = hit = None
    if hit is not None:
        return hit
    result = _resolve(func, xp, x_dtype, dtype, complex_ok)
    if key is not None:
        _remember(_DTYPE_CACHE, key, result)
    return result


def _resolve(func: str, xp: Any, x_dtype: Any, dtype: Any, complex_ok: bool) -> tuple[Any, Any]:
    isdtype = xp.isdtype
    is_complex = isdtype(x_dtype, "complex floating")
    if is_complex and not complex_ok:
        raise TypeError(f"{func}: complex input is not supported (x has dtype {dtype_name(x_dtype)}); expected real numbers")
    if not isdtype(x_dtype, ("real floating", "complex floating", "integral", "bool")):
        raise TypeError(f"{func}: x must hold {'numbers' if complex_ok else 'real numbers'}, got dtype {dtype_name(x_dtype)}")
    if dtype is None:
        target = x_dtype if isdtype(x_dtype, ("real floating", "complex floating")) else _default_float(xp)
    else:
        target = floating_dtype(func, xp, dtype, complex_ok=complex_ok)
        if is_complex and not isdtype(target, "complex floating"):
            raise TypeError(
                f"{func}: dtype must be a complex floating dtype for complex x (x has dtype {dtype_name(x_dtype)}), got {dtype!r}"
            )
    return _compute_dtype(xp, target), native_dtype(target)


def floating_dtype(func: str, xp: Any, dtype: Any, *, complex_ok: bool = False) -> Any:
    """The ``dtype=`` argument as a floating dtype of ``xp`` (real, or complex if ``complex_ok``)."""
    kinds = ("real floating", "complex floating") if complex_ok else "real floating"
    target = _as_dtype(xp, dtype)
    try:
        ok = target is not None and xp.isdtype(target, kinds)
    except Exception:  # not a dtype of this library at all
        ok = False
    if not ok:
        raise TypeError(f"{func}: dtype must be a {'floating' if complex_ok else 'real floating'} dtype, got {dtype!r}")
    return target


def promote_weights(func: str, xp: Any, x_dtype: Any, b_dtype: Any, dtype: Any) -> tuple[Any, Any]:
    """``(compute_dtype, result_dtype)`` of logsumexp with weights ``b``: the promoted dtype of x
    and b (integers and booleans as the default floating dtype), or ``dtype=``, as in SciPy."""
    isdtype = xp.isdtype
    numeric = ("real floating", "complex floating", "integral", "bool")
    for name, d in (("x", x_dtype), ("b", b_dtype)):
        if not isdtype(d, numeric):
            raise TypeError(f"{func}: {name} must hold numbers, got dtype {dtype_name(d)}")
    any_complex = isdtype(x_dtype, "complex floating") or isdtype(b_dtype, "complex floating")
    if dtype is not None:
        target = floating_dtype(func, xp, dtype, complex_ok=True)
        if any_complex and not isdtype(target, "complex floating"):
            raise TypeError(f"{func}: dtype must be a complex floating dtype for complex x or b, got {dtype!r}")
    else:
        try:
            target = xp.result_type(x_dtype, b_dtype)
        except Exception:  # e.g. array-api-strict: integers and floats do not promote together
            target = None
        if target is None or not isdtype(target, ("real floating", "complex floating")):
            floats = [d if isdtype(d, ("real floating", "complex floating")) else _default_float(xp) for d in (x_dtype, b_dtype)]
            target = xp.result_type(*floats)
    return _compute_dtype(xp, target), native_dtype(target)


def _compute_dtype(xp: Any, target: Any) -> Any:
    """float16 and bfloat16 are computed in float32; everything else in its own dtype."""
    if xp.isdtype(target, "real floating") and xp.finfo(target).bits < 32:
        return xp.float32
    return native_dtype(target)


def native_dtype(dtype: Any) -> Any:
    """``dtype`` in the machine's byte order (NumPy's big-endian ``>f4`` is ``float32``)."""
    order = getattr(dtype, "byteorder", "=")
    return dtype.newbyteorder("=") if order not in ("=", "|") else dtype


def _as_dtype(xp: Any, dtype: Any) -> Any:
    """``dtype`` as a dtype of ``xp``, or None.

    Strings name dtypes (``"float32"``) on every library, and so do NumPy's spellings
    (``np.float32``, ``float``, ``np.dtype("f4")``), by their name.
    """
    if isinstance(dtype, str):
        return getattr(xp, dtype, None)
    try:
        if xp.isdtype(dtype, ("real floating", "complex floating", "integral", "bool")):
            return dtype  # already a dtype of this library
    except Exception:  # not one of this library's dtypes: perhaps NumPy's
        pass
    try:
        name = np.dtype(dtype).name
    except TypeError:
        return None
    return getattr(xp, name, None)


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
    ok = len(w_shape) <= len(x_shape) and all(w in (1, s) for w, s in zip(reversed(w_shape), reversed(x_shape)))
    if not ok:
        raise ValueError(f"{func}: where of shape {w_shape} does not broadcast to the shape of x {tuple(x_shape)}")


def check_broadcast(func: str, x_shape: tuple, b_shape: tuple) -> tuple[int, ...]:
    """The shape ``x`` and the weights ``b`` broadcast to; ValueError when they do not."""
    n = max(len(x_shape), len(b_shape))
    xs = (1,) * (n - len(x_shape)) + tuple(x_shape)
    bs = (1,) * (n - len(b_shape)) + tuple(b_shape)
    if any(p != q and 1 not in (p, q) for p, q in zip(xs, bs)):
        raise ValueError(f"{func}: b of shape {tuple(b_shape)} does not broadcast against x of shape {tuple(x_shape)}")
    return tuple(max(p, q) if 0 not in (p, q) else 0 for p, q in zip(xs, bs))
