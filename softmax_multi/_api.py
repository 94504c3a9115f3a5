"""The public functions: check the arguments once, then run the backend's native code or the reference."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import reference
from ._args import check_where, dtype_name, normalize_axes, resolve_dtypes
from .registry import _plans, backend_for_type

__all__ = ["log_softmax", "logsumexp", "softmax"]

Array = Any
_PYTHON_INPUTS = (int, float, bool, list, tuple)
_PLAN_LIMIT = 4096


def softmax(
    x: Array, /, axis: int | tuple[int, ...] | None = -1, *, where: Array | None = None, dtype: Any = None, out: Array | None = None
) -> Array:
    """Softmax of ``x`` along ``axis``: ``exp(x - m) / sum(exp(x - m))`` with ``m`` the slice maximum.

    Parameters
    ----------
    x
        An array of any registered library, any array-API array, or a Python scalar or nested list
        (taken as NumPy). Integers and booleans promote to the library's default floating dtype.
    axis
        An int, a tuple of ints, or None for every axis.
    where
        Boolean mask broadcastable to ``x``: only True entries take part; masked entries give 0,
        and a fully masked slice gives all 0 (never NaN).
    dtype
        Cast ``x`` to this real floating dtype first; the result has it too.
    out
        A preallocated array of ``x``'s library, shape and device and of the result's dtype to
        write into (NumPy and PyTorch); it is returned. It may be ``x`` itself.

    Returns
    -------
    An array of ``x``'s library, on ``x``'s device, of ``x``'s shape. float16 and bfloat16 are
    computed in float32 and returned in their own dtype. A slice holding NaN or +inf gives NaN.

    Examples
    --------
    >>> import numpy as np, softmax_multi as smx
    >>> smx.softmax(np.array([5.0, 7.0, 10.0])).round(4)
    array([0.0064, 0.0471, 0.9465])
    >>> smx.softmax([[1.0, 2.0], [3.0, 4.0]], where=[True, False]).tolist()
    [[1.0, 0.0], [1.0, 0.0]]
    """
    if out is not None:
        return _call_out("softmax", x, axis, where, dtype, out)
    return _call("softmax", x, axis, where, dtype)


def log_softmax(
    x: Array, /, axis: int | tuple[int, ...] | None = -1, *, where: Array | None = None, dtype: Any = None, out: Array | None = None
) -> Array:
    """Log of the softmax, computed directly: ``x - m - log(sum(exp(x - m)))``.

    Arguments as :func:`softmax`; masked entries and fully masked slices give -inf.

    Examples
    --------
    >>> import numpy as np, softmax_multi as smx
    >>> smx.log_softmax(np.array([1.0, 1.0])).round(4)
    array([-0.6931, -0.6931])
    """
    if out is not None:
        return _call_out("log_softmax", x, axis, where, dtype, out)
    return _call("log_softmax", x, axis, where, dtype)


def logsumexp(x: Array, /, axis: int | tuple[int, ...] | None = None, *, keepdims: bool = False, where: Array | None = None, dtype: Any = None) -> Array:
    """``log(sum(exp(x)))`` over ``axis`` (default: every axis), without overflow.

    Arguments as :func:`softmax`, plus ``keepdims`` to keep the reduced axes with length 1. An
    empty or fully masked slice gives -inf; +inf in a slice gives +inf; NaN gives NaN.

    Examples
    --------
    >>> import numpy as np, softmax_multi as smx
    >>> float(smx.logsumexp(np.array([1000.0, 1000.0])).round(4))
    1000.6931
    """
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"logsumexp: keepdims must be a bool, got {keepdims!r}")
    return _call("logsumexp", x, axis, where, dtype, bool(keepdims))


def _call(func: str, x: Array, axis: Any, where: Any, dtype: Any, keepdims: bool | None = None) -> Array:
    """Check the arguments (once per kind of call, then cached as a plan) and run the implementation.

    ``keepdims`` is None for softmax and log_softmax, a bool for logsumexp.
    """
    plan = key = None
    # Only exact ints and None are cached: True == 1 and (True,) == (1,) as keys, yet are refused.
    # One dict per array class, so that torch.compile never compares a torch dtype with NumPy's.
    plans = _plans.get(type(x))
    if type(axis) is int or axis is None:
        try:
            key = (func, x.dtype, x.ndim, axis, dtype)
            plan = None if plans is None else plans.get(key)
        except (AttributeError, TypeError):  # no dtype (a Python scalar or list), or an unhashable dtype=
            key = None
    if plan is None:
        if type(x) in _PYTHON_INPUTS:
            return _call(func, _from_python(func, x), axis, where, dtype, keepdims)
        plan = _plan(func, x, axis, dtype)
        if key is not None:
            if plans is None or len(plans) >= _PLAN_LIMIT:
                plans = _plans[type(x)] = {}
            plans[key] = plan
    if where is None and plan[5]:
        try:
            if keepdims is None:
                return plan[1](x, plan[2], None)
            return plan[1](x, plan[2], None, keepdims)
        except Exception as err:
            _blame(err, plan[0], func)
            raise
    return _call_general(func, plan, x, where, keepdims)


def _blame(err: Exception, spec: Any, func: str) -> None:
    """Name the backend in an error raised inside it, so a faulty plugin is easy to find."""
    note = f"raised in {func} of the softmax-multi backend {spec.name!r}"
    if hasattr(err, "add_note") and note not in getattr(err, "__notes__", []):  # Python >= 3.11
        err.add_note(note)


def _plan(func: str, x: Array, axis: Any, dtype: Any) -> tuple:
    """What a call with this array class, dtype, ndim, axis and dtype= runs; checked once, then cached."""
    cls = type(x)
    spec = backend_for_type(cls, x)
    if spec is None:
        raise TypeError(
            f"{func}: x of type {cls.__module__}.{cls.__qualname__} is not an array of any "
            "registered backend and has no __array_namespace__"
        )
    xp = spec.namespace(x)
    axes = normalize_axes(func, axis, x.ndim)
    compute, result = resolve_dtypes(func, xp, x.dtype, dtype)
    impl = getattr(spec, func) or getattr(reference, func)
    direct = x.dtype == compute and compute == result  # no cast either way
    return spec, impl, axes, compute, result, direct


def _call_out(func: str, x: Array, axis: Any, where: Any, dtype: Any, out: Array) -> Array:
    """softmax or log_softmax written into ``out``, once ``out`` is checked against ``x``."""
    if type(x) in _PYTHON_INPUTS:
        x = _from_python(func, x)
    plan = _plan(func, x, axis, dtype)
    spec, result = plan[0], plan[4]
    if spec.out is not True:
        raise TypeError(f"{func}: out= is not supported for {spec.name} arrays: {spec.out}; use the returned array")
    other = backend_for_type(type(out), out)
    if other is not spec:
        theirs = other.name if other is not None else f"{type(out).__module__}.{type(out).__qualname__}"
        raise TypeError(f"{func}: x is a {spec.name} array but out is a {theirs} array; pass out from the same library")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"{func}: out has shape {tuple(out.shape)}, expected {tuple(x.shape)} (the shape of x)")
    if out.dtype != result:
        raise TypeError(f"{func}: out has dtype {dtype_name(out.dtype)}, expected {dtype_name(result)} (the result's dtype)")
    if getattr(out, "device", None) != getattr(x, "device", None):
        raise ValueError(f"{func}: out is on device {out.device}, expected {x.device} (the device of x)")
    if not getattr(getattr(out, "flags", None), "writeable", True):
        raise ValueError(f"{func}: out is read-only")
    return _call_general(func, plan, x, where, None, out)


def _call_general(func: str, plan: tuple, x: Array, where: Any, keepdims: bool | None, out: Array | None = None) -> Array:
    spec, impl, axes, compute, result, _ = plan
    xp = spec.namespace(x)
    if where is not None:
        where = _where_like(func, spec, xp, x, where)
    if x.dtype != result:  # dtype= casts first: float32 data asked as float16 is rounded to it
        x = xp.astype(x, result)
    if x.dtype != compute:  # float16 and bfloat16 are then computed in float32
        x = xp.astype(x, compute)
    try:
        if out is not None and compute == result:
            return impl(x, axes, where, out=out)
        y = impl(x, axes, where) if keepdims is None else impl(x, axes, where, keepdims)
    except Exception as err:
        _blame(err, spec, func)
        raise
    y = y if compute == result else xp.astype(y, result)
    if out is None:
        return y
    out[...] = y  # float16 and bfloat16 results, computed in float32
    return out


def _from_python(func: str, obj: Any) -> np.ndarray:
    try:
        return np.asarray(obj)
    except (ValueError, TypeError) as err:
        raise TypeError(f"{func}: x could not be read as an array ({err})") from None


def _where_like(func: str, spec: Any, xp: Any, x: Array, where: Any) -> Array:
    """``where`` as an array of ``x``'s library; a mask of another library is an error."""
    if type(where) in _PYTHON_INPUTS:
        if xp is np:
            where = np.asarray(where)
        else:
            where = xp.asarray(where, device=getattr(x, "device", None))
    else:
        other = backend_for_type(type(where), where)
        same = other is spec and (spec.array_types or spec.namespace(where) is xp)
        if not same:
            theirs = other.name if other is not None else f"{type(where).__module__}.{type(where).__qualname__}"
            raise TypeError(
                f"{func}: x is a {spec.name} array but where is a {theirs} array; "
                "pass x and where from the same library"
            )
    check_where(func, xp, where, tuple(x.shape))
    return where
