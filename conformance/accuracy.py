"""The accuracy table: each backend's largest error against the long-double oracle, by row length
(``softmax-multi accuracy``; docs/accuracy.md shows a run)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from softmax_multi import _api, registry
from softmax_multi.backends import fused

from . import oracle

__all__ = ["LENGTHS", "accuracy_table"]

LENGTHS = (10_000, 100_000, 1_000_000, 10_000_000)


def _through(f: Callable[..., Any], from_numpy: Callable[..., Any], to_numpy: Callable[..., Any]) -> Callable[[np.ndarray], Any]:
    return lambda a: np.asarray(to_numpy(f(from_numpy(a))))


def accuracy_table(lengths: tuple[int, ...] = LENGTHS, func: str = "softmax") -> list[list[str]]:
    """Largest float32 error of ``func``, in eps, of every ready backend (and PyTorch's own kernel)
    against the long-double oracle, for ``x ~ N(0, 3^2)`` rows of each length (2M entries each).
    The fused kernels are loaded first: the table shows what a running program gets, not the
    ufunc path that serves the calls of a process's first second."""
    fused.wait_ready()
    methods: dict[str, Callable[[np.ndarray], Any]] = {}
    ours = getattr(_api, func)
    for row in registry.list_backends():
        spec = registry.get_backend(row.name)
        to_numpy, from_numpy = spec.to_numpy, spec.from_numpy
        if row.status == "ready" and from_numpy is not None and to_numpy is not None:
            methods[row.name] = _through(ours, from_numpy, to_numpy)
    if importlib.util.find_spec("torch") and func in ("softmax", "log_softmax"):
        import torch

        native = getattr(torch, func)
        methods[f"torch.{func} (native peer)"] = lambda a: native(torch.from_numpy(a), -1).numpy()
    truth_of = getattr(oracle, func)
    table = []
    for n in lengths:
        x = (np.random.default_rng(n).standard_normal((max(1, 2_000_000 // n), n)) * 3).astype(np.float32)
        truth = truth_of(x, (1,))
        errors = [oracle.ulp_error(f(x), truth, "float32", log_scale=func != "softmax") for f in methods.values()]
        table.append([f"{n:.0e}".replace("+0", "")] + [f"{e:.1f}" for e in errors])
    return [["row length", *methods], *table]
