"""PyTorch backend: CPU and CUDA tensors, autograd, torch.compile; accurate at every row length.

PyTorch's CPU softmax kernels sum each row in float sequentially across vector lanes, so their
error grows with the row (about 120 eps at 32 000 and 1 500 eps at 1e6 in float32), and its
log_softmax takes log(1 + rest) where the rest rounds away, so that a dominant entry's value is 0
instead of -log1p(rest). On CPU tensors this backend therefore runs the fused kernels
(:mod:`softmax_multi.backends.fused`) on the tensor's own memory — as fast as torch's kernel, and
accurate — wherever torch need not trace the computation; under autograd through a
``torch.autograd.Function`` whose backward is torch's own. Where torch must see every operation
(``torch.compile`` tracing, functorch transforms) or the kernels do not apply, torch's softmax
runs, its one common error per row divided out by the row's own accurately summed total; and
log_softmax and logsumexp run the reference implementation. CUDA kernels reduce as trees and are
used as they are for softmax.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from softmax_multi import reference
from softmax_multi.backends import fused, torch_loss
from softmax_multi.registry import BackendSpec

# The reference implementation without its NumPy-warning filter: torch computes without NumPy,
# and torch.compile cannot trace np.errstate.
_REFERENCE = {name: inspect.unwrap(getattr(reference, name)) for name in ("softmax", "log_softmax", "logsumexp")}

# Longest CPU row whose native softmax stays within the conformance tolerance (16 eps) unaided.
NATIVE_CPU_ROW_LIMIT = 512
# Below this many entries torch's own softmax runs where it is accurate (rows up to
# NATIVE_CPU_ROW_LIMIT): the tensor-to-array views and our dispatch cost a microsecond or two,
# which a small tensor's whole softmax may not.
FUSED_CPU_MIN_SIZE = 65536
# Under autograd, where the kernels run on their own team (not on torch's OpenMP threads: see
# fused._OpenMP), they share a forward with the team's worker from this many entries on; below,
# one thread. Torch's backward follows at once, on torch's own threads and through Python, and a
# worker just back from its share contends with both (for the cores and the GIL): measured
# (2 threads, float32, forward + backward, interleaved), (64, 1024) 198-253 us with the worker,
# 119-134 us without (torch 57-81 us); (128, 4096) 531-691 against 531-545 us; from (512, 4096)
# on the worker pays (2 202 against 2 600 us, the team against one thread throughout). On torch's
# threads the forward is shared from fused.PARALLEL_MIN_SIZE as elsewhere: (128, 4096) 584 us,
# against 685 us on one thread (torch 484 us).
AUTOGRAD_PARALLEL_MIN_SIZE = 1 << 20
_FUNCS = ("softmax", "log_softmax")


def _namespace(x: Any = None) -> Any:
    import array_api_compat.torch

    return array_api_compat.torch


def softmax(x: Any, axes: tuple[int, ...], where: Any = None, out: Any = None) -> Any:
    return _run("softmax", x, axes, where, out)


def log_softmax(x: Any, axes: tuple[int, ...], where: Any = None, out: Any = None) -> Any:
    return _run("log_softmax", x, axes, where, out)


def _run(func: str, x: Any, axes: tuple[int, ...], where: Any, out: Any) -> Any:
    # torch is imported where it is needed: on a small tensor the import statement alone is a
    # tenth of the microsecond this function may add to torch's own softmax
    if out is not None:
        import torch

        if torch.is_grad_enabled() and (x.requires_grad or out.requires_grad):
            # torch's out= variants silently drop the graph; refuse rather than lose the gradient.
            raise TypeError(f"{func}: out= cannot take part in autograd (x or out requires grad); call {func} without out=")
    if where is not None or len(axes) != 1:
        return _written(_REFERENCE[func](x, axes, where, xp=_namespace()), out)
    dim = axes[0]
    if func == "softmax" and (not x.is_cpu or (x.numel() < FUSED_CPU_MIN_SIZE and x.shape[dim] <= NATIVE_CPU_ROW_LIMIT)):
        return x.softmax(dim) if out is None else torch.softmax(x, dim, out=out)  # accurate as it is
    import torch

    if _fusible(x, out):
        if x.requires_grad and torch.is_grad_enabled():
            return _FusedFunction.apply(x, dim, func)
        return _fused(func, x, dim, out)
    if func == "log_softmax":  # precise at the max: the reference
        return _written(_REFERENCE[func](x, axes, where, xp=_namespace()), out)
    if out is None:
        return _corrected(x.softmax(dim), dim)
    return _corrected(torch.softmax(x, dim, out=out), dim)


def _written(y: Any, out: Any) -> Any:
    if out is None:
        return y
    out.copy_(y)
    return out


def _corrected(y: Any, dim: int) -> Any:
    """Native CPU softmax of long rows, with its one common error per row divided out: its own
    accurately summed total. In place unless autograd records (softmax's backward reads its own
    output). Traced by torch.compile, float32 rows are summed in float64: inductor's own
    reductions of long rows drift (18.5 eps measured on rows of 1e5)."""
    import torch

    if torch.compiler.is_compiling() and y.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return (y / y.sum(dim, keepdim=True, dtype=torch.float64)).to(y.dtype)
    s = y.sum(dim, keepdim=True)
    return y / s if y.requires_grad else y.div_(s)


def _fusible(x: Any, out: Any) -> bool:
    """Can the fused kernels run on x's memory: a contiguous float32/float64 CPU tensor (and out),
    and :func:`kernels_may_run`?"""
    import torch

    return (
        x.dtype in (torch.float32, torch.float64)
        and x.is_contiguous()
        and (out is None or out.is_contiguous())
        and kernels_may_run(x)
    )


def kernels_may_run(x: Any) -> bool:
    """May the fused kernels compute from the CPU tensor ``x`` where torch need not see it: x on
    the CPU, nothing tracing it (torch.compile, functorch), and the kernels loaded?"""
    import torch

    return (
        x.is_cpu
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(x)
        and fused.kernels() is not None
    )


def _fused(func: str, x: Any, dim: int, out: Any = None, parallel_min_size: int | None = None) -> Any:
    """softmax or log_softmax by the fused kernels, on x's own memory (no copy), into out if given."""
    import torch

    kind = fused.SOFTMAX if func == "softmax" else fused.LOG_SOFTMAX
    y = torch.empty_like(x) if out is None else out
    if (
        dim == x.ndim - 1
        and parallel_min_size is None
        and (out is None or out is x or _apart(x, out))
        and fused.rows_at(kind, x.data_ptr(), y.data_ptr(), x.numel(), x.shape[-1], x.element_size())
    ):
        return y  # on torch's threads, from the tensors' addresses: no NumPy views to make
    a, o = x.detach().numpy(), y.detach().numpy()
    if fused.run(kind, a, (dim % x.ndim,), o, min_size=1, parallel_min_size=parallel_min_size) is None:
        with torch.no_grad():  # not the kernels' layout after all (empty): torch's kernel, corrected
            y = (
                _corrected(getattr(torch, func)(x, dim), dim)
                if func == "softmax"
                else _REFERENCE[func](x, (dim % x.ndim,), xp=_namespace())
            )
        return _written(y, out)
    return y


def _apart(a: Any, b: Any) -> bool:
    """Do the contiguous tensors a and b share no memory?"""
    start_a, start_b = a.data_ptr(), b.data_ptr()
    return start_a + a.nbytes <= start_b or start_b + b.nbytes <= start_a


def _function() -> Any:
    import torch

    class FusedFunction(torch.autograd.Function):
        """The fused kernels forward, torch's own backward (from the output alone, as torch's)."""

        @staticmethod
        def forward(ctx: Any, x: Any, dim: int, func: str) -> Any:
            own_team = fused.openmp_threads() is None
            y = _fused(func, x, dim, parallel_min_size=AUTOGRAD_PARALLEL_MIN_SIZE if own_team else None)
            ctx.save_for_backward(y)
            ctx.dim, ctx.func = dim, func
            return y

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (y,) = ctx.saved_tensors
            if ctx.func == "softmax":
                return torch._softmax_backward_data(g, y, ctx.dim, y.dtype), None, None
            return torch._log_softmax_backward_data(g, y, ctx.dim, y.dtype), None, None

    return FusedFunction


class _Lazy:
    """The autograd Function, defined when first used (defining it imports torch)."""

    _cls: Any = None

    def apply(self, *args: Any) -> Any:
        if _Lazy._cls is None:
            _Lazy._cls = _function()
        return _Lazy._cls.apply(*args)


_FusedFunction = _Lazy()


def logsumexp(x: Any, axes: tuple[int, ...], where: Any = None, keepdims: bool = False) -> Any:
    import torch

    if (
        where is None
        and not (x.requires_grad and torch.is_grad_enabled())
        and x.numel() >= FUSED_CPU_MIN_SIZE
        and _fusible(x, None)
    ):
        r = fused.run(fused.LOGSUMEXP, x.detach().numpy(), axes)
        if r is not None:
            y = torch.from_numpy(r)
            return y if keepdims or not axes else y.squeeze(axes)
    return _REFERENCE["logsumexp"](x, axes, where, keepdims, xp=_namespace())


def weighted_logsumexp(x: Any, axes: tuple[int, ...], where: Any, keepdims: bool, b: Any, return_sign: bool) -> Any:
    return _REFERENCE["logsumexp"](x, axes, where, keepdims, b, return_sign, xp=_namespace())


def _from_numpy(a: np.ndarray, device: str | None = None) -> Any:
    import torch

    return torch.from_numpy(np.array(a, copy=True)).to(device or "cpu")


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy()


def _transposed(a: np.ndarray, device: str | None = None) -> Any:
    """The same values in a non-contiguous (transposed) view."""
    return _from_numpy(np.ascontiguousarray(np.swapaxes(a, 0, -1)), device).transpose(0, -1)


def _expanded(a: np.ndarray, device: str | None = None) -> Any:
    """A view with a 0 stride: the first entry along the last axis, repeated (``expand``)."""
    return _from_numpy(a[..., :1], device).expand(a.shape)


def _strided(a: np.ndarray, device: str | None = None) -> Any:
    """The same values every other entry of a larger tensor along the last axis."""
    return _from_numpy(np.repeat(a, 2, axis=-1), device)[..., ::2]


def _devices() -> list[str]:
    import torch

    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def _compile(f: Any) -> Any:
    import torch

    from softmax_multi import registry

    registry.list_backends()  # discovery (entry points, a lock) cannot be traced: done first
    return torch.compile(f, fullgraph=True)


def _autograd(f: Any) -> Any:
    import torch

    def gradient(x: Any, w: Any) -> Any:
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad((f(x) * w).sum(), x)
        return g

    return gradient


spec = BackendSpec(
    name="torch",
    array_types=(("torch", "Tensor"),),
    module="torch",
    namespace=_namespace,
    softmax=softmax,
    log_softmax=log_softmax,
    logsumexp=logsumexp,
    weighted_logsumexp=weighted_logsumexp,
    from_numpy=_from_numpy,
    to_numpy=_to_numpy,
    devices=_devices,
    transforms={"compile": _compile, "autograd": _autograd},
    dtypes=("float16", "bfloat16", "float32", "float64", "complex64", "complex128"),
    out=True,
    input_forms={"transposed_view": _transposed, "zero_stride_view": _expanded, "strided_view": _strided},
    accurate_sums=True,  # cascade sums on CPU, trees on CUDA
    cross_entropy=torch_loss.cross_entropy,
    linear_cross_entropy=torch_loss.linear_cross_entropy,
)
