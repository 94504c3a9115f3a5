"""The meaning of every function: one implementation written only against the Python array API standard.

Every backend either uses these functions or must agree with them (the conformance suite checks
it). They take arguments already checked by :mod:`softmax_multi._args`: ``x`` real floating,
``axes`` a sorted tuple of non-negative ints, ``where`` None or a boolean array that broadcasts
to ``x``; ``xp``, the namespace of ``x``, may be given to skip looking it up. They branch in
Python on shapes and dtypes only, never on values, so they trace under ``jax.jit``, ``jax.vmap``,
``jax.grad`` and ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace

__all__ = ["log_softmax", "logsumexp", "softmax"]

Array = Any


def softmax(x: Array, axes: tuple[int, ...], where: Array | None = None, *, xp: Any = None) -> Array:
    """``exp(x - m) / sum(exp(x - m))`` over ``axes``; 0 where ``where`` is False.

    Examples
    --------
    >>> import numpy as np
    >>> softmax(np.asarray([5.0, 7.0, 10.0]), (0,)).round(4)
    array([0.0064, 0.0471, 0.9465])
    """
    xp = xp or array_namespace(x)
    if _reduces_nothing(x, axes):
        return xp.zeros_like(x)
    z = _shifted(xp, x, axes, where)
    e = xp.exp(z)
    y = e / _sum(xp, e, axes)
    # A fully masked slice divides 0 by 0 above; masked entries are 0 whatever they computed.
    return y if where is None else xp.where(where, y, _const(xp, x, 0.0))


def log_softmax(x: Array, axes: tuple[int, ...], where: Array | None = None, *, xp: Any = None) -> Array:
    """``x - m - log(sum(exp(x - m)))`` over ``axes``; -inf where ``where`` is False.

    Examples
    --------
    >>> import numpy as np
    >>> log_softmax(np.asarray([0.0, 0.0]), (0,)).round(4)
    array([-0.6931, -0.6931])
    """
    xp = xp or array_namespace(x)
    if _reduces_nothing(x, axes):
        return xp.zeros_like(x)
    z = _shifted(xp, x, axes, where)
    y = z - xp.log(_sum(xp, xp.exp(z), axes))
    return y if where is None else xp.where(where, y, _const(xp, x, -math.inf))


def logsumexp(
    x: Array, axes: tuple[int, ...], where: Array | None = None, keepdims: bool = False, *, xp: Any = None
) -> Array:
    """``m + log(sum(exp(x - m)))`` over ``axes``; -inf for an empty or fully masked slice.

    A slice whose maximum is +inf gives +inf, and one holding NaN gives NaN.

    Examples
    --------
    >>> import numpy as np
    >>> float(logsumexp(np.asarray([0.0, 0.0]), (0,)).round(4))
    0.6931
    """
    xp = xp or array_namespace(x)
    if _reduces_nothing(x, axes):
        shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
        r = xp.full(shape, -math.inf, dtype=x.dtype, device=_device(x))
    else:
        if where is not None:
            x = xp.where(where, x, _const(xp, x, -math.inf))
        m = _max(xp, x, axes)
        finite = xp.isfinite(m)
        zero, one = _const(xp, x, 0.0), _const(xp, x, 1.0)
        m0 = xp.where(finite, m, zero)
        # Where m is not finite the answer is m itself (-inf, +inf or NaN); the sum there is
        # replaced by 1 so that no inf or NaN enters the gradient of the finite branch.
        s = xp.where(finite, _sum(xp, xp.exp(x - m0), axes), one)
        r = xp.where(finite, m0 + xp.log(s), m)
    return r if keepdims or not axes else xp.squeeze(r, axis=axes)


def _shifted(xp: Any, x: Array, axes: tuple[int, ...], where: Array | None) -> Array:
    """``x - max(x)`` over the unmasked entries; masked entries become -inf."""
    if where is not None:
        x = xp.where(where, x, _const(xp, x, -math.inf))
    m = _max(xp, x, axes)
    # An all -inf (or fully masked) slice would compute -inf - (-inf) = NaN in the subtraction;
    # shifting it by 0 instead leaves exp(-inf) = 0 and the division 0/0 decides.
    m = xp.where(m == -math.inf, _const(xp, x, 0.0), m)
    return x - m


def _max(xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
    return xp.max(x, axis=axes, keepdims=True) if axes else x


def _sum(xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
    return xp.sum(x, axis=axes, keepdims=True) if axes else x


def _const(xp: Any, x: Array, value: float) -> Array:
    return xp.asarray(value, dtype=x.dtype, device=_device(x))


def _device(x: Array) -> Any:
    """The standard ``x.device``; None for arrays without one (JAX tracers: the trace decides)."""
    return getattr(x, "device", None)


def _reduces_nothing(x: Array, axes: tuple[int, ...]) -> bool:
    """True when the slices are empty: some reduced axis has length 0 (known from the shape)."""
    return any(x.shape[a] == 0 for a in axes)
