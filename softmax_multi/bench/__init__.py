"""The benchmark: our functions against each framework's fastest native configuration, measured
interleaved in one run (``softmax-multi bench``).

Speed is a ratio measured in one run, never an absolute number compared across runs. Groups:

* ``grid``: every shape x dtype x function of GRID_SHAPES, each backend against its peers;
* ``rows``: every row length of ROW_LENGTHS at 16 and 64 MiB, against torch's ``out=`` kernel
  (eager and ``torch.compile``d) and a plain copy;
* ``overhead``: tiny inputs, where dispatch is what there is to measure;
* ``torch``: the PyTorch backend against ``torch.softmax``, with and without ``out=``, and under
  autograd;
* ``jax``: softmax and log_softmax under ``jax.jit`` and ``jax.grad`` against ``jax.nn``'s;
* ``first-call``: fresh processes, import and first call, with Numba's cache warm and empty.

``timing`` times, ``cases`` builds what is timed, ``targets`` says what is aimed at and why,
``report`` prints and draws.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import cases, report, targets
from .cases import (
    COPY,
    GRID_FUNCS,
    GRID_SHAPES,
    ROW_LENGTHS,
    first_call,
    grid_case,
    jax_cases,
    overhead_cases,
    row_cases,
    torch_cases,
)
from .report import grid_table, plot_grid, row_table
from .targets import FIRST_CALL_LIMITS, GRID_TARGETS, JAX_TARGETS, ROW_TARGETS, TORCH_TARGETS, evaluate, evaluate_first_call
from .timing import time_interleaved

__all__ = [
    "COPY",
    "FIRST_CALL_LIMITS",
    "GRID_FUNCS",
    "GRID_SHAPES",
    "GRID_TARGETS",
    "JAX_TARGETS",
    "ROW_LENGTHS",
    "ROW_TARGETS",
    "TORCH_TARGETS",
    "cases",
    "evaluate",
    "evaluate_first_call",
    "first_call",
    "grid_case",
    "grid_table",
    "jax_cases",
    "overhead_cases",
    "plot_grid",
    "report",
    "row_cases",
    "row_table",
    "run_grid",
    "run_group",
    "run_jax",
    "run_rows",
    "run_torch",
    "targets",
    "time_interleaved",
    "torch_cases",
]

Progress = Callable[[int, int, str], None]


def run_grid(
    shapes: list[tuple[int, ...]] = GRID_SHAPES,
    dtypes: tuple[str, ...] = ("float32", "float64"),
    funcs: tuple[str, ...] = GRID_FUNCS,
    backends: tuple[str, ...] = ("numpy", "torch", "jax"),
    rounds: int = 7,
    progress: Progress | None = None,
    settle: float = 0.03,
) -> list[dict[str, Any]]:
    """Time every case of the grid; one dict per case: shape, dtype, func, bytes, seconds per method."""
    todo = [(s, d, f) for s in shapes for d in dtypes for f in funcs]
    results = []
    for i, (shape, dtype, func) in enumerate(todo):
        if progress:
            progress(i, len(todo), f"{shape} {dtype} {func}")
        methods = grid_case(shape, dtype, func, backends)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        # Big inputs: one call per sample, fewer warm-ups; small ones: enough calls for 20 ms.
        times = time_interleaved(methods, rounds=rounds, warmup=1 if nbytes > 1 << 26 else 3, settle=settle)
        results.append({"shape": list(shape), "dtype": dtype, "func": func, "bytes": nbytes, "seconds": times})
        del methods
        gc.collect()
    if progress:
        progress(len(todo), len(todo), "done")
    return results


def run_rows(rounds: int = 7, progress: Progress | None = None, settle: float = 0.03, **select: Any) -> list[dict[str, Any]]:
    """Time the rows sweep (``select``: lengths, sizes, dtypes, funcs, compiled, as row_cases)."""
    todo = row_cases(**select)
    results = []
    for i, (case, make) in enumerate(todo):
        if progress:
            progress(i, len(todo), f"{case['size']} {case['dtype']} {case['func']} rows of {case['n']}")
        methods = make()  # type: ignore[operator]
        results.append({**case, "seconds": time_interleaved(methods, rounds=rounds, settle=settle)})
        del methods
        gc.collect()
    if progress:
        progress(len(todo), len(todo), "done")
    return results


def run_torch(rounds: int = 21, settle: float = 0.03) -> list[dict[str, Any]]:
    """The PyTorch group."""
    return _run_named(torch_cases(), rounds, settle)


def run_jax(rounds: int = 21, settle: float = 0.03) -> list[dict[str, Any]]:
    """The JAX group."""
    return _run_named(jax_cases(), rounds, settle)


def _run_named(named: dict[str, Any], rounds: int, settle: float) -> list[dict[str, Any]]:
    """Time each named case; the shape in its name, as entries, is kept for the targets."""
    results = []
    for name, methods in named.items():
        shape = tuple(int(n) for n in name.split("(")[1].split(")")[0].split(","))
        results.append(
            {"case": name, "entries": math.prod(shape), "seconds": time_interleaved(methods, rounds=rounds, settle=settle)}
        )
    return results


def run_group(group: str = "overhead", rounds: int = 21, settle: float = 0.03) -> list[tuple[str, str, float, float]]:
    """``(case, peer, our seconds, peer seconds)`` for every case of the overhead group."""
    rows: list[tuple[str, str, float, float]] = []
    for case, methods in overhead_cases().items():
        times = time_interleaved(methods, rounds=rounds, settle=settle)
        ours = times.pop("smx")
        rows.extend((case, peer, ours, t) for peer, t in times.items())
    return rows
