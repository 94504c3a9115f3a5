"""The losses on JAX arrays, compiled, with derivatives that keep only what they need.

``cross_entropy`` carries its own JVP (``jax.custom_jvp``), linear in the tangents, whose
reverse mode keeps ``d loss / d logits`` (softmax minus the weighted, smoothed target) and none
of the forward's temporaries; ``jax.grad``, ``jax.jacfwd``, ``jit`` and ``vmap`` all apply.

``linear_cross_entropy`` is a ``jax.custom_vjp``. Its forward is a ``lax.scan`` over chunks of
classes (every row at once, where that leaves ``linear.MIN_COLS`` classes per tile), each tile's
statistics merged into the rows' online statistics. With ``reduction="none"`` the backward
recomputes each tile and writes its rows of dW and db as the scan's stacked outputs — the result
itself, so that XLA keeps no temporary of dW's size: four matrix products in all. With ``"sum"``
and ``"mean"``, where a tile holds ONE_PASS_MIN_ROWS whole rows of classes, the gradients are
formed in the forward pass instead (three products): a scan over blocks of rows, dW in its carry,
updated a chunk of classes at a time (adding a row block's whole product into dW kept a product
of dW's size among the temporaries, measured), and the backward only scales them. A custom VJP
has no forward-mode derivative: ``jax.jacfwd`` and ``jax.jvp`` do not apply to it.
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
        parts: Any = loss.terms(xp, z, target, axis, where, class_weight, eps, ignore_index, gradients=True)
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


def cross_entropy(
    z: Any, target: Any, axis: int, where: Any, class_weight: Any, eps: float, ignore_index: Any, reduction: str
) -> Any:
    return _cross_entropy()(z, target, axis, where, class_weight, eps, ignore_index, reduction)


# Logits per tile of the four-product path by default. Measured (N=2048, D=512, V=32000, float32,
# jit(value_and_grad), time / the naive loss's, compiled temporaries; the naive loss: 500 MiB):
# "sum" 2**19 1.42x, 10 MiB; 2**20 1.32x, 10 MiB; 2**21 1.26x, 41 MiB; 2**22 103 MiB. "none",
# interleaved in one run: 2**20 1.29x, 2**21 1.26x.
DEFAULT_CHUNK = 2**21


def _near_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` in (at_most / 2, at_most], else ``at_most``."""
    return next((c for c in range(at_most, at_most // 2, -1) if n % c == 0), at_most)


def plan(n_rows: int, n_classes: int, chunk_size: int | None) -> tuple[int, int]:
    """:func:`softmax_multi.linear.column_plan`, with a chunk length that divides the classes where
    one is near, so that the scan's stacked dW is the result itself (a concatenation's copy, XLA
    keeps as a temporary of dW's size)."""
    rows, cols = linear.column_plan(n_rows, n_classes, chunk_size, DEFAULT_CHUNK)
    return rows, _near_divisor(n_classes, cols)


# Logits per tile of the one-pass gradients of "sum" and "mean" (whole rows of classes per tile),
# and the fewest rows per tile for that pass: below it dW, updated once per row block, is read
# and written too often, and the four products of "none" are taken instead. Measured (N=2048,
# D=512, V=32000, float32, jit(value_and_grad), "sum", time / the naive loss's, compiled
# temporaries; the naive loss: 500 MiB): 64 rows (2**21) 1.26-1.50x, 31 MiB; 128 rows (2**22)
# 0.96-1.02x, 47 MiB; the four products at 2**20: 1.32x, 10 MiB.
ONE_PASS_CHUNK = 2**22
ONE_PASS_MIN_ROWS = 128
# dW is updated a chunk of classes at a time, so that no product of dW's size is made beside it
# (adding a whole row block's product into dW kept one dW in the temporaries): this many entries
# of dW per update.
UPDATE_ENTRIES = 2**19


def one_pass_plan(n_rows: int, n_classes: int, n_features: int, chunk_size: int | None) -> tuple[int, int] | None:
    """(rows per block, classes per dW update) of the one-pass gradients, or None where a tile of
    ``chunk_size`` logits holds fewer than ONE_PASS_MIN_ROWS whole rows (and not every row)."""
    rows = (chunk_size or ONE_PASS_CHUNK) // n_classes
    if rows < min(ONE_PASS_MIN_ROWS, n_rows):
        return None
    rows = _near_divisor(n_rows, min(rows, n_rows))
    return rows, _near_divisor(n_classes, max(1, min(n_classes, UPDATE_ENTRIES // n_features)))


class _Static:
    """What a linear loss's program depends on besides its arrays (hashable: a jit static)."""

    def __init__(
        self,
        n_classes: int,
        rows: int,
        cols: int,
        eps: float,
        ignore_index: Any,
        reduction: str,
        compute: Any,
        one_pass: tuple[int, int] | None = None,
    ):
        self.key = (n_classes, rows, cols, eps, ignore_index, reduction, np.dtype(compute).name, one_pass)
        self.n_classes, self.rows, self.cols, self.eps = n_classes, rows, cols, eps
        self.ignore_index, self.reduction, self.compute, self.one_pass = ignore_index, reduction, compute, one_pass

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and other.key == self.key


def _take(a: Any, start: Any, n: int) -> Any:
    import jax

    return jax.lax.dynamic_slice_in_dim(a, start, n, axis=0)


def _block_stats(s: _Static, cl: Any, weight: Any, hb: Any, tg: Any) -> Any:
    """A row block's statistics: a ``lax.scan`` over the chunks of classes, merged as it goes."""
    import jax
    import jax.numpy as jnp

    xp = _xp()
    column = jnp.zeros((hb.shape[0], 1), dtype=s.compute)
    start = (loss.IndexStats(column - jnp.inf, column, column, column, column), jnp.zeros((1, 1), dtype=s.compute))

    def merged(carry: Any, ch: Any) -> Any:
        st, total = carry
        part, w_chunk, _ = linear.chunk_stats(xp, hb, tg, ch, s.eps, s.compute)
        return loss.merge_index_stats(xp, st, part, total, w_chunk), total + w_chunk

    full, rest = divmod(s.n_classes, s.cols)
    carry, _ = jax.lax.scan(
        lambda c, i: (merged(c, linear.chunk(xp, weight, cl, i * s.cols, s.cols, _take)), None), start, jnp.arange(full)
    )
    if rest:
        carry = merged(carry, linear.chunk(xp, weight, cl, full * s.cols, rest))
    return carry[0]


def _block_grads(s: _Static, cl: Any, weight: Any, hb: Any, tg: Any, st: Any, scale: Any) -> Any:
    """A row block's (dh, dW, db): a ``lax.scan`` over the chunks of classes, each chunk's tile
    recomputed, its dW and db rows the scan's stacked outputs."""
    import jax
    import jax.numpy as jnp

    xp = _xp()
    w_y = linear.target_weight(xp, cl, tg, st.m)

    def step(dh: Any, ch: Any) -> Any:
        g = linear.chunk_grad(xp, hb, tg, ch, cl, s.eps, s.compute, st, w_y, scale)
        return dh + g @ ch.weight.astype(s.compute), (g.T @ hb, jnp.sum(g, axis=0))

    full, rest = divmod(s.n_classes, s.cols)
    dh, (d_weight, d_bias) = jax.lax.scan(
        lambda dh, i: step(dh, linear.chunk(xp, weight, cl, i * s.cols, s.cols, _take)),
        jnp.zeros(hb.shape, dtype=s.compute),
        jnp.arange(full),
    )
    d_weight, d_bias = d_weight.reshape(full * s.cols, hb.shape[1]), d_bias.reshape(full * s.cols)
    if rest:
        dh, (w_rest, b_rest) = step(dh, linear.chunk(xp, weight, cl, full * s.cols, rest))
        d_weight, d_bias = jnp.concatenate([d_weight, w_rest]), jnp.concatenate([d_bias, b_rest])
    return dh, d_weight, d_bias


def _one_pass(s: _Static, cl: Any, weight: Any, h2: Any, y: Any) -> Any:
    """The losses' total, their shares' total and (dh, dW, db) of their sum, in three matrix
    products: a ``lax.scan`` over blocks of rows, each tile holding every class; its logits' rows
    of dh are the scan's stacked outputs, dW and db its carry, updated a chunk of classes at a time."""
    import jax
    import jax.numpy as jnp

    xp = _xp()
    assert s.one_pass is not None
    rows, cols = s.one_pass
    n_rows, n_features = h2.shape
    whole = linear.chunk(xp, weight, cl, 0, s.n_classes)
    w_c = whole.weight.astype(s.compute)

    def block(carry: Any, hb: Any, yb: Any) -> Any:
        d_weight, d_bias, total, share_total = carry
        hb = hb.astype(s.compute)
        tg = loss.read_target(xp, yb, s.n_classes, s.ignore_index)
        # the target's logit gathered, not summed out of a masked tile: one tile fewer among the
        # temporaries (XLA keeps each reduction's input)
        st, _, z = linear.chunk_stats(xp, hb, tg, whole, s.eps, s.compute, target=False)
        st = st._replace(z_y=jnp.take_along_axis(z, tg.safe, axis=1))
        losses, share = linear.block_loss(xp, st, tg, cl, s.eps)
        w_y = linear.target_weight(xp, cl, tg, st.m)
        g = linear.chunk_grad(xp, hb, tg, whole, cl, s.eps, s.compute, st, w_y, jnp.ones_like(st.m), z)

        def update(d_weight: Any, c0: Any, n: int) -> Any:
            part = jax.lax.dynamic_slice_in_dim(g, c0, n, axis=1).T @ hb
            return jax.lax.dynamic_update_slice_in_dim(d_weight, _take(d_weight, c0, n) + part, c0, axis=0)

        full, rest = divmod(s.n_classes, cols)
        d_weight = jax.lax.fori_loop(0, full, lambda i, dw: update(dw, i * cols, cols), d_weight)
        if rest:
            d_weight = update(d_weight, full * cols, rest)
        carry = (d_weight, d_bias + jnp.sum(g, axis=0), total + jnp.sum(losses), share_total + jnp.sum(share))
        return carry, g @ w_c

    zero = jnp.zeros((), dtype=s.compute)
    carry = (jnp.zeros(weight.shape, dtype=s.compute), jnp.zeros(s.n_classes, dtype=s.compute), zero, zero)
    full, rest = divmod(n_rows, rows)
    carry, dh = jax.lax.scan(lambda c, i: block(c, _take(h2, i * rows, rows), _take(y, i * rows, rows)), carry, jnp.arange(full))
    dh = dh.reshape(full * rows, n_features)
    if rest:
        carry, dh_rest = block(carry, h2[full * rows :], y[full * rows :])
        dh = jnp.concatenate([dh, dh_rest])
    d_weight, d_bias, total, share_total = carry
    return total, share_total, (dh, d_weight, d_bias)


def _blocks(s: _Static, h2: Any, y: Any) -> Any:
    xp = _xp()
    for r0 in range(0, h2.shape[0], s.rows):
        r1 = min(r0 + s.rows, h2.shape[0])
        yield r0, r1, h2[r0:r1].astype(s.compute), loss.read_target(xp, y[r0:r1], s.n_classes, s.ignore_index)


@functools.cache
def _linear() -> Any:
    import jax
    import jax.numpy as jnp

    xp = _xp()

    def forward(s: _Static, h2: Any, weight: Any, bias: Any, y: Any, where: Any, class_weight: Any) -> Any:
        cl = linear.classes(xp, weight, where, class_weight, bias, s.compute)
        losses, shares, kept = [], [], []
        for _, _, hb, tg in _blocks(s, h2, y):
            st = _block_stats(s, cl, weight, hb, tg)
            per_example, share = linear.block_loss(xp, st, tg, cl, s.eps)
            losses.append(per_example)
            shares.append(share)
            kept.append(st)
        per_example, share = jnp.concatenate(losses), jnp.concatenate(shares)
        stats = loss.IndexStats(*(jnp.concatenate(parts) for parts in zip(*kept)))
        value = loss.reduce_losses(xp, per_example, share, 1, s.reduction)
        return value, (h2, weight, bias, y, where, class_weight, stats, jnp.sum(share))

    def forward_with_grads(s: _Static, h2: Any, weight: Any, bias: Any, y: Any, where: Any, class_weight: Any) -> Any:
        if s.one_pass is None:
            return forward(s, h2, weight, bias, y, where, class_weight)
        cl = linear.classes(xp, weight, where, class_weight, bias, s.compute)
        total, share_total, grads = _one_pass(s, cl, weight, h2, y)
        denominator = share_total if s.reduction == "mean" else jnp.ones_like(share_total)
        value = jnp.where(denominator == 0, jnp.nan, total / denominator)  # a mean over no weight: NaN
        return value, (h2, weight, bias, y, where, class_weight, grads, denominator)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def run(s: _Static, h2: Any, weight: Any, bias: Any, y: Any, where: Any, class_weight: Any) -> Any:
        return forward(s, h2, weight, bias, y, where, class_weight)[0]

    def scaled(s: _Static, res: Any, g: Any) -> Any:
        """The one pass's gradients, times the incoming gradient."""
        h2, weight, bias, y, where, class_weight, (dh, d_weight, d_bias), denominator = res
        scale = _per_share(g, denominator).astype(s.compute)
        return _cotangents(h2, weight, bias, y, where, class_weight, dh * scale, d_weight * scale, d_bias * scale)

    def recomputed(s: _Static, res: Any, g: Any) -> Any:
        """The gradients from each row's statistics, the tiles recomputed by chunks of classes."""
        h2, weight, bias, y, where, class_weight, stats, total_share = res
        cl = linear.classes(xp, weight, where, class_weight, bias, s.compute)
        if s.reduction == "none":
            scale = g[:, None].astype(s.compute)
        else:
            per_example = _per_share(g, total_share) if s.reduction == "mean" else g
            scale = jnp.broadcast_to(per_example, (h2.shape[0], 1)).astype(s.compute)
        dh_parts: list[Any] = []
        d_weight: Any = None
        d_bias: Any = None
        for r0, r1, hb, tg in _blocks(s, h2, y):
            st = loss.IndexStats(*(a[r0:r1] for a in stats))
            dh, dw, db = _block_grads(s, cl, weight, hb, tg, st, scale[r0:r1])
            dh_parts.append(dh)
            d_weight, d_bias = (dw, db) if d_weight is None else (d_weight + dw, d_bias + db)
        dh = dh_parts[0] if len(dh_parts) == 1 else jnp.concatenate(dh_parts)
        return _cotangents(h2, weight, bias, y, where, class_weight, dh, d_weight, d_bias)

    run.defvjp(forward_with_grads, lambda s, res, g: (recomputed if s.one_pass is None else scaled)(s, res, g))
    return jax.jit(run, static_argnums=(0,))


def _per_share(g: Any, share: Any) -> Any:
    """The incoming gradient of a mean, per unit of its examples' total weight: 0 where that is 0
    (a mean over no weight passes no gradient back, as :func:`softmax_multi.loss.reduce_losses`)."""
    import jax.numpy as jnp

    return jnp.where(share == 0, 0.0, g / jnp.where(share == 0, 1.0, share))


def _cotangents(
    h2: Any, weight: Any, bias: Any, y: Any, where: Any, class_weight: Any, dh: Any, d_weight: Any, d_bias: Any
) -> Any:
    """The backward's results, in the inputs' dtypes (none for the target and mask; class weights
    are not differentiated: zeros)."""
    import jax.numpy as jnp

    return (
        dh.astype(h2.dtype),
        d_weight.astype(weight.dtype),
        None if bias is None else d_bias.astype(bias.dtype),
        _no_cotangent(y),
        None if where is None else _no_cotangent(where),
        None if class_weight is None else jnp.zeros_like(class_weight),
    )


def _no_cotangent(a: Any) -> Any:
    import jax

    return np.zeros(a.shape, dtype=jax.dtypes.float0)


def linear_cross_entropy(h: Any, weight: Any, target: Any, o: linear.Options) -> Any:
    lead = tuple(h.shape[:-1])
    n_rows, n_classes = math.prod(lead), weight.shape[0]
    if n_rows == 0:  # no tile to scan over: the reference's operations, differentiated by JAX
        import jax.numpy as jnp

        return linear.linear_cross_entropy(h, weight, target, o, xp=jnp)
    rows, cols = plan(n_rows, n_classes, o.chunk_size)
    one_pass = None if o.reduction == "none" else one_pass_plan(n_rows, n_classes, h.shape[-1], o.chunk_size)
    s = _Static(n_classes, rows, cols, o.label_smoothing, o.ignore_index, o.reduction, o.compute, one_pass)
    y = target.reshape(n_rows, 1)
    result = _linear()(s, h.reshape(n_rows, h.shape[-1]), weight, o.bias, y, o.where, o.class_weight)
    return result.reshape(lead) if o.reduction == "none" else result
