"""PyTorch backend: CPU and CUDA tensors, autograd, torch.compile; accurate at every row length.

PyTorch's CPU softmax kernels sum each row in float sequentially across vector lanes, so their
error grows with the row (about 120 eps at 32 000 and 1 500 eps at 1e6 in float32). Rows longer
than ``NATIVE_CPU_ROW_LIMIT`` therefore run the NumPy backend's fused kernels on the tensor's own
memory, when nothing needs torch to see the computation. Otherwise (autograd, torch.compile,
functorch, no Numba) a row's error is one common factor, its normaliser, so dividing the native
result by its own (cascade-summed, accurate) sum fixes it at the cost of one read and one pass.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from softmax_multi import reference
from softmax_multi.backends import fused
from softmax_multi.backends.numpy_backend import log_softmax as log_softmax_np
from softmax_multi.backends.numpy_backend import softmax as softmax_np
from softmax_multi.registry import BackendSpec

# The reference implementation without its NumPy-warning filter: torch computes without NumPy,
# and torch.compile cannot trace np.errstate.
_REFERENCE = {name: inspect.unwrap(getattr(reference, name)) for name in ("softmax", "log_softmax", "logsumexp")}

# Longest CPU row whose native softmax stays within the conformance tolerance (16 eps) unaided.
NATIVE_CPU_ROW_LIMIT = 512
# From this many entries on, the fused kernels beat torch's own plus the correction pass. Below
# it torch's kernel wins (its output stays in cache, and its OpenMP threads, still spinning after
# the previous torch call, take the cores our threads would use): measured interleaved with
# torch.softmax on 2 threads, (256, 16384): fused 5.6 ms, torch 2.7 ms; (1024, 8192): 12.5 ms
# against 15.8 ms; (4096, 32000): 122 ms against 276 ms.
FUSED_MIN_SIZE = 1 << 23


def _namespace(x: Any = None) -> Any:
    import array_api_compat.torch

    return array_api_compat.torch


def softmax(x: Any, axes: tuple[int, ...], where: Any = None, out: Any = None) -> Any:
    if out is not None:
        return _into(out, "softmax", x, axes, where)
    if where is not None or len(axes) != 1:
        return _REFERENCE["softmax"](x, axes, where, xp=_namespace())
    dim = axes[0]
    if x.shape[dim] <= NATIVE_CPU_ROW_LIMIT or not x.is_cpu:
        return x.softmax(dim)  # the method: no framework import on the hot path
    y = _fused(softmax_np, x, dim)
    return y if y is not None else _corrected(x.softmax(dim), dim)


def log_softmax(x: Any, axes: tuple[int, ...], where: Any = None, out: Any = None) -> Any:
    """torch's own log_softmax takes log(sum) of 1 + a rest that rounds away when one entry
    dominates, so that its value at the max is 0 instead of -log1p(rest): the fused kernels (CPU,
    where torch need not see the computation) or the reference, which keep it."""
    if out is not None:
        return _into(out, "log_softmax", x, axes, where)
    if where is None and len(axes) == 1:
        y = _fused(log_softmax_np, x, axes[0])
        if y is not None:
            return y
    return _REFERENCE["log_softmax"](x, axes, where, xp=_namespace())


def _corrected(y: Any, dim: int) -> Any:
    """Native CPU softmax of long rows, with its one common error per row divided out: its own
    accurately summed total. In place unless autograd records (softmax's backward reads its own
    output)."""
    s = y.sum(dim, keepdim=True)
    return y / s if y.requires_grad else y.div_(s)


def _fused(kernel: Any, x: Any, dim: int, out: Any = None) -> Any:
    """The NumPy backend's fused kernels run on a CPU tensor's own memory (no copy), when nothing
    needs torch to see the computation: no autograd recording, no torch.compile tracing, no
    functorch transform. Faster than torch's kernel and accurate; None when it does not apply."""
    import torch

    if (
        x.numel() < FUSED_MIN_SIZE
        or x.dtype not in (torch.float32, torch.float64)
        or (x.requires_grad and torch.is_grad_enabled())
        or torch.compiler.is_compiling()
        or torch._C._functorch.is_functorch_wrapped_tensor(x)
        or not x.is_contiguous()
        or fused.kernels() is None
    ):
        return None
    a = x.detach().numpy()
    y = kernel(a, (dim % x.ndim,), None, None if out is None else out.detach().numpy())
    return out if out is not None else torch.from_numpy(y)


def _into(out: Any, func: str, x: Any, axes: tuple[int, ...], where: Any) -> Any:
    """softmax or log_softmax written into out: torch's own out= kernels, then the same row fix."""
    import torch

    if torch.is_grad_enabled() and (x.requires_grad or out.requires_grad):
        # torch's out= variants silently drop the graph; refuse rather than lose the gradient.
        raise TypeError(f"{func}: out= cannot take part in autograd (x or out requires grad); call {func} without out=")
    if where is not None or len(axes) != 1:
        out.copy_(_REFERENCE[func](x, axes, where, xp=_namespace()))
        return out
    dim = axes[0]
    kernel = softmax_np if func == "softmax" else log_softmax_np
    if out.is_contiguous() and _fused(kernel, x, dim, out) is not None:
        return out
    if func == "log_softmax":  # precise at the max: see log_softmax
        out.copy_(_REFERENCE[func](x, axes, where, xp=_namespace()))
        return out
    if x.shape[dim] <= NATIVE_CPU_ROW_LIMIT or not x.is_cpu:
        return torch.softmax(x, dim, out=out)
    return _corrected(torch.softmax(x, dim, out=out), dim)


def logsumexp(x: Any, axes: tuple[int, ...], where: Any = None, keepdims: bool = False) -> Any:
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
)
