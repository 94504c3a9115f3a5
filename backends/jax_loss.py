"""The losses on JAX arrays, compiled, with derivatives that keep only what they need.

``cross_entropy`` carries its own JVP (``jax.custom_jvp``), linear in the tangents, whose
reverse mode keeps ``d loss / d logits`` (softmax minus the weighted, smoothed target) and none
of the forward's temporaries; ``jax.grad``, ``jax.jacfwd``, ``jit`` and ``vmap`` all apply.

``linear_cross_entropy`` is a ``jax.custom_vjp`` over a ``lax.scan`` of row blocks, each holding
one tile of logits: with ``"sum"``/``"mean"`` the forward forms ``dh``, ``dW`` and ``db`` as it
goes (the backward only scales them), with ``"none"`` it keeps each row's statistics and the
backward recomputes the tiles. A custom VJP has no forward-mode derivative: ``jax.jacfwd`` and
``jax.jvp`` do not apply to it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from softmax_multi import linear, loss


def _xp() -> Any:
    import jax.numpy as jnp

    from softmax_multi.backends.jax_backend import _PairwiseNumpy

    return _PairwiseNumpy(jnp)


@functools.cache
def _cross_entropy() -> Any:
    import jax
    import jax.numpy as jnp

    xp = _xp()

    @functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5, 6))
    def per_example(z: Any, target: Any, where: Any, class_weight: Any, axis: int, eps: float, ignore_index: Any) -> Any:
        parts = loss.terms(xp, z, target, axis, where, class_weight, eps, ignore_index)
        return parts.loss, parts.weight

    @per_example.defjvp
    def _(axis: int, eps: float, ignore_index: Any, primals: Any, tangents: Any) -> Any:
        z, target, where, class_weight = primals
        t_z, t_target, _, t_weight = tangents
        parts = loss.terms(xp, z, target, axis, where, class_weight, eps, ignore_index, gradients=True)
        d_loss = jnp.sum(parts.grad * t_z, axis=axis, keepdims=True)
        d_share = jnp.zeros_like(parts.weight)
        shape = tuple(z.shape[axis] if i == axis else 1 for i in range(z.ndim))
        if jnp.issubdtype(target.dtype, jnp.floating):
            w = 1.0 if class_weight is None else jnp.reshape(class_weight, shape)
            d_loss = d_loss + jnp.sum((1 - eps) * w * parts.per_class * t_target, axis=axis, keepdims=True)
        if class_weight is not None:
            t_w = jnp.reshape(t_weight, shape)
            d_loss = d_loss + jnp.sum(parts.smoothed * parts.per_class * t_w, axis=axis, keepdims=True)
            if not jnp.issubdtype(target.dtype, jnp.floating):
                tg = loss.read_target(xp, jnp.expand_dims(target, axis), z.shape[axis], ignore_index)
                onehot = jnp.logical_and(loss._onehot(xp, tg.safe, axis, z.shape[axis]), tg.used)
                d_share = jnp.sum(jnp.where(onehot, t_w, 0.0), axis=axis, keepdims=True)
        return (parts.loss, parts.weight), (d_loss, d_share)

    def run(z: Any, target: Any, axis: int, where: Any, class_weight: Any, eps: float, ignore_index: Any, reduction: str) -> Any:
        per, share = per_example(z, target, where, class_weight, axis, eps, ignore_index)
        return loss.reduce_losses(xp, per, share, axis, reduction)

    return jax.jit(run, static_argnums=(2, 5, 6, 7))


def cross_entropy(z: Any, target: Any, axis: int, where: Any, class_weight: Any, eps: float, ignore_index: Any, reduction: str) -> Any:
    return _cross_entropy()(z, target, axis, where, class_weight, eps, ignore_index, reduction)


class _Static:
    """What a linear loss's program depends on besides its arrays (hashable: a jit static)."""

    def __init__(self, n_classes: int, rows: int, cols: int, eps: float, ignore_index: Any, reduction: str, compute: Any):
        self.key = (n_classes, rows, cols, eps, ignore_index, reduction, np.dtype(compute).name)
        self.n_classes, self.rows, self.cols, self.eps = n_classes, rows, cols, eps
        self.ignore_index, self.reduction, self.compute = ignore_index, reduction, compute

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and other.key == self.key


def _block(s: _Static, cl: Any, weight: Any, hb: Any, yb: Any, grads: bool, scale: Any = None, kept: Any = None) -> Any:
    """One row block: its losses and shares, its statistics, and with ``grads`` its
    contributions (dh_b, dW, db) — from the block's own tile, or recomputed from ``kept``."""
    import jax.numpy as jnp

    xp = _xp()
    tg = loss.read_target(xp, yb, s.n_classes, s.ignore_index)
    if kept is None:
        st, z = linear.block_stats(xp, hb, tg, weight, cl, s.eps, s.cols, s.compute)
    else:
        st, z = kept, None
    losses, share = linear.block_loss(xp, st, tg, cl, s.eps)
    if not grads:
        return losses, share, st, None
    scale = jnp.ones_like(st.m) if scale is None else scale
    dh = jnp.zeros(hb.shape, dtype=s.compute)
    parts_w, parts_b = [], []
    for c0, c1, g in linear.block_grads(xp, hb, tg, weight, cl, s.eps, s.cols, s.compute, st, scale, z):
        dh = dh + g @ weight[c0:c1].astype(s.compute)
        parts_w.append(g.T @ hb)
        parts_b.append(jnp.sum(g, axis=0))
    return losses, share, st, (dh, jnp.concatenate(parts_w), jnp.concatenate(parts_b))


def _scan_blocks(s: _Static, cl: Any, weight: Any, h2: Any, y: Any, grads: bool, g: Any = None, kept: Any = None) -> Any:
    """Every row block through :func:`_block`: whole blocks in a ``lax.scan`` (dW and db summed
    in its carry), the rest as one more block."""
    import jax
    import jax.numpy as jnp

    n_rows, n_features = h2.shape
    whole = n_rows // s.rows * s.rows

    def pieces(a: Any, stop: int) -> Any:
        return None if a is None else jax.tree_util.tree_map(lambda b: b[:stop].reshape(stop // s.rows, s.rows, *b.shape[1:]), a)

    def rest(a: Any) -> Any:
        return None if a is None else jax.tree_util.tree_map(lambda b: b[whole:], a)

    zeros_w = jnp.zeros((s.n_classes, n_features), dtype=s.compute)
    zeros_b = jnp.zeros((s.n_classes,), dtype=s.compute)

    def step(carry: Any, xs: Any) -> Any:
        hb, yb, gb, kb = xs
        losses, share, st, d = _block(s, cl, weight, hb.astype(s.compute), yb, grads, gb, kb)
        if d is None:
            return carry, (losses, share, st, None)
        return (carry[0] + d[1], carry[1] + d[2]), (losses, share, None if kept is not None else st, d[0])

    outputs = []
    carry = (zeros_w, zeros_b)
    if whole:
        carry, out = jax.lax.scan(step, carry, (pieces(h2, whole), pieces(y, whole), pieces(g, whole), pieces(kept, whole)))
        outputs.append(jax.tree_util.tree_map(lambda b: b.reshape(whole, *b.shape[2:]), out))
    if whole < n_rows:
        carry, out = step(carry, (h2[whole:], y[whole:], rest(g), rest(kept)))
        outputs.append(out)
    joined = jax.tree_util.tree_map(lambda *parts: jnp.concatenate(parts), *outputs) if len(outputs) > 1 else outputs[0]
    return joined, carry


@functools.cache
def _linear() -> Any:
    import jax
    import jax.numpy as jnp

    xp = _xp()

    def classes(s: _Static, where: Any, class_weight: Any, bias: Any) -> Any:
        return linear.classes(xp, s.n_classes, where, class_weight, bias, s.compute)

    def total(s: _Static, losses: Any, share: Any) -> Any:
        return loss.reduce_losses(xp, losses, share, 1, s.reduction)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def run(s: _Static, h2: Any, weight: Any, bias: Any, y: Any, where: Any, class_weight: Any) -> Any:
        (losses, share, _, _), _ = _scan_blocks(s, classes(s, where, class_weight, bias), weight, h2, y, False)
        return total(s, losses, share)

    def forward(s: _Static, h2: Any, weight: Any, bias: Any, y: Any, where: Any, class_weight: Any) -> Any:
        cl = classes(s, where, class_weight, bias)
        if s.reduction == "none":
            (losses, share, st, _), _ = _scan_blocks(s, cl, weight, h2, y, False)
            return total(s, losses, share), (h2, weight, bias, y, where, class_weight, st)
        (losses, share, _, dh), (d_weight, d_bias) = _scan_blocks(s, cl, weight, h2, y, True)
        denominator = jnp.sum(share) if s.reduction == "mean" else jnp.ones((), dtype=s.compute)
        return total(s, losses, share), (dh, d_weight, d_bias, denominator, h2, weight, bias, y, where, class_weight)

    def backward(s: _Static, res: Any, g: Any) -> Any:
        if s.reduction == "none":
            h2, weight, bias, y, where, class_weight, st = res
            cl = classes(s, where, class_weight, bias)
            (_, _, _, dh), (d_weight, d_bias) = _scan_blocks(s, cl, weight, h2, y, True, g[:, None].astype(s.compute), st)
        else:
            dh, d_weight, d_bias, denominator, h2, weight, bias, y, where, class_weight = res
            scale = g / denominator
            dh, d_weight, d_bias = dh * scale, d_weight * scale, d_bias * scale
        return (
            dh.astype(h2.dtype),
            d_weight.astype(weight.dtype),
            None if bias is None else d_bias.astype(bias.dtype),
            _no_cotangent(y),
            None if where is None else _no_cotangent(where),
            None if class_weight is None else jnp.zeros_like(class_weight),
        )

    run.defvjp(forward, backward)
    return jax.jit(run, static_argnums=(0,))


def _no_cotangent(a: Any) -> Any:
    import jax

    return np.zeros(a.shape, dtype=jax.dtypes.float0)


def linear_cross_entropy(
    h: Any, weight: Any, target: Any, bias: Any, where: Any, class_weight: Any, eps: float, ignore_index: Any,
    reduction: str, chunk_size: Any, compute: Any,
) -> Any:
    lead = tuple(h.shape[:-1])
    n_rows, n_classes = math.prod(lead), weight.shape[0]
    rows, cols = linear.plan(n_rows, n_classes, chunk_size)
    s = _Static(n_classes, rows, cols, eps, ignore_index, reduction, compute)
    y = target.reshape(n_rows, 1)
    result = _linear()(s, h.reshape(n_rows, h.shape[-1]), weight, bias, y, where, class_weight)
    return result.reshape(lead) if reduction == "none" else result
