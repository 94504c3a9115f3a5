"""Cross-entropy, written once against the Python array API standard: the meaning of the loss on
every backend, and the parts its gradient is made of.

For logits ``z`` with classes along ``axis``, per-class weights ``w`` (torch's ``weight=``) and
target probabilities ``q`` (a one-hot row for a class index), smoothed as torch smooths them,
``q' = (1 - eps) q + eps / n`` over the ``n`` classes taking part, the loss of an example is::

    loss = sum_c w_c q'_c (-log softmax(z)_c) = sum_c a_c (d_c + log s)

with ``a = w q'``, ``d = m - z`` (``m`` the max over the classes taking part, so every ``d`` is
at least 0) and ``log s = log1p((k - 1) + t)``, the log-sum-exp's statistics as in
:mod:`softmax_multi.reference`: a confident, right prediction's loss keeps its relative
precision (``log1p(rest)``, not ``lse - z_y``). Nothing subtracts two large numbers.

Its gradient with respect to the logits is ``A p - a`` (``p`` the softmax, ``A = sum_c a_c``):
what a lean backward keeps, and what :func:`terms` gives the backends' custom derivatives.

The cases (the semantics table in README.md lists them): ``where`` masks classes as in softmax
(they take no part, smoothing spreads over the others, a target on a masked class gives +inf
while its gradient stays ``A p - a``); examples whose target is ``ignore_index`` give 0 and a
zero gradient; a class index outside ``[0, C)`` gives NaN for its example (a value, not an
exception, so that it needs no host synchronisation under ``jax.jit`` or on a GPU); a slice whose
classes taking part hold NaN or +inf, or are all -inf, gives NaN, as the peers' log_softmax does.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from array_api_compat import array_namespace

from . import online
from .reference import _count, _sum, constant_like, quiet

__all__ = [
    "REDUCTIONS",
    "IndexStats",
    "Target",
    "Terms",
    "cross_entropy",
    "from_log_softmax",
    "index_grad",
    "index_loss",
    "index_stats",
    "mean_of",
    "merge_index_stats",
    "per_share",
    "read_target",
    "reduce_losses",
    "terms",
]

Array = Any
REDUCTIONS = ("none", "sum", "mean")


class Terms(NamedTuple):
    """An example's loss and what its gradients are made of, with the class axis kept (length 1)."""

    loss: Array
    """The per-example loss (class axis of length 1)."""
    weight: Array
    """The example's share of a ``"mean"``: its class weight (1 unweighted; 0 when ignored) for
    class indices, 1 for probability targets."""
    grad: Array | None = None
    """d loss / d logits, ``A p - a`` (zero for ignored examples); with ``gradients=True``."""
    per_class: Array | None = None
    """``-log softmax`` over the classes taking part, 0 elsewhere: with ``a`` it gives the
    gradients with respect to target probabilities and class weights."""
    smoothed: Array | None = None
    """``q'``, the smoothed target probabilities (zero for ignored examples)."""


@quiet
def cross_entropy(
    z: Array,
    target: Array,
    axis: int,
    where: Array | None = None,
    class_weight: Array | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    reduction: str = "none",
    *,
    xp: Any = None,
    accurate_sums: bool = True,
) -> Array:
    """The cross-entropy of logits ``z`` (classes along the non-negative ``axis``) and ``target``:
    class indices (an integer array, ``z``'s shape without ``axis``) or probabilities (floating,
    ``z``'s shape and dtype). Arguments are checked by :func:`softmax_multi.cross_entropy`.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.log(np.asarray([[0.25, 0.75], [0.5, 0.5]]))
    >>> cross_entropy(z, np.asarray([1, 0]), 1).round(4)
    array([0.2877, 0.6931])
    """
    xp = xp or array_namespace(z)
    parts = terms(xp, z, target, axis, where, class_weight, label_smoothing, ignore_index, accurate_sums)
    return reduce_losses(xp, parts.loss, parts.weight, axis, reduction, accurate_sums)


def reduce_losses(xp: Any, loss: Array, weight: Array, axis: int, reduction: str, accurate_sums: bool = True) -> Array:
    """Per-example losses (class axis kept) as ``reduction`` asks: their own shape, their sum, or
    their sum over the examples' total weight (torch's ``"mean"``; NaN, with a zero gradient,
    where that weight is 0)."""
    if reduction == "none":
        return xp.squeeze(loss, axis=axis)
    every = tuple(range(loss.ndim))
    total = xp.reshape(_sum(xp, loss, every, accurate_sums), ())
    if reduction == "sum":
        return total
    return mean_of(xp, total, xp.reshape(_sum(xp, weight, every, accurate_sums), ()))


def mean_of(xp: Any, total: Array, share: Array) -> Array:
    """A ``"mean"``: ``total / share``, the examples' total weight. Over no weight (every example
    ignored) NaN, as 0 / 0, and no gradient back, as torch's: a where, not the division by 0, whose
    gradient (0 * inf) would be NaN."""
    empty = share == 0
    return xp.where(empty, constant_like(xp, total, math.nan), total / xp.where(empty, constant_like(xp, share, 1.0), share))


def per_share(xp: Any, g: Array, share: Array) -> Array:
    """The incoming gradient ``g`` of a :func:`mean_of` per unit of its total weight: 0 where that
    is 0 (for backwards written by hand)."""
    empty = share == 0
    return xp.where(empty, constant_like(xp, g, 0.0), g / xp.where(empty, constant_like(xp, share, 1.0), share))


class IndexStats(NamedTuple):
    """What the loss of a class-index target needs from a chunk of classes, per example (class
    axis of length 1): the log-sum-exp's statistics of :mod:`softmax_multi.online` and two more,
    so that chunks merge without revisiting the logits."""

    m: Array
    """The max over the chunk's classes taking part (-inf where none does)."""
    k: Array
    """How many of them equal ``m``."""
    t: Array
    """``sum(exp(z - m))`` over the others."""
    u: Array
    """``sum(w_c (m - z_c))`` over the classes taking part (for smoothing; 0 without it)."""
    z_y: Array
    """The target's own logit where the chunk holds the target class, else 0."""


def index_stats(
    xp: Any, z: Array, axis: int, onehot: Array | None, live: Array | None, w_live: Array | None, accurate: bool = True
) -> IndexStats:
    """The statistics of a chunk of classes along ``axis``. ``onehot`` marks each example's target
    class in the chunk; ``w_live`` (None: no smoothing) the class weights taking part (0 elsewhere)."""
    zero = constant_like(xp, z, 0.0)
    axes = (axis,)
    zm = z if live is None else xp.where(live, z, constant_like(xp, z, -math.inf))
    m = xp.max(zm, axis=axis, keepdims=True)
    finite = xp.isfinite(m)
    d = xp.where(finite, m, zero) - zm  # >= 0; +inf at masked entries
    top = xp.logical_and(zm == m, finite)
    k = _count(xp, top, axes, z.dtype)
    t = _sum(xp, xp.where(top, zero, xp.exp(-d)), axes, accurate)
    if w_live is None:
        u = xp.zeros_like(m)
    else:
        u = _sum(xp, w_live * (d if live is None else xp.where(live, d, zero)), axes, accurate)
    z_y = xp.zeros_like(m) if onehot is None else _sum(xp, xp.where(onehot, z, zero), axes, True)
    return IndexStats(m, k, t, u, z_y)


def merge_index_stats(xp: Any, a: IndexStats, b: IndexStats, w_a: Array, w_b: Array) -> IndexStats:
    """Two chunks' statistics together: ``(m, k, t)`` merged by :func:`softmax_multi.online.merge`;
    ``w_a`` and ``w_b``, the chunks' total class weights taking part, move ``u`` with the max."""
    both = online.merge(online.Stats(a.m, a.k, a.t), online.Stats(b.m, b.k, b.t))
    return IndexStats(both.m, both.k, both.t, _moved(xp, a, w_a, both.m) + _moved(xp, b, w_b, both.m), a.z_y + b.z_y)


def _moved(xp: Any, st: IndexStats, w: Array, merged: Array) -> Array:
    zero = constant_like(xp, st.u, 0.0)
    shift = xp.where(st.m == merged, zero, merged - st.m)
    return st.u + xp.where(w == 0, zero, w * shift)


class Target(NamedTuple):
    """Class-index targets, read once (class axis kept with length 1)."""

    inside: Array
    """The index lies in [0, C)."""
    ignored: Array | None
    """The index is ``ignore_index``."""
    used: Array
    """Inside and not ignored: the example takes part."""
    safe: Array
    """The index where used, else 0 (safe to gather)."""


def read_target(xp: Any, y: Array, n_classes: int, ignore_index: int | None) -> Target:
    """``y`` (with the class axis already of length 1) checked against ``n_classes``, by value,
    with no host synchronisation."""
    inside = xp.logical_and(y >= 0, y < n_classes)
    ignored = None if ignore_index is None else y == ignore_index
    used = inside if ignored is None else xp.logical_and(inside, xp.logical_not(ignored))
    return Target(inside, ignored, used, xp.where(used, y, xp.zeros_like(y)))


def index_loss(
    xp: Any, st: IndexStats, tg: Target, w_y: Array, live_y: Array | None, w_total: Array, n_live: Array, eps: float
) -> tuple[Array, Array]:
    """The per-example loss and share of a ``"mean"`` from a whole row's statistics: ``w_y`` the
    target class's weight, ``live_y`` whether it takes part, ``w_total`` and ``n_live`` the weight
    and number of the classes taking part."""
    zero = constant_like(xp, st.m, 0.0)
    finite = xp.isfinite(st.m)
    m0 = xp.where(finite, st.m, zero)
    log_s = _log_s(xp, st, finite)
    loss = w_y * ((m0 - st.z_y) + log_s)
    if eps:
        smooth = (st.u + w_total * log_s) * _share(xp, n_live, eps)
        loss = (1 - eps) * loss + smooth
    if live_y is not None:
        loss = xp.where(live_y, loss, constant_like(xp, loss, math.inf))  # the target takes no part: probability 0
    # NaN or +inf among the classes taking part, or all of them -inf: NaN, as log_softmax
    loss = xp.where(xp.logical_or(finite, n_live == 0), loss, constant_like(xp, loss, math.nan))
    return _outside(xp, loss, tg, w_y)


def _outside(xp: Any, loss: Array, tg: Target, w_y: Array) -> tuple[Array, Array]:
    """Ignored examples give 0, indices outside [0, C) NaN; and each example's share of a "mean"."""
    zero = constant_like(xp, loss, 0.0)
    if tg.ignored is not None:
        loss = xp.where(tg.ignored, zero, loss)
        allowed = xp.logical_or(tg.inside, tg.ignored)
    else:
        allowed = tg.inside
    loss = xp.where(allowed, loss, constant_like(xp, loss, math.nan))
    share = xp.where(tg.used, w_y * constant_like(xp, loss, 1.0), zero) if tg.ignored is not None else w_y * xp.ones_like(loss)
    return loss, share


def from_log_softmax(
    xp: Any,
    log_p: Array,
    target: Array,
    axis: int,
    where: Array | None,
    class_weight: Array | None,
    eps: float,
    ignore_index: int | None,
) -> tuple[Array, Array]:
    """The per-example loss of class-index targets and their shares of a ``"mean"`` (class axis
    kept), from ``log_softmax(z, where=where)`` computed already (by a backend's fused kernel):
    its -inf at masked classes and NaN for undefined slices give the cases of :func:`terms`."""
    n_classes = log_p.shape[axis]
    shape = tuple(log_p.shape)
    zero, one = constant_like(xp, log_p, 0.0), constant_like(xp, log_p, 1.0)
    tg = read_target(xp, xp.expand_dims(target, axis=axis), n_classes, ignore_index)
    pick = _picker(xp, tg.safe, None if hasattr(xp, "take_along_axis") else _onehot(xp, tg.safe, axis, n_classes), axis)
    w = (
        None
        if class_weight is None
        else xp.reshape(class_weight, tuple(n_classes if i == axis else 1 for i in range(len(shape))))
    )
    w_y = one if w is None else pick(xp.broadcast_to(w, shape))
    loss = -(w_y * pick(log_p))
    if eps:
        live = None if where is None else xp.broadcast_to(where, shape)
        inside = log_p if live is None else xp.where(live, log_p, zero)
        n_live = (
            constant_like(xp, log_p, float(n_classes))
            if live is None
            else xp.sum(xp.astype(live, log_p.dtype), axis=axis, keepdims=True)
        )
        weighted = inside if w is None else inside * w
        loss = (1 - eps) * loss - _share(xp, n_live, eps) * xp.sum(weighted, axis=axis, keepdims=True)
    if where is not None:
        loss = xp.where(pick(xp.broadcast_to(where, shape)), loss, constant_like(xp, loss, math.inf))
    return _outside(xp, loss, tg, w_y)


def index_grad(
    xp: Any,
    z: Array,
    st: IndexStats,
    onehot: Array,
    tg: Target,
    w_y: Array,
    live: Array | None,
    w_live: Array | None,
    w_total: Array,
    n_live: Array,
    eps: float,
) -> Array:
    """d loss / d z of a chunk of classes, ``A p - a``, from the row's final statistics: ``p`` its
    softmax, ``a`` the weighted, smoothed target (``w_live``: the chunk's class weights taking
    part, None for unit weights) and ``A`` its total. Zero for examples that take no part."""
    zero = constant_like(xp, z, 0.0)
    finite = xp.isfinite(st.m)
    m0 = xp.where(finite, st.m, zero)
    p = xp.exp((z - m0) - _log_s(xp, st, finite))
    if live is not None:
        p = xp.where(live, p, zero)
    a_y = (1 - eps) * w_y
    total = a_y
    g = -xp.where(onehot, a_y, zero)
    if eps:
        share = _share(xp, n_live, eps)
        total = total + share * w_total
        spread = share * (constant_like(xp, z, 1.0) if w_live is None else w_live)
        g = g - (spread if live is None else xp.where(live, spread, zero))
    return xp.where(tg.used, g + total * p, zero)


def _log_s(xp: Any, st: IndexStats, finite: Array) -> Array:
    """log(k + t) as log1p((k - 1) + t), fed 0 where the max is not finite (no NaN gradient)."""
    return xp.log1p(xp.where(finite, (st.k - 1) + st.t, constant_like(xp, st.t, 0.0)))


def _share(xp: Any, n_live: Array, eps: float) -> Array:
    """The smoothing each class taking part receives: eps / n (0 where none takes part)."""
    return eps / xp.where(n_live > 0, n_live, constant_like(xp, n_live, 1.0))


def terms(
    xp: Any,
    z: Array,
    target: Array,
    axis: int,
    where: Array | None,
    class_weight: Array | None,
    label_smoothing: float,
    ignore_index: int | None,
    accurate: bool = True,
    gradients: bool = False,
) -> Terms:
    """The loss of every example and, with ``gradients``, the parts of its derivatives."""
    n_classes = z.shape[axis]
    shape = tuple(z.shape)
    zero, one = constant_like(xp, z, 0.0), constant_like(xp, z, 1.0)
    eps = float(label_smoothing)
    axes = (axis,)
    live = None if where is None else xp.broadcast_to(where, shape)
    w = None if class_weight is None else xp.reshape(class_weight, tuple(n_classes if i == axis else 1 for i in range(z.ndim)))
    w_full = xp.broadcast_to(one if w is None else w, shape)
    w_live = w_full if live is None else xp.where(live, w_full, zero)
    if live is None:
        n_live = constant_like(xp, z, float(n_classes))
    else:
        n_live = _sum(xp, xp.astype(live, z.dtype), axes, True)

    if xp.isdtype(target.dtype, "integral"):
        tg = read_target(xp, xp.expand_dims(target, axis=axis), n_classes, ignore_index)
        onehot = _onehot(xp, tg.safe, axis, n_classes)
        pick = _picker(xp, tg.safe, onehot, axis)
        w_y = one if w is None else pick(w_full)
        live_y = None if live is None else pick(live)
        st = index_stats(xp, z, axis, onehot, live, w_live if eps else None, accurate)
        w_total = _sum(xp, w_live, axes, accurate)
        loss, share = index_loss(xp, st, tg, w_y, live_y, w_total, n_live, eps)
        if not gradients:
            return Terms(loss, share)
        grad = index_grad(xp, z, st, onehot, tg, w_y, live, None if w is None else w_live, w_total, n_live, eps)
        q = xp.where(onehot, one - eps, zero)
        if eps:
            q = q + xp.where(live, _share(xp, n_live, eps), zero) if live is not None else q + _share(xp, n_live, eps)
        q = xp.where(tg.used, q, zero)
        return Terms(loss, share, grad, _per_class(xp, z, st.m, st.k, st.t, live), q)

    # probabilities
    st = index_stats(xp, z, axis, None, live, None, accurate)
    finite = xp.isfinite(st.m)
    d = xp.where(finite, st.m, zero) - z
    d_live = d if live is None else xp.where(live, d, zero)
    log_s = _log_s(xp, st, finite)
    q = target
    if eps:
        spread = _share(xp, n_live, eps)
        q = (1 - eps) * q + (spread if live is None else xp.where(live, spread, zero))
    a = q if w is None else w * q
    a_live = a if live is None else xp.where(live, a, zero)
    nonzero = a_live != 0
    # 0 * -log(0) = 0: a class of probability 0 takes no part even at a logit of -inf
    loss = _sum(xp, a_live * xp.where(nonzero, d_live, zero), axes, accurate) + _sum(xp, a_live, axes, accurate) * log_s
    if live is not None:
        stray = xp.logical_and(xp.logical_not(live), target != 0)
        loss = xp.where(xp.any(stray, axis=axis, keepdims=True), constant_like(xp, loss, math.inf), loss)
    loss = xp.where(xp.logical_or(finite, n_live == 0), loss, constant_like(xp, loss, math.nan))
    share = xp.ones_like(loss)
    if not gradients:
        return Terms(loss, share)
    p = xp.exp(-(d_live + log_s))
    p = p if live is None else xp.where(live, p, zero)
    grad = _sum(xp, a, axes, accurate) * p - a
    return Terms(loss, share, grad, _per_class(xp, z, st.m, st.k, st.t, live), q)


def _per_class(xp: Any, z: Array, m: Array, k: Array, t: Array, live: Array | None) -> Array:
    """-log softmax over the classes taking part, 0 elsewhere."""
    zero = constant_like(xp, z, 0.0)
    finite = xp.isfinite(m)
    y = (xp.where(finite, m, zero) - z) + xp.log1p(xp.where(finite, (k - 1) + t, zero))
    return y if live is None else xp.where(live, y, zero)


def _onehot(xp: Any, y: Array, axis: int, n_classes: int) -> Array:
    """True at each example's class along ``axis`` (``y`` holds the classes with ``axis`` of length 1)."""
    shape = tuple(n_classes if i == axis else 1 for i in range(y.ndim))
    classes = xp.reshape(xp.arange(n_classes, dtype=y.dtype, device=getattr(y, "device", None)), shape)
    return y == classes


def _picker(xp: Any, y: Array, onehot: Array, axis: int) -> Any:
    """A function taking each example's entry at its class: ``take_along_axis`` where the library
    has it, else a masked sum over the one-hot rows (Dask and Cubed lack it)."""
    take = getattr(xp, "take_along_axis", None)
    if take is not None:
        return lambda a: take(a, y, axis=axis)

    def pick(a: Array) -> Array:
        if xp.isdtype(a.dtype, "bool"):
            return xp.any(xp.logical_and(onehot, a), axis=axis, keepdims=True)
        return xp.sum(xp.where(onehot, a, constant_like(xp, a, 0.0)), axis=axis, keepdims=True)

    return pick
