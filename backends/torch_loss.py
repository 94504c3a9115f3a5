"""The losses on PyTorch tensors: autograd functions whose backward keeps only what it needs.

``cross_entropy`` keeps ``d loss / d logits`` (softmax minus the weighted, smoothed target: one
tensor of the logits' size, as torch's own loss keeps its log-softmax) and nothing of the
forward's temporaries. ``linear_cross_entropy`` takes the rows of ``h`` in blocks holding every
class (one tile of logits at a time, rewritten in place: logits, then ``exp(z - m)``, then the
gradient); with ``"sum"`` and ``"mean"`` each tile's gradient goes into ``dh``, ``dW`` and
``db`` in the forward pass (three matrix products in all, as the naive loss), with ``"none"`` the
forward keeps each row's statistics and the backward recomputes the tiles (four); there, where
the kernels read the tiles, the forward's tiles are the backward's, every row by a chunk of
classes (:func:`_column_forward`). Where a row of classes does not fit ``chunk_size`` the
classes are chunked too, through :mod:`softmax_multi.linear`, and the backward recomputes. On
CPU tiles, outside torch.compile, the fused kernels read each tile once for its rows' statistics
(:func:`softmax_multi.backends.fused.row_stats`), where torch's own operations would take six
passes over it and a second tile.
"""

from __future__ import annotations

import inspect
import math
import sys
from typing import Any

from softmax_multi import linear, loss

_TERMS = inspect.unwrap(loss.terms)


def _namespace() -> Any:
    import array_api_compat.torch

    return array_api_compat.torch


def cross_entropy(
    z: Any, target: Any, axis: int, where: Any, class_weight: Any, eps: float, ignore_index: Any, reduction: str
) -> Any:
    import torch

    xp = _namespace()
    differentiable = [a for a in (z, target, class_weight) if a is not None and a.is_floating_point()]
    # Traced by torch.compile before the Function was ever defined (it cannot be mid-trace), the
    # reference's own operations are differentiated instead: the same values, a backward that
    # AOTAutograd partitions, and (unlike the Function) a zero gradient at a masked target.
    if torch.is_grad_enabled() and any(a.requires_grad for a in differentiable) and (_BUILT or not torch.compiler.is_compiling()):
        per_example, share = _functions()["cross_entropy"].apply(z, target, where, class_weight, axis, eps, ignore_index)
    else:
        per_example, share = _TERMS(xp, z, target, axis, where, class_weight, eps, ignore_index)[:2]
    return loss.reduce_losses(xp, per_example, share, axis, reduction)


def linear_cross_entropy(h: Any, weight: Any, target: Any, o: linear.Options) -> Any:
    import torch

    if o.class_weight is not None and o.class_weight.requires_grad and torch.is_grad_enabled():
        raise TypeError("linear_cross_entropy: class_weight takes no gradient here; pass class_weight.detach()")
    lead = tuple(h.shape[:-1])
    n_rows, n_classes = math.prod(lead), weight.shape[0]
    h2 = h.reshape(n_rows, h.shape[-1])
    y = target.reshape(n_rows, 1)
    if n_rows == 0:  # logits of no row hold nothing: the loss of them, differentiated by autograd
        z = (h2 @ weight.T).to(o.compute) + (0 if o.bias is None else o.bias)
        where = None if o.where is None else o.where.expand(z.shape)
        per_example = cross_entropy(z, y[:, 0], 1, where, o.class_weight, o.label_smoothing, o.ignore_index, o.reduction)
        return (per_example.reshape(lead) if o.reduction == "none" else per_example).to(h.dtype)
    # the kernels' tiles twice as large as torch's, which need a second tile beside them
    chunk_size = o.chunk_size or (DEFAULT_CHUNK if _kernels_read(h, weight, o.compute) else linear.DEFAULT_CHUNK)
    rows, cols = linear.plan(n_rows, n_classes, chunk_size)
    options = (o.where, o.class_weight, o.label_smoothing, o.ignore_index, rows, cols, o.compute, chunk_size)
    if o.reduction == "none":
        per_example = _functions()["linear_none"].apply(h2, weight, o.bias, y, *options)
        return per_example.reshape(lead).to(h.dtype)
    total = _functions()["linear_reduced"].apply(h2, weight, o.bias, y, o.reduction, *options)
    return total.to(h.dtype)


# Logits per tile by default where the fused kernels read the tiles: 2**23 (32 MiB of float32; 262
# rows of 32 000 classes, or every row of 4096 by 2048 classes in the "none" backward); elsewhere
# linear.DEFAULT_CHUNK. The products of a block of rows run nearer the
# BLAS's peak with more rows: measured (N=4096, D=1024, V=32000, float32, 2 threads, interleaved,
# medians of 6 runs), the three products alone took 3.91 s in blocks of 262 rows or of 393, and
# 3.99 s in blocks of 131 (the naive loss compiled: 3.59-3.98 s in the same runs). Where the fused
# kernels read the tiles there is no second tile (``top``): 2**23 holds 32 MiB beside the
# gradients' 141 MiB there.
DEFAULT_CHUNK = 2**23

# Rows of a tile's logits computed by one product at most, in parts of equal rows: a default tile
# (262 rows of 32 000 classes) is one product. Measured (N=4096, D=1024, V=32000, float32, 2
# threads, torch 2.13 with MKL, the kernels reading the tiles), against two products of 131 rows:
# the peak above the inputs 182.6 MiB, not 192.1 (no temporary of MKL's showed, where an earlier
# build of this loss measured 205 MiB); forward + backward 1.06-1.12x the compiled naive loss, not
# 1.21-1.24x ("none": 1.37-1.40x, not 1.63x), alternating processes, medians of 3.
PRODUCT_ROWS = 512


class _Problem:
    """One linear loss's fixed data: the classes (in the compute dtype), the weight matrix as the
    tiles are computed from, the row blocks, and whether the fused kernels read the tiles
    (:func:`_kernels_read`)."""

    def __init__(
        self,
        h: Any,
        weight: Any,
        bias: Any,
        y: Any,
        where: Any,
        class_weight: Any,
        eps: float,
        ignore_index: Any,
        rows: int,
        cols: int,
        compute: Any,
        chunk_size: Any,
    ):
        import torch

        xp = _namespace()
        self.xp, self.h, self.y, self.eps, self.ignore_index = xp, h, y, eps, ignore_index
        self.rows, self.cols, self.compute = rows, cols, compute
        self.weight = weight.detach().to(compute)  # float16 and bfloat16 weights: once, in float32
        n_classes = weight.shape[0]
        self.cl = linear.classes(xp, weight, where, class_weight, None if bias is None else bias.detach(), compute)
        self.whole_rows = cols >= n_classes
        self.kernels = self.whole_rows and _kernels_read(h, weight, compute)
        # one tile's memory for the whole call (where torch reads the tiles, a second for their
        # maxima), rewritten block after block: fresh tiles freed and made again grew the process
        # by hundreds of MiB (glibc keeps them; the small tensors kept between blocks split a freed
        # tile, so that the next did not fit: fresh 4 MiB boolean tiles made a forward of "none"
        # end 41-192 MiB above its start).
        # The logits' buffer is flat and large enough for the tiles of the "none" backward too,
        # which reuse it.
        size = max(rows * n_classes, math.prod(linear.column_plan(h.shape[0], n_classes, chunk_size)))
        self.buffer: Any = torch.empty(size, dtype=compute, device=h.device) if self.whole_rows else None
        top = self.whole_rows and not self.kernels
        self.top: Any = torch.empty((rows, n_classes), dtype=compute, device=h.device) if top else None
        self.chunk_size = chunk_size
        self.row_weights = self.gaps = None
        if eps:
            w = self.cl.weight if self.cl.weight is not None else self.weight.new_ones(n_classes)
            self.row_weights = w if self.cl.live is None else w.masked_fill(~self.cl.live, 0.0)
            if self.kernels:  # the kernels' weights: float64, NaN where a class takes no part
                gaps = w.to(torch.float64)
                self.gaps = (gaps if self.cl.live is None else gaps.masked_fill(~self.cl.live, math.nan)).numpy()

    def blocks(self, rows: int | None = None) -> Any:
        """(r0, r1, the rows of h in the compute dtype, their targets) of each block of ``rows``
        rows (by default the plan's)."""
        rows = rows or self.rows
        for r0 in range(0, self.h.shape[0], rows):
            r1 = min(r0 + rows, self.h.shape[0])
            tg = loss.read_target(self.xp, self.y[r0:r1], self.weight.shape[0], self.ignore_index)
            yield r0, r1, self.h[r0:r1].detach().to(self.compute), tg

    def tile(self, hb: Any) -> Any:
        """Every class's logits of the rows ``hb``, in the one tile buffer, to rewrite in place."""
        import torch

        out = self.buffer[: hb.shape[0] * self.weight.shape[0]].view(hb.shape[0], -1)
        step = -(-hb.shape[0] // -(-hb.shape[0] // PRODUCT_ROWS))  # parts of equal rows
        for r0 in range(0, hb.shape[0], step):
            part, rows = out[r0 : r0 + step], hb[r0 : r0 + step]
            if self.cl.bias is None:
                torch.mm(rows, self.weight.t(), out=part)
            else:
                torch.addmm(self.cl.bias, rows, self.weight.t(), out=part)
        return out

    def column_tile(self, hb: Any, c0: int, c1: int, buffer: Any) -> Any:
        """The logits of the rows ``hb`` and the classes [c0, c1), in ``buffer``, to rewrite in place."""
        import torch

        z = buffer[: hb.shape[0] * (c1 - c0)].view(hb.shape[0], c1 - c0)
        if self.cl.bias is None:
            return torch.mm(hb, self.weight[c0:c1].t(), out=z)
        return torch.addmm(self.cl.bias[c0:c1], hb, self.weight[c0:c1].t(), out=z)

    def chunk_stats(self, xp: Any, hb: Any, tg: Any, ch: Any, eps: float, compute: Any, accurate: bool = True) -> Any:
        """:func:`softmax_multi.linear.chunk_stats` by the kernels: the statistics of the tile of
        the rows ``hb`` and the chunk of classes ``ch`` (made in the buffer, read once), in float64
        so that the chunks merge in it; the chunk's total weight taking part; no tile (it is
        rewritten by the next chunk's)."""
        import torch

        c0, c1 = ch.start, ch.start + ch.weight.shape[0]
        z = self.column_tile(hb, c0, c1, self.buffer)
        here = (tg.safe >= c0) & (tg.safe < c1)  # the rows whose target lies among these classes
        z_y = torch.where(here, z.gather(1, torch.where(here, tg.safe - c0, 0)), 0.0).to(torch.float64)
        st = _stats_by_kernels(z, z_y, ch.live, None if self.gaps is None else self.gaps[c0:c1])
        total = torch.tensor(float(c1 - c0), dtype=torch.float64) if ch.w_live is None else ch.w_live.sum(dtype=torch.float64)
        return st, total, None

    def stats(self, hb: Any, tg: Any, exp: bool = True) -> tuple[Any, Any]:
        """The row block's statistics and, for whole rows, the tile rewritten to ``exp(z - m)``
        (where ``exp``; else it may be left as it is)."""
        if not self.whole_rows:
            st, _ = linear.block_stats(self.xp, hb, tg, self.weight, self.cl, self.eps, self.cols, self.compute)
            return st, None
        z = self.tile(hb)
        if not self.kernels:
            return _stats_in_place(z, tg, self.cl.live, self.row_weights, self.top[: hb.shape[0]]), z
        st = _stats_by_kernels(z, z.gather(1, tg.safe), self.cl.live, self.gaps)
        if exp:
            _exp_in_place(z, st, None)  # the masked classes are -inf already
        return st, z

    def grads(self, hb: Any, tg: Any, st: Any, scale: Any, e: Any, dh: Any, d_weight: Any, d_bias: Any, r0: int, r1: int) -> None:
        """Add the row block's gradients, scaled per row by ``scale``, into dh, dW and db; ``e``
        the tile of :meth:`stats` (or None: recomputed)."""
        import torch

        if not self.whole_rows:
            for c0, c1, g in linear.block_grads(
                self.xp, hb, tg, self.weight, self.cl, self.eps, self.cols, self.compute, st, scale
            ):
                dh[r0:r1].addmm_(g, self.weight[c0:c1])
                d_weight[c0:c1].addmm_(g.t(), hb)
                if d_bias is not None:
                    d_bias[c0:c1] += g.sum(0)
            return
        if e is None:
            e = self.tile(hb)
            _exp_in_place(e, st, self.cl.live)
        _grad_in_place(e, st, tg, self.cl, self.row_weights, self.eps, scale)
        torch.mm(e, self.weight, out=dh[r0:r1])
        if r0 == 0:  # whole rows: dh and dW are written by the first block, not cleared before it
            torch.mm(e.t(), hb, out=d_weight)
        else:
            d_weight.addmm_(e.t(), hb)
        if d_bias is not None:
            d_bias += e.sum(0)


def _kernels_read(h: Any, weight: Any, compute: Any) -> bool:
    """Can the fused kernels read the tiles: CPU tiles of float32 or float64, nothing tracing the
    call (torch.compile), and the kernels loaded (:func:`torch_backend.kernels_may_run`)."""
    import torch

    from softmax_multi.backends import torch_backend

    return compute in (torch.float32, torch.float64) and weight.is_cpu and torch_backend.kernels_may_run(h)


def _stats_by_kernels(z: Any, z_y: Any, live: Any, gaps: Any) -> Any:
    """The statistics of rows of logits ``z`` (masked classes set to -inf in it, nothing else
    rewritten), read by :func:`softmax_multi.backends.fused.row_stats` in one pass, in float64,
    and in ``z_y``'s dtype; ``z_y`` the targets' logits; ``gaps`` as that function's weights (None:
    no smoothing)."""
    import torch

    from softmax_multi.backends import fused

    if live is not None:
        z.masked_fill_(~live, -math.inf)
    stats = fused.row_stats(z.numpy(), gaps)
    assert stats is not None  # loaded when the call began (_kernels_read), and they stay
    m, k, t, u = (torch.from_numpy(a).to(z_y.dtype).unsqueeze(1) for a in stats)
    return loss.IndexStats(m, k, t, u, z_y)


def _stats_in_place(z: Any, tg: Any, live: Any, row_weights: Any, top: Any) -> Any:
    """The statistics of whole rows of logits ``z``, which becomes ``exp(z - m)`` (0 at masked
    classes), with no other tensor of its size but ``top`` (of z's shape and dtype), rewritten."""
    import torch

    if live is not None:
        z.masked_fill_(~live, -math.inf)
    z_y = z.gather(1, tg.safe)
    m = z.amax(1, keepdim=True)
    finite = m.isfinite()
    z.sub_(torch.where(finite, m, 0.0))
    if row_weights is None:
        u = torch.zeros_like(m)
    elif live is None:
        u = -(z @ row_weights).unsqueeze(1)
    else:
        u = -(z.masked_fill(~live, 0.0) @ row_weights).unsqueeze(1)
    # the maxima as 1.0 in a float tile: summing a boolean one converts it to a fresh tile first
    torch.eq(z, 0, out=top)
    k = top.sum(1, keepdim=True)
    z.exp_()
    z.sub_(top)  # exp(0) = 1 at the maxima: exactly 0 now, and exactly 1 again below
    t = z.sum(1, keepdim=True)
    z.add_(top)
    return loss.IndexStats(m, k, t, u, z_y)


def _exp_in_place(z: Any, st: Any, live: Any) -> None:
    """The tile recomputed for the backward, rewritten to ``exp(z - m)`` as :func:`_stats_in_place` leaves it."""
    import torch

    if live is not None:
        z.masked_fill_(~live, -math.inf)
    z.sub_(torch.where(st.m.isfinite(), st.m, 0.0)).exp_()


def _grad_in_place(e: Any, st: Any, tg: Any, cl: Any, row_weights: Any, eps: float, scale: Any, c0: int = 0) -> None:
    """``e = exp(z - m)`` of classes ``c0`` on rewritten to ``scale * (A p - a)``: the rows'
    gradient with respect to those logits (``row_weights``: those classes' weights taking part)."""
    import torch

    finite = st.m.isfinite()
    log_s = torch.log1p(torch.where(finite, (st.k - 1) + st.t, 0.0))
    w_y = torch.ones_like(st.m) if cl.weight is None else cl.weight[tg.safe]
    scale = torch.where(tg.used, scale, 0.0)
    a_y = (1 - eps) * w_y
    total = a_y
    if eps:
        share = eps / torch.where(cl.n_live > 0, cl.n_live, 1.0)
        total = total + share * cl.w_total
    e.mul_(scale * total * torch.exp(-log_s))
    here = (tg.safe >= c0) & (tg.safe < c0 + e.shape[1])  # the rows whose target lies among these classes
    e.scatter_add_(1, torch.where(here, tg.safe - c0, 0), torch.where(here, -scale * a_y, 0.0))
    if eps:
        e.addr_((scale * share).reshape(-1), row_weights, alpha=-1)


def _column_backward(p: _Problem, st: Any, g: Any) -> tuple[Any, Any, Any]:
    """(dh, dW, db) from the rows' statistics and incoming gradients ``g``, tiles of many rows and
    a chunk of classes recomputed in one buffer (:func:`softmax_multi.linear.column_plan`): each
    chunk's rows of dW come from one product over all the rows, written once."""
    import torch

    h, weight, cl = p.h, p.weight, p.cl
    n_rows, n_classes = h.shape[0], weight.shape[0]
    rows, cols = linear.column_plan(n_rows, n_classes, p.chunk_size)
    one_block = rows >= n_rows
    # the forward's tile buffer, made for these tiles too, where the forward took whole rows; a
    # fresh one beside it took the process 20 MiB higher
    buffer = p.buffer if p.buffer is not None else torch.empty(rows * cols, dtype=p.compute, device=h.device)
    p.buffer = None
    dh = torch.zeros(h.shape, dtype=p.compute, device=h.device)
    d_weight = (torch.empty if one_block else torch.zeros)(weight.shape, dtype=p.compute, device=h.device)
    d_bias = torch.zeros(n_classes, dtype=p.compute, device=h.device) if cl.bias is not None else None
    for r0, r1, hb, tg in p.blocks(rows):
        block = loss.IndexStats(*(a[r0:r1] for a in st))
        for c0 in range(0, n_classes, cols):
            c1 = min(c0 + cols, n_classes)
            z = p.column_tile(hb, c0, c1, buffer)
            _exp_in_place(z, block, None if cl.live is None else cl.live[c0:c1])
            row_weights = None if p.row_weights is None else p.row_weights[c0:c1]
            _grad_in_place(z, block, tg, cl, row_weights, p.eps, g[r0:r1], c0)
            if one_block:
                torch.mm(z.t(), hb, out=d_weight[c0:c1])
            else:
                d_weight[c0:c1].addmm_(z.t(), hb)
            dh[r0:r1].addmm_(z, weight[c0:c1])
            if d_bias is not None:
                d_bias[c0:c1] += z.sum(0)
    return dh, d_weight, d_bias


def _column_forward(p: _Problem) -> tuple[Any, Any]:
    """``"none"``'s forward where the kernels read the tiles: (per-example losses, each row's
    statistics), from tiles of many rows and a chunk of classes (:func:`softmax_multi.linear.column_plan`,
    as the backward recomputes them), each read once by the kernels (:meth:`_Problem.chunk_stats`)
    and the chunks' statistics merged in float64. Products of every row by a chunk run nearer the
    BLAS's peak than products of a block of rows by every class: measured (N=4096, D=1024,
    V=32000, float32, 2 threads, best of 3), h @ W.T by chunks of 2 048 classes 1.66 s, by blocks
    of 262 rows 2.50 s."""
    import torch

    rows, cols = linear.column_plan(p.h.shape[0], p.weight.shape[0], p.chunk_size)
    losses, kept = [], []
    for _, _, hb, tg in p.blocks(rows):
        st, _ = linear.block_stats(p.xp, hb, tg, p.weight, p.cl, p.eps, cols, p.compute, stats=p.chunk_stats)
        st = loss.IndexStats(*(a.to(p.compute) for a in st))
        losses.append(linear.block_loss(p.xp, st, tg, p.cl, p.eps)[0])
        kept.append(st)
    return torch.cat(losses), loss.IndexStats(*(torch.cat(parts) for parts in zip(*kept)))


def _reduced_forward(p: _Problem, reduction: str, want_grads: bool) -> tuple[Any, Any]:
    """The total loss over the examples' total share (``"mean"``) or 1, with the gradients formed
    on the way (scaled by 1; the backward scales them by its incoming gradient)."""
    import torch

    xp, h = p.xp, p.h
    device = h.device
    fresh = torch.empty if p.whole_rows and h.shape[0] else torch.zeros  # whole rows: written by the first block (Problem.grads)
    dh = fresh(h.shape, dtype=p.compute, device=device) if want_grads else None
    d_weight = fresh(p.weight.shape, dtype=p.compute, device=device) if want_grads else None
    d_bias = torch.zeros(p.weight.shape[0], dtype=p.compute, device=device) if want_grads and p.cl.bias is not None else None
    total = share_total = torch.zeros((), dtype=torch.float64, device=device)
    for r0, r1, hb, tg in p.blocks():
        st, e = p.stats(hb, tg, exp=want_grads)
        losses, share = linear.block_loss(xp, st, tg, p.cl, p.eps)
        total = total + losses.sum(dtype=torch.float64)
        share_total = share_total + share.sum(dtype=torch.float64)
        if want_grads:
            p.grads(hb, tg, st, torch.ones_like(st.m), e, dh, d_weight, d_bias, r0, r1)
    denominator = share_total if reduction == "mean" else torch.ones((), dtype=torch.float64, device=device)
    return loss.mean_of(xp, total, denominator).to(p.compute), (dh, d_weight, d_bias, denominator.to(p.compute))


_BUILT: dict[str, Any] = {}


def _functions() -> dict[str, Any]:
    """The autograd functions, defined on first use (defining them imports torch). A plain dict,
    not a cache decorator: torch.compile traces through those, and cannot define a class."""
    if not _BUILT:
        _BUILT.update(_define())
    return _BUILT


def _define() -> dict[str, Any]:
    import torch

    class CrossEntropy(torch.autograd.Function):
        """Forward by the reference; backward ``g * (A p - a)`` from the one tensor kept."""

        @staticmethod
        def forward(
            ctx: Any, z: Any, target: Any, where: Any, class_weight: Any, axis: int, eps: float, ignore_index: Any
        ) -> Any:
            parts = _TERMS(_namespace(), z, target, axis, where, class_weight, eps, ignore_index, gradients=True)
            need_more = ctx.needs_input_grad[1] or ctx.needs_input_grad[3]
            ctx.save_for_backward(parts.grad, *((parts.per_class, parts.smoothed, target, class_weight) if need_more else ()))
            ctx.axis, ctx.eps, ctx.ignore_index, ctx.need_more = axis, eps, ignore_index, need_more
            if class_weight is None:  # else an example's share of a "mean" is its class weight
                ctx.mark_non_differentiable(parts.weight)
            return parts.loss, parts.weight

        @staticmethod
        def backward(ctx: Any, g: Any, g_share: Any) -> Any:
            saved = ctx.saved_tensors
            grad_z = g * saved[0]
            grad_target = grad_weight = None
            if ctx.need_more:
                per_class, smoothed, target, class_weight = saved[1:]
                axis = ctx.axis
                shape = [1] * per_class.ndim
                shape[axis] = per_class.shape[axis]
                if ctx.needs_input_grad[1]:
                    w = 1.0 if class_weight is None else class_weight.reshape(shape)
                    grad_target = g * (1 - ctx.eps) * w * per_class
                if ctx.needs_input_grad[3]:
                    others = [i for i in range(per_class.ndim) if i != axis]
                    grad_weight = (g * smoothed * per_class).sum(others)
                    if g_share is not None and not target.is_floating_point():
                        tg = loss.read_target(_namespace(), target.unsqueeze(axis), per_class.shape[axis], ctx.ignore_index)
                        onehot = loss._onehot(_namespace(), tg.safe, axis, per_class.shape[axis])
                        grad_weight = grad_weight + (g_share * (onehot & tg.used)).sum(others)
            return grad_z, grad_target, None, grad_weight, None, None, None

    class LinearReduced(torch.autograd.Function):
        """``"sum"``/``"mean"``: the gradients formed in the forward pass, scaled in the backward."""

        @staticmethod
        def forward(ctx: Any, h: Any, weight: Any, bias: Any, y: Any, reduction: str, *options: Any) -> Any:
            p = _Problem(h, weight, bias, y, *options)
            want = any(ctx.needs_input_grad[:3])
            value, (dh, d_weight, d_bias, denominator) = _reduced_forward(p, reduction, want)
            if want:
                # kept on ctx, not saved: they are the function's own results, scaled in place
                ctx.grads, ctx.denominator = (dh, d_weight, d_bias), denominator
                ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
            return value

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            grads, ctx.grads = ctx.grads, None
            scale = loss.per_share(_namespace(), g, ctx.denominator)
            grads = [None if a is None else a.mul_(scale).to(dtype) for a, dtype in zip(grads, ctx.dtypes)]
            return (*grads, None, None, *([None] * 8))

    class LinearNone(torch.autograd.Function):
        """``"none"``: each row's statistics kept; the backward recomputes the tiles."""

        @staticmethod
        def forward(ctx: Any, h: Any, weight: Any, bias: Any, y: Any, *options: Any) -> Any:
            p = _Problem(h, weight, bias, y, *options)
            if p.kernels:
                per_example, ctx.stats = _column_forward(p)
            else:
                losses, kept = [], []
                for _, _, hb, tg in p.blocks():
                    st, _ = p.stats(hb, tg, exp=False)
                    losses.append(linear.block_loss(p.xp, st, tg, p.cl, p.eps)[0])
                    kept.append(st)
                per_example, ctx.stats = torch.cat(losses), loss.IndexStats(*(torch.cat(parts) for parts in zip(*kept)))
            p.top = None  # the tile buffer stays for the backward's tiles (of column_plan's shape)
            ctx.problem = p
            ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
            return per_example

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            p, st, ctx.problem = ctx.problem, ctx.stats, None
            parts = _column_backward(p, st, g.reshape(-1, 1).to(p.compute))
            grads = [None if a is None else a.to(dtype) for a, dtype in zip(parts, ctx.dtypes)]
            return (*grads, None, *([None] * 8))

    return {"cross_entropy": CrossEntropy, "linear_reduced": LinearReduced, "linear_none": LinearNone}


if "torch" in sys.modules:  # defined now, before anything traces a call (torch.compile)
    _functions()
