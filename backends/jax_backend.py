"""JAX backend: jax.Array and tracers, eagerly and under jit, vmap, grad and sharding.

The reference implementation is the native code here: it traces, so it runs compiled by
``jax.jit`` (which makes eager calls as cheap as ``jax.nn.softmax``'s) and inlines into any
outer ``jit``, ``vmap`` or ``grad``; XLA adds the collectives when the reduced axis is sharded.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from softmax_multi import reference
from softmax_multi.registry import BackendSpec

# XLA on CPU sums short float32 slices nearly in order, which costs up to ~20 eps when one entry
# dominates many small ones (found by fuzzing); slices up to this length are summed in pairs.
PAIRWISE_LIMIT = 2048


class _PairwiseNumpy:
    """jax.numpy, but ``sum`` adds short float32 slices as a balanced tree of pairs."""

    def __init__(self, jnp: Any):
        self._jnp = jnp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jnp, name)

    def sum(self, x: Any, axis: tuple[int, ...], keepdims: bool = True) -> Any:
        jnp = self._jnp
        n = math.prod(x.shape[a] for a in axis)
        if x.dtype != jnp.float32 or not keepdims or n <= 2 or n > PAIRWISE_LIMIT:
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
def _compiled() -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    xp = _PairwiseNumpy(jnp)
    return {
        "softmax": jax.jit(functools.partial(reference.softmax, xp=xp), static_argnums=1),
        "log_softmax": jax.jit(functools.partial(reference.log_softmax, xp=xp), static_argnums=1),
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
)
