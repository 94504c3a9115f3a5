"""JAX backend: jax.Array and tracers, eagerly and under jit, vmap, grad and sharding.

The reference implementation is the native code here: it traces, so it runs compiled by
``jax.jit`` (which makes eager calls as cheap as ``jax.nn.softmax``'s) and inlines into any
outer ``jit``, ``vmap`` or ``grad``; XLA adds the collectives when the reduced axis is sharded.
softmax and log_softmax carry their own derivative (``jax.custom_jvp``), so that reverse mode
keeps one array of the output's size for the backward pass (softmax: the exps it divides, and one
number per slice; log_softmax: its output), as ``jax.nn.softmax`` does, instead of the forward's
temporaries.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from softmax_multi import reference
from softmax_multi.backends import jax_loss
from softmax_multi.registry import BackendSpec

# XLA on CPU sums short float32 slices over several axes nearly in order, which costs up to ~20 eps
# when one entry dominates many small ones (found by fuzzing; 9.3 eps measured on (30, 30, 30)
# over every axis); slices up to this length are summed in pairs. Sums over the last axis alone
# are accurate as they are (XLA's vectorised reductions: at most 3.5 eps on rows of 64 to 4 096
# with one dominant entry, as the pairs), and the pairs' slices would keep XLA from fusing them.
PAIRWISE_LIMIT = 2048


class _PairwiseNumpy:
    """jax.numpy, but ``sum`` adds short float32 slices over other axes than the last alone as a
    balanced tree of pairs."""

    def __init__(self, jnp: Any):
        self._jnp = jnp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jnp, name)

    def sum(self, x: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False, **kwargs: Any) -> Any:
        jnp = self._jnp
        if not isinstance(axis, tuple) or not keepdims or kwargs or x.dtype != jnp.float32 or axis == (x.ndim - 1,):
            return jnp.sum(x, axis=axis, keepdims=keepdims, **kwargs)
        n = math.prod(x.shape[a] for a in axis)
        if n <= 2 or n > PAIRWISE_LIMIT:
            return jnp.sum(x, axis=axis, keepdims=keepdims)
        kept = [i for i in range(x.ndim) if i not in axis]
        y = jnp.transpose(x, kept + list(axis)).reshape(tuple(x.shape[i] for i in kept) + (n,))
        while n > 1:
            half = (n + 1) // 2
            low, high = y[..., :half], y[..., half:]
            if high.shape[-1] < half:
                high = jnp.pad(high, [(0, 0)] * (y.ndim - 1) + [(0, 1)])
            y, n = low + high, half
        return y.reshape(tuple(1 if i in axis else s for i, s in enumerate(x.shape)))


@functools.cache
def _differentiated() -> dict[str, Any]:
    """softmax and log_softmax with their own JVP, so that reverse mode keeps one array of the
    output's size and not the forward's temporaries.

    softmax, with the exps ``e = exp(x - max)`` and ``r = 1 / sum(e)`` per slice (y = e r):
    dy = r (e t) - e r^2 sum(e t). Written with ``e`` rather than the output ``y``, XLA makes one
    full-size array of the forward's (the exps, which the sum reads anyway) instead of two:
    measured under ``jit(grad)``, (256, 32000) float32 9.9 ms against 22.5 ms written with ``y``
    (jax.nn: 9.9 ms). A slice with nothing to sum (fully masked) has e = 0 and r = 1.
    log_softmax: without ``where``, dy = t - r sum(e t), with e from the unguarded shift, which XLA
    fuses with the max (the forward's split sums are then left out of ``jit(grad)``, which never
    uses the output's value: (1024, 4096) float32 2.8 ms against 5.1 ms from the output, jax.nn
    2.7 ms); a slice whose max is -inf is NaN either way. With ``where``, from its output: dy = t -
    sum(exp(y) t), exp(y) 0 at masked entries (the guard a fully masked slice needs blocks the
    fusion anyway). Masked entries get a zero tangent (softmax's e is 0 there; log_softmax's is
    set), so a masked or fully masked slice stays NaN-free.
    """
    import jax
    import jax.numpy as jnp

    xp = _PairwiseNumpy(jnp)
    # The values alone: the shift by the max unguarded (reference.shifted), which XLA fuses with
    # the max and the exp; the values are the same.
    forward = {name: functools.partial(getattr(reference, name), xp=xp, guarded=False) for name in ("softmax", "log_softmax")}

    def jvp(name: str, x: Any, t: Any, axes: tuple[int, ...], where: Any) -> tuple[Any, Any]:
        if name == "log_softmax" and where is not None:  # dy = t - sum(p t), p = exp(y): exps made again in the backward's pass
            y = forward[name](x, axes, where)
            d = t - xp.sum(jnp.exp(y) * t, axes, keepdims=True)
            return y, jnp.where(where, d, 0.0)
        # The exps e = exp(x - max) and r = 1 / sum(e) per slice, which XLA computes once for the
        # value and the tangent. Guarded with where= (0 on a fully masked slice, whose tangent is
        # then 0); unguarded without, where a slice whose max is -inf is NaN either way.
        guarded = where is not None
        e = jnp.exp(reference.shifted(xp, x, axes, where, guarded=guarded))
        r = 1 / jnp.maximum(xp.sum(e, axes, keepdims=True), 1.0)  # >= 1 where the slice has a max (its exp is 1)
        p_t = xp.sum(e * t, axes, keepdims=True) * r  # sum(p t), p = e r
        if name == "log_softmax":  # dy = t - sum(p t)
            return forward[name](x, axes), t - p_t
        y = reference.softmax(x, axes, where, xp=xp, guarded=guarded)
        return y, (e * t) * r - e * (p_t * r)  # dy = p t - p sum(p t); r kept, not r * r too

    def make(name: str) -> tuple[Any, Any]:
        f = forward[name]

        @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
        def plain(x: Any, axes: tuple[int, ...]) -> Any:
            return f(x, axes)

        @plain.defjvp
        def _(axes, primals, tangents):
            return jvp(name, primals[0], tangents[0], axes, None)

        @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
        def masked(x: Any, axes: tuple[int, ...], where: Any) -> Any:
            return f(x, axes, where)

        @masked.defjvp
        def _(axes, primals, tangents):
            x, where = primals
            return jvp(name, x, tangents[0], axes, where)

        return plain, masked

    return {name: make(name) for name in forward}


def _with_derivative(name: str, x: Any, axes: tuple[int, ...], where: Any) -> Any:
    plain, masked = _differentiated()[name]
    return plain(x, axes) if where is None else masked(x, axes, where)


@functools.cache
def _compiled() -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    xp = _PairwiseNumpy(jnp)
    return {
        "softmax": jax.jit(functools.partial(_with_derivative, "softmax"), static_argnums=1),
        "log_softmax": jax.jit(functools.partial(_with_derivative, "log_softmax"), static_argnums=1),
        "logsumexp": jax.jit(functools.partial(reference.logsumexp, xp=xp), static_argnums=(1, 3)),
        "weighted_logsumexp": jax.jit(functools.partial(reference.logsumexp, xp=xp), static_argnums=(1, 3, 5)),
    }


def softmax(x: Any, axes: tuple[int, ...], where: Any = None) -> Any:
    return _compiled()["softmax"](x, axes, where)


def log_softmax(x: Any, axes: tuple[int, ...], where: Any = None) -> Any:
    return _compiled()["log_softmax"](x, axes, where)


def logsumexp(x: Any, axes: tuple[int, ...], where: Any = None, keepdims: bool = False) -> Any:
    return _compiled()["logsumexp"](x, axes, where, keepdims)


def weighted_logsumexp(x: Any, axes: tuple[int, ...], where: Any, keepdims: bool, b: Any, return_sign: bool) -> Any:
    return _compiled()["weighted_logsumexp"](x, axes, where, keepdims, b, return_sign)


def _namespace(x: Any) -> Any:
    import jax.numpy

    return jax.numpy


def _from_numpy(a: np.ndarray, device: Any = None) -> Any:
    import jax

    if isinstance(device, str):
        device = next(d for d in jax.devices() if str(d) == device or d.platform == device)
    return jax.device_put(np.array(a, copy=True), device)


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


def _devices() -> list[str]:
    import jax

    return [str(d) for d in jax.devices()]


def _jit(f: Any) -> Any:
    import jax

    return jax.jit(f)


def _vmap(f: Any) -> Any:
    import jax

    return jax.vmap(f)  # over the leading axis: equals f where f reduces the last axis only


def _grad(f: Any) -> Any:
    import jax
    import jax.numpy as jnp

    return lambda x, w: jax.grad(lambda x: jnp.sum(f(x) * w))(x)


def _dtypes() -> tuple[str, ...]:
    import jax

    x64 = ("float64", "complex128") if jax.config.read("jax_enable_x64") else ()
    return ("float16", "bfloat16", "float32", "complex64", *x64)


spec = BackendSpec(
    name="jax",
    array_types=(("jax", "Array"), ("jax.core", "Tracer")),
    module="jax",
    namespace=_namespace,
    softmax=softmax,
    log_softmax=log_softmax,
    logsumexp=logsumexp,
    weighted_logsumexp=weighted_logsumexp,
    from_numpy=_from_numpy,
    to_numpy=_to_numpy,
    devices=_devices,
    transforms={"jit": _jit, "vmap": _vmap, "grad": _grad},
    dtypes=_dtypes,
    out="JAX arrays are immutable",
    accurate_sums=True,  # XLA's tree reductions; short float32 slices pairwise (PAIRWISE_LIMIT)
    cross_entropy=jax_loss.cross_entropy,
    linear_cross_entropy=jax_loss.linear_cross_entropy,
)
