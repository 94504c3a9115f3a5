"""The public functions: check the arguments once per kind of call, then run the backend's native
code or the reference implementation.

A call is checked once per (array class, function, dtype, ndim, axis, dtype=) and the outcome
kept as a :class:`Plan`; the plans are dropped whenever the registry's backends change.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from . import reference, registry
from ._args import check_broadcast, check_where, dtype_name, normalize_axes, promote_weights, resolve_dtypes
from .registry import BackendSpec, backend_for_type

__all__ = ["Plan", "log_softmax", "logsumexp", "softmax"]

Array = Any
Axis = int | tuple[int, ...] | None
_PYTHON_INPUTS = (int, float, complex, bool, list, tuple)
_PLAN_LIMIT = 4096  # plans kept per array class before the dict starts afresh (odd axes, dtypes)


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What one kind of call runs, checked once."""

    spec: BackendSpec
    impl: Callable[..., Any]
    """The backend's native function, or the reference implementation bound to the backend."""
    axes: tuple[int, ...]
    compute: Any
    """The dtype the implementation runs in (float32 for float16 and bfloat16 input)."""
    result: Any
    """The dtype of the result."""
    direct: bool
    """No cast either way: ``impl(x, axes, None)`` is the answer."""


# array class -> (function, dtype, ndim, axis, dtype=) -> Plan; one dict per class, so that
# torch.compile never compares a torch dtype with NumPy's. Emptied when the backends change.
_plans: dict[type, dict[tuple, Plan]] = {}
registry.on_change(_plans.clear)


def softmax(x: Array, /, axis: Axis = -1, *, where: Array | None = None, dtype: Any = None, out: Array | None = None) -> Array:
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
    x: Array, /, axis: Axis = -1, *, where: Array | None = None, dtype: Any = None, out: Array | None = None
) -> Array:
    """Log of the softmax, computed directly: ``x - m - log(sum(exp(x - m)))``.

    Arguments as :func:`softmax`; masked entries and fully masked slices give -inf. At a slice's
    maximum the result keeps its relative precision: ``-log1p(rest)``.

    Examples
    --------
    >>> import numpy as np, softmax_multi as smx
    >>> smx.log_softmax(np.array([1.0, 1.0])).round(4)
    array([-0.6931, -0.6931])
    """
    if out is not None:
        return _call_out("log_softmax", x, axis, where, dtype, out)
    return _call("log_softmax", x, axis, where, dtype)


def logsumexp(
    x: Array,
    /,
    axis: Axis = None,
    b: Array | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
    *,
    where: Array | None = None,
    dtype: Any = None,
) -> Array | tuple[Array, Array]:
    """``log(sum(b * exp(x)))`` over ``axis`` (default: every axis), without overflow, as
    ``scipy.special.logsumexp`` and ``jax.scipy.special.logsumexp`` define it.

    Parameters
    ----------
    x
        As :func:`softmax`; complex input gives a complex result (imaginary part in (-pi, pi]).
    axis
        An int, a tuple of ints, or None for every axis (of the shape ``x`` and ``b`` broadcast to).
    b
        Weights, broadcast against ``x``: an array of ``x``'s library or a Python scalar or list.
        Entries with ``b == 0`` take no part; weights may be negative. The result's dtype is the
        promoted dtype of ``x`` and ``b``.
    keepdims
        Keep the reduced axes with length 1.
    return_sign
        Return ``(log|total|, sign)``: the sign of the total (+1, 0, -1, NaN), its phase for
        complex input. Without it, a negative total gives NaN.
    where, dtype
        As :func:`softmax`; ``where`` and ``b`` together: both apply. With complex ``x`` or ``b``,
        ``dtype`` must be complex.

    Returns
    -------
    An array (or two) of ``x``'s library. An empty, fully masked or all -inf slice gives -inf;
    +inf in a slice gives +inf; NaN gives NaN. When one entry dominates, the result keeps its
    relative precision (``logsumexp([0, -40])`` is ``4.25e-18``).

    Examples
    --------
    >>> import numpy as np, softmax_multi as smx
    >>> float(smx.logsumexp(np.array([1000.0, 1000.0])).round(4))
    1000.6931
    >>> value, sign = smx.logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    >>> float(value.round(4)), float(sign)
    (1.5413, -1.0)
    """
    _check_flag("keepdims", keepdims)
    _check_flag("return_sign", return_sign)
    if b is None and not return_sign:
        return _call("logsumexp", x, axis, where, dtype, bool(keepdims))
    return _call_weighted(x, axis, b, bool(keepdims), bool(return_sign), where, dtype)


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"logsumexp: {name} must be a bool, got {value!r}")


def _call(func: str, x: Array, axis: Any, where: Any, dtype: Any, keepdims: bool | None = None) -> Array:
    """Check the arguments (once per kind of call, then cached as a plan) and run the implementation.

    ``keepdims`` is None for softmax and log_softmax, a bool for logsumexp.
    """
    plan = _cached_plan(func, x, axis, dtype)
    if plan is None:  # a Python scalar or list
        return _call(func, _from_python(func, x), axis, where, dtype, keepdims)
    if where is None and plan.direct:
        try:
            if keepdims is None:
                return plan.impl(x, plan.axes, None)
            return plan.impl(x, plan.axes, None, keepdims)
        except Exception as err:
            _blame(err, plan.spec, func)
            raise
    return _call_general(func, plan, x, where, keepdims)


def _cached_plan(func: str, x: Array, axis: Any, dtype: Any) -> Plan | None:
    """The plan of this kind of call, from the cache or made (and cached); None for Python input."""
    plan = key = None
    plans = _plans.get(type(x))
    # Only exact ints and None are cached: True == 1 and (True,) == (1,) as keys, yet are refused.
    if type(axis) is int or axis is None:
        try:
            key = (func, x.dtype, x.ndim, axis, dtype)
            plan = None if plans is None else plans.get(key)
        except (AttributeError, TypeError):  # no dtype (a Python scalar or list), or an unhashable dtype=
            key = None
    if plan is None:
        if type(x) in _PYTHON_INPUTS:
            return None
        plan = _plan(func, x, axis, dtype)
        if key is not None:
            if plans is None or len(plans) >= _PLAN_LIMIT:
                plans = _plans[type(x)] = {}
            plans[key] = plan
    return plan


def _blame(err: Exception, spec: BackendSpec, func: str) -> None:
    """Name the backend in an error raised inside it, so a faulty plugin is easy to find."""
    note = f"raised in {func} of the softmax-multi backend {spec.name!r}"
    if hasattr(err, "add_note") and note not in getattr(err, "__notes__", []):  # Python >= 3.11
        err.add_note(note)


def _backend(func: str, x: Array) -> tuple[BackendSpec, Any]:
    """The backend serving ``x`` and ``x``'s namespace; a clear TypeError when there is none."""
    cls = type(x)
    spec = backend_for_type(cls, x)
    if spec is None:
        hint = ""
        if hasattr(x, "to_numpy"):  # pandas and xarray objects hold arrays without being one
            hint = "; pass x.to_numpy() (or the library's array inside it)"
        raise TypeError(
            f"{func}: x of type {cls.__module__}.{cls.__qualname__} is not an array of any "
            f"registered backend and has no __array_namespace__{hint}"
        )
    try:
        return spec, spec.namespace(x)
    except TypeError as err:  # a namespace that refuses this kind of array says why
        raise TypeError(f"{func}: {err}") from None


def _plan(func: str, x: Array, axis: Any, dtype: Any) -> Plan:
    """What a call with this array class, dtype, ndim, axis and dtype= runs; checked once, then cached."""
    spec, xp = _backend(func, x)
    axes = normalize_axes(func, axis, x.ndim)
    compute, result = resolve_dtypes(func, xp, x.dtype, dtype, complex_ok=func == "logsumexp")
    if func == "logsumexp" and xp.isdtype(compute, "complex floating"):
        weighted = _weighted_implementation(spec)
        impl: Callable[..., Any] = lambda x, axes, where, keepdims: weighted(x, axes, where, keepdims, None, False)
    else:
        impl = getattr(spec, func) or _reference(func, spec.accurate_sums)
    direct = x.dtype == compute and compute == result  # no cast either way
    return Plan(spec, impl, axes, compute, result, direct)


@functools.cache
def _reference(func: str, accurate_sums: bool) -> Callable[..., Any]:
    """The reference implementation of ``func`` for a backend whose sums are, or are not, accurate."""
    f = getattr(reference, func)
    return f if accurate_sums else functools.partial(f, accurate_sums=False)


def _weighted_implementation(spec: BackendSpec) -> Callable[..., Any]:
    return spec.weighted_logsumexp or _reference("logsumexp", spec.accurate_sums)


def _call_out(func: str, x: Array, axis: Any, where: Any, dtype: Any, out: Array) -> Array:
    """softmax or log_softmax written into ``out``, once ``out`` is checked against ``x``."""
    plan = _cached_plan(func, x, axis, dtype)
    if plan is None:
        x = _from_python(func, x)
        plan = _plan(func, x, axis, dtype)
    spec, result = plan.spec, plan.result
    if spec.out is not True:
        raise TypeError(f"{func}: out= is not supported for {spec.name} arrays: {spec.out}; use the returned array")
    if type(out) is not type(x) or not spec.array_types:  # the same class is the same library, but for array-API ones
        _same_library(func, spec, spec.namespace(x), "out", out)
    if out.shape != x.shape and tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"{func}: out has shape {tuple(out.shape)}, expected {tuple(x.shape)} (the shape of x)")
    if out.dtype != result:
        raise TypeError(f"{func}: out has dtype {dtype_name(out.dtype)}, expected {dtype_name(result)} (the result's dtype)")
    if getattr(out, "device", None) != getattr(x, "device", None):
        raise ValueError(f"{func}: out is on device {out.device}, expected {x.device} (the device of x)")
    if not getattr(getattr(out, "flags", None), "writeable", True):
        raise ValueError(f"{func}: out is read-only")
    if where is None and plan.direct:
        try:
            return plan.impl(x, plan.axes, None, out=out)
        except Exception as err:
            _blame(err, spec, func)
            raise
    return _call_general(func, plan, x, where, None, out)


def _call_general(func: str, plan: Plan, x: Array, where: Any, keepdims: bool | None, out: Array | None = None) -> Array:
    spec, impl, axes, compute, result = plan.spec, plan.impl, plan.axes, plan.compute, plan.result
    xp = spec.namespace(x)
    if where is not None:
        where = _where_like(func, spec, xp, x, where, tuple(x.shape))
    x = _cast(xp, x, compute, result)
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


def _cast(xp: Any, a: Array, compute: Any, result: Any) -> Array:
    """``dtype=`` casts first (float32 data asked as float16 is rounded to it), then float16 and
    bfloat16 are computed in float32."""
    if a.dtype != result:
        a = xp.astype(a, result)
    if a.dtype != compute:
        a = xp.astype(a, compute)
    return a


def _call_weighted(x: Array, axis: Any, b: Any, keepdims: bool, return_sign: bool, where: Any, dtype: Any) -> Any:
    """logsumexp with weights ``b`` or ``return_sign``: x and b broadcast together, as in SciPy."""
    func = "logsumexp"
    if type(x) in _PYTHON_INPUTS:
        x = _from_python(func, x)
    spec, xp = _backend(func, x)
    if b is None:
        shape = tuple(x.shape)
        compute, result = resolve_dtypes(func, xp, x.dtype, dtype, complex_ok=True)
    else:
        b = _like_x(func, spec, xp, x, "b", b)
        shape = check_broadcast(func, tuple(x.shape), tuple(b.shape))
        compute, result = promote_weights(func, xp, x.dtype, b.dtype, dtype)
        if tuple(b.shape) != shape:
            b = xp.broadcast_to(b, shape)
        b = _cast(xp, b, compute, result)
    if tuple(x.shape) != shape:
        x = xp.broadcast_to(x, shape)
    axes = normalize_axes(func, axis, len(shape))
    if where is not None:
        where = _where_like(func, spec, xp, x, where, shape)
    x = _cast(xp, x, compute, result)
    impl = _weighted_implementation(spec)
    try:
        r = impl(x, axes, where, keepdims, b, return_sign)
    except Exception as err:
        _blame(err, spec, func)
        raise
    if compute == result:
        return r
    if return_sign:
        return xp.astype(r[0], result), xp.astype(r[1], result)
    return xp.astype(r, result)


def _from_python(func: str, obj: Any) -> np.ndarray:
    try:
        return np.asarray(obj)
    except (ValueError, TypeError) as err:
        raise TypeError(f"{func}: x could not be read as an array ({err})") from None


def _like_x(func: str, spec: BackendSpec, xp: Any, x: Array, name: str, value: Any) -> Array:
    """``value`` as an array of ``x``'s library; an array of another library is an error.

    A Python list is read as NumPy reads it (floats as float64); a Python number is "weak", as
    NumPy's scalars are (NEP 50): it takes ``x``'s floating dtype (its complex counterpart for a
    complex number), so that ``b=1.2`` does not round a float64 computation to float32.
    """
    if type(value) not in _PYTHON_INPUTS:
        _same_library(func, spec, xp, name, value)
        return value
    device = getattr(x, "device", None)
    try:
        if isinstance(value, (list, tuple)):
            return xp.asarray(np.asarray(value), device=device)
        if isinstance(value, bool):
            return xp.asarray(value, device=device)
        dtype = x.dtype if xp.isdtype(x.dtype, ("real floating", "complex floating")) else None
        if isinstance(value, complex) and dtype is not None and not xp.isdtype(dtype, "complex floating"):
            dtype = xp.complex64 if dtype == xp.float32 else xp.complex128
        return xp.asarray(value, dtype=dtype, device=device)
    except (ValueError, TypeError) as err:
        raise TypeError(f"{func}: {name} could not be read as an array ({err})") from None


_FIRST_ARGUMENT = {"cross_entropy": "logits", "linear_cross_entropy": "h"}


def _same_library(func: str, spec: BackendSpec, xp: Any, name: str, value: Any) -> None:
    other = backend_for_type(type(value), value)
    # The generic array-API backend serves many libraries: theirs must be x's namespace too.
    same = other is spec and (bool(spec.array_types) or spec.namespace(value) is xp)
    if not same:
        theirs = other.name if other is not None else f"{type(value).__module__}.{type(value).__qualname__}"
        first = _FIRST_ARGUMENT.get(func, "x")
        raise TypeError(
            f"{func}: {first} is a {spec.name} array but {name} is a {theirs} array; pass {name} from the same library as {first}"
        )


def _where_like(func: str, spec: BackendSpec, xp: Any, x: Array, where: Any, shape: tuple) -> Array:
    """``where`` as an array of ``x``'s library, checked against the shape it must broadcast to."""
    where = _like_x(func, spec, xp, x, "where", where)
    check_where(func, xp, where, shape)
    return where
