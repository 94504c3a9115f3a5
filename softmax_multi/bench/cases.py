"""The cases of each benchmark group: for every case, the methods timed together in one run.

Our methods are named ``smx[<backend>]`` (``out=`` when they write into a preallocated array);
the others are native peers, each in its fastest configuration beside its default one: PyTorch
with ``out=`` and its threads set, ``torch.compile`` where it is faster on CPU, JAX under
``jax.jit``. ``COPY`` copies the input's bytes into a preallocated array: the bandwidth bound of a
one-pass kernel.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "COPY",
    "GRID_FUNCS",
    "GRID_SHAPES",
    "ROW_LENGTHS",
    "ROW_SIZES",
    "grid_case",
    "jax_cases",
    "overhead_cases",
    "row_cases",
    "torch_cases",
]

Methods = dict[str, Callable[[], object]]

COPY = "copy (bandwidth bound)"
GRID_SHAPES = [(10,), (1000,), (64, 1000), (1_000_000,), (1_000_000, 10), (1024, 32000), (4096, 32000), (100, 1_000_000)]
GRID_FUNCS = ("softmax", "log_softmax", "logsumexp")
ROW_LENGTHS = (8, 32, 128, 256, 512, 1000, 1024, 2048, 4096, 8192, 16384, 65536, 1_000_000)
ROW_SIZES = {"16 MiB": 16 << 20, "64 MiB": 64 << 20}  # inside the last-level cache of a small machine, and out of it
TORCH_THREADS = 2  # the benchmark machine's cores


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _ours(func: str) -> Callable[..., Any]:
    from .. import _api

    return getattr(_api, func)


# -- the grid: every shape x dtype x function, each backend against its native peers ---------------


def grid_case(shape: tuple[int, ...], dtype: str, func: str, backends: tuple[str, ...] = ("numpy", "torch", "jax")) -> Methods:
    """The methods timed together for one shape, dtype and function, along the last axis."""
    ours = _ours(func)
    x = (np.random.default_rng(0).standard_normal(shape) * 3).astype(dtype)
    sink = np.empty_like(x)
    m: Methods = {COPY: lambda: np.copyto(sink, x)}
    if "numpy" in backends:
        m["smx[numpy]"] = lambda: ours(x, axis=-1)
        if func != "logsumexp":
            out = np.empty_like(x)
            m["smx[numpy] out="] = lambda: ours(x, axis=-1, out=out)
        if func == "logsumexp":
            b = np.random.default_rng(1).random(shape).astype(dtype)
            m["smx[numpy] b="] = lambda: ours(x, axis=-1, b=b)
        if _has("scipy"):
            import scipy.special

            peer = getattr(scipy.special, func)
            m[f"scipy.special.{func}"] = lambda: peer(x, axis=-1)
            if func == "logsumexp":
                m["scipy.special.logsumexp b="] = lambda: peer(x, axis=-1, b=b)
        m["NumPy expression"] = lambda: numpy_expression(func, x)
    if "torch" in backends and _has("torch"):
        m.update(_torch_methods(func, x, ours))
    if "jax" in backends and _has("jax"):
        m.update(_jax_methods(func, x, ours))
    return m


def numpy_expression(func: str, x: np.ndarray) -> np.ndarray:
    """What one writes by hand: the max-shifted formula with NumPy ufuncs."""
    m = x.max(-1, keepdims=True)
    if func == "softmax":
        e = np.exp(x - m)
        return e / e.sum(-1, keepdims=True)
    s = np.log(np.exp(x - m).sum(-1, keepdims=True))
    return x - m - s if func == "log_softmax" else (m + s)[..., 0]


def torch_ready() -> Any:
    """PyTorch, imported, with the fused kernels ready to run on its OpenMP threads (they load in
    the background once a call finds PyTorch imported): timed calls run as a program's later ones."""
    import torch

    from ..backends import fused

    fused.wait_ready()
    return torch


def with_threads(n: int, f: Callable[[], object]) -> Callable[[], object]:
    """``f`` with torch set to ``n`` threads first (each method keeps its own setting)."""
    import torch

    def call() -> object:
        torch.set_num_threads(n)
        return f()

    return call


def _torch_methods(func: str, x: np.ndarray, ours: Callable[..., Any]) -> Methods:
    torch = torch_ready()
    t = torch.from_numpy(x)  # shares x's memory: no copy
    out = torch.empty_like(t)
    m: Methods = {"smx[torch]": with_threads(TORCH_THREADS, lambda: ours(t, axis=-1))}
    if func == "logsumexp":
        m["torch.logsumexp, 1 thread"] = with_threads(1, lambda: torch.logsumexp(t, -1))
        m[f"torch.logsumexp, {TORCH_THREADS} threads"] = with_threads(TORCH_THREADS, lambda: torch.logsumexp(t, -1))
        return m
    native = getattr(torch, func)
    m["smx[torch] out="] = with_threads(TORCH_THREADS, lambda: ours(t, axis=-1, out=out))
    m[f"torch.{func}, 1 thread"] = with_threads(1, lambda: native(t, -1))
    m[f"torch.{func}, {TORCH_THREADS} threads"] = with_threads(TORCH_THREADS, lambda: native(t, -1))
    m[f"torch.{func} out=, {TORCH_THREADS} threads"] = with_threads(TORCH_THREADS, lambda: native(t, -1, out=out))
    return m


def _jax_methods(func: str, x: np.ndarray, ours: Callable[..., Any]) -> Methods:
    import jax

    j = jax.device_put(x)
    peer: Callable[..., Any] = getattr(jax.nn, func)
    mine = jax.jit(lambda a: ours(a, axis=-1))
    theirs = jax.jit(lambda a: peer(a, axis=-1))
    return {"smx[jax] jit": lambda: mine(j).block_until_ready(), f"jax.nn.{func} jit": lambda: theirs(j).block_until_ready()}


# -- rows: every row length at two sizes, against torch's out= kernel and the copy -----------------


def row_cases(
    lengths: tuple[int, ...] = ROW_LENGTHS,
    sizes: dict[str, int] = ROW_SIZES,
    dtypes: tuple[str, ...] = ("float32", "float64"),
    funcs: tuple[str, ...] = ("softmax", "log_softmax"),
    compiled: bool = True,
) -> list[tuple[dict[str, Any], Methods]]:
    """(case, methods) for every row length x size x dtype x function: ours with ``out=``, torch
    with ``out=`` on TORCH_THREADS threads (and ``torch.compile(torch.softmax)``, CPU inductor),
    and the one-thread copy of the same bytes into a preallocated array."""
    cases = []
    for size_name, nbytes in sizes.items():
        for dtype in dtypes:
            for n in lengths:
                rows = max(1, nbytes // (n * np.dtype(dtype).itemsize))
                for func in funcs:
                    cases.append(
                        (
                            {"size": size_name, "dtype": dtype, "func": func, "n": n, "rows": rows},
                            lambda n=n, rows=rows, dtype=dtype, func=func: _row_methods(func, rows, n, dtype, compiled),
                        )
                    )
    return cases  # type: ignore[return-value]


def _row_methods(func: str, rows: int, n: int, dtype: str, compiled: bool) -> Methods:
    ours = _ours(func)
    x = (np.random.default_rng(n).standard_normal((rows, n)) * 3).astype(dtype)
    out, sink = np.empty_like(x), np.empty_like(x)
    m: Methods = {
        "smx[numpy] out=": lambda: ours(x, axis=-1, out=out),
        "smx[numpy]": lambda: ours(x, axis=-1),
        COPY: lambda: np.copyto(sink, x),
    }
    if _has("torch"):
        torch = torch_ready()
        t, o = torch.from_numpy(x), torch.from_numpy(out)
        native = getattr(torch, func)
        m[f"torch.{func} out=, {TORCH_THREADS} threads"] = with_threads(TORCH_THREADS, lambda: native(t, -1, out=o))
        if compiled:
            c: Callable[[Any], Any] = torch.compile(lambda a: native(a, -1))
            m[f"torch.compile(torch.{func}), {TORCH_THREADS} threads"] = with_threads(TORCH_THREADS, lambda: c(t))
    return m


# -- dispatch overhead on tiny inputs, against calling the native function directly ----------------


def overhead_cases() -> dict[str, Methods]:
    """Small inputs, where dispatch and argument checks are most of what there is to measure.
    Each case maps method names to callables; "smx" is ours, the others are the native peers."""
    from .._api import softmax

    x = np.random.default_rng(0).standard_normal(10)

    cases: dict[str, Methods] = {
        "numpy (10,) float64": {"smx": lambda: softmax(x), "plain NumPy expression": lambda: numpy_expression("softmax", x)}
    }
    if _has("torch"):
        torch = torch_ready()
        t = torch.from_numpy(x.astype(np.float32))
        cases["torch (10,) float32"] = {"smx": lambda: softmax(t), "torch.softmax": lambda: torch.softmax(t, -1)}
    if _has("jax"):
        import jax

        j = jax.numpy.asarray(x.astype(np.float32))
        m = jax.numpy.asarray(np.random.default_rng(1).standard_normal((64, 1000)).astype(np.float32))
        ours_jit = jax.jit(softmax)
        peer_jit = jax.jit(jax.nn.softmax)
        cases["jax eager (10,) float32"] = {
            "smx": lambda: softmax(j).block_until_ready(),
            "jax.nn.softmax": lambda: jax.nn.softmax(j).block_until_ready(),
        }
        cases["jax jit (64, 1000) float32"] = {
            "smx": lambda: ours_jit(m).block_until_ready(),
            "jax.nn.softmax": lambda: peer_jit(m).block_until_ready(),
        }
    return cases


# -- PyTorch: the backend against torch.softmax, with and without out= and autograd ----------------

TORCH_SHAPES = [
    (64, 512),
    (64, 1024),
    (128, 4096),
    (2048, 1000),
    (1024, 2048),
    (512, 4096),
    (256, 16384),
    (1024, 32000),
    (4096, 32000),
]


def torch_cases(threads: int = TORCH_THREADS) -> dict[str, Methods]:
    """PyTorch float32 softmax on CPU: the backend (``smx``) against torch's own kernel, allocating,
    with ``out=``, and forward + backward under autograd."""
    from .._api import softmax

    torch = torch_ready()
    cases: dict[str, Methods] = {}
    for shape in TORCH_SHAPES:
        x = torch.randn(shape) * 3
        out = torch.empty_like(x)
        g = torch.randn(shape)
        xg = x.clone().requires_grad_(True)
        tag = f"{shape} float32, {threads} threads"
        cases[f"torch {tag}"] = {
            "smx": with_threads(threads, functools.partial(softmax, x)),
            "torch.softmax": with_threads(threads, functools.partial(torch.softmax, x, -1)),
        }
        cases[f"torch out= {tag}"] = {
            "smx": with_threads(threads, functools.partial(softmax, x, out=out)),
            "torch.softmax out=": with_threads(threads, functools.partial(torch.softmax, x, -1, out=out)),
        }

        def backward(f: Callable[[Any], Any], xg: Any = xg, g: Any = g) -> Callable[[], object]:
            return lambda: torch.autograd.grad(f(xg), xg, g)

        cases[f"torch autograd {tag}"] = {
            "smx": with_threads(threads, backward(softmax)),
            "torch.softmax": with_threads(threads, backward(lambda a: torch.softmax(a, -1))),
        }
    return cases


def _ready(f: Callable[[Any], Any], x: Any) -> object:
    return f(x).block_until_ready()


JAX_SHAPES = [(64, 1000), (1024, 4096), (256, 32000)]


def jax_cases() -> dict[str, Methods]:
    """JAX float32 softmax and log_softmax under ``jax.jit``, forward alone and ``jax.grad`` of a
    weighted sum (forward + backward), against ``jax.nn``'s."""
    import jax
    import jax.numpy as jnp

    from .. import _api

    cases: dict[str, Methods] = {}
    for shape in JAX_SHAPES:
        rng = np.random.default_rng(0)
        x = jax.device_put((rng.standard_normal(shape) * 3).astype(np.float32))
        w = jax.device_put(rng.standard_normal(shape).astype(np.float32))
        for func in ("softmax", "log_softmax"):
            pair = {"smx": getattr(_api, func), f"jax.nn.{func}": getattr(jax.nn, func)}
            forward = {k: jax.jit(f) for k, f in pair.items()}
            grad = {k: jax.jit(jax.grad(lambda a, f=f, w=w: jnp.sum(f(a) * w))) for k, f in pair.items()}
            for what, fs in (("jit", forward), ("grad", grad)):
                cases[f"jax {what} {func} {shape} float32"] = {k: functools.partial(_ready, f, x) for k, f in fs.items()}
    return cases


# -- the first call of a fresh process ---------------------------------------------------------------

FIRST_CALL = """
import time
t0 = time.perf_counter()
import softmax_multi as smx
t1 = time.perf_counter()
import numpy as np
x = np.ones((1000, 1000), np.float32)
t2 = time.perf_counter()
smx.softmax(x)
t3 = time.perf_counter()
from softmax_multi.backends import fused
fused.wait_ready()
t4 = time.perf_counter()
print(t1 - t0, t3 - t2, t4 - t0)
"""


def first_call(rounds: int = 5) -> list[tuple[str, float, float, float]]:
    """(cache, import softmax_multi, its first (1000, 1000) float32 softmax, kernels ready) in
    seconds, the median of ``rounds`` fresh processes: with Numba's cache of the kernels warm, and
    empty (a fresh NUMBA_CACHE_DIR for each process).

    Python's own bytecode cache is warm in both, as in any installation (pip compiles it when it
    installs a package; an editable install writes it on the first import): the processes run
    without PYTHONDONTWRITEBYTECODE, which would leave this package's modules to be compiled from
    source by every process (import + first call 0.168 s against 0.091 s, medians of 7, measured
    here)."""
    import statistics
    import subprocess
    import sys
    import tempfile

    rows = []
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTMAX_MULTI_FUSED", "PYTHONDONTWRITEBYTECODE")}
    subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True, capture_output=True)  # both caches are warm now
    for cache in ("warm", "empty"):
        samples = []
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                run_env = env if cache == "warm" else {**env, "NUMBA_CACHE_DIR": tmp}
                out = subprocess.run(
                    [sys.executable, "-c", FIRST_CALL], env=run_env, check=True, capture_output=True, text=True
                ).stdout
                samples.append([float(v) for v in out.split()])
        columns = list(zip(*samples))
        rows.append((cache, *(statistics.median(c) for c in columns)))
    return rows


def _count(n: int) -> str:
    return f"{n:.0e}".replace("+0", "") if n >= 100_000 and n % 100_000 == 0 else str(n)


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "(" + ", ".join(_count(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def size_of(shape: tuple[int, ...] | list[int]) -> int:
    return math.prod(shape)
