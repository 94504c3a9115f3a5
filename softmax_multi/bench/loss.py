"""The cross-entropy group: ``linear_cross_entropy`` against the naive loss of the whole logits
and torch's own chunked ``F.linear_cross_entropy``, forward and backward, in time and memory.

Time: the methods of one framework and reduction sampled round-robin in one run (medians).
Memory: PyTorch and NumPy in a fresh process per method, the peak resident memory (``VmHWM``,
reset through ``/proc/self/clear_refs``) above what the process held once its inputs were made
and a small warm-up had run; JAX by the compiled program's own account,
``jit(...).lower(...).compile().memory_analysis().temp_size_in_bytes``. Errors: the largest
difference from the naive loss (and gradients), in units of float32's eps times the naive
result's largest magnitude.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .timing import time_interleaved

__all__ = ["LOSS_TARGETS", "SIZES", "loss_table", "run_cross_entropy"]

# (N, D, V) of each framework's targets (the sizes).
SIZES = {"torch": (4096, 1024, 32000), "jax": (2048, 512, 32000), "numpy": (4096, 1024, 32000)}
THREADS = 2
NAIVE = "naive"
# The naive loss compiled by torch.compile: its fastest configuration on PyTorch. Its memory is not
# measured: a fresh process compiles again inside the measured call, for the full-size shapes.
NAIVE_COMPILED = "naive (torch.compile)"
OURS = "smx.linear_cross_entropy"
TORCH_CHUNKED = "F.linear_cross_entropy chunked"
EPS32 = float(np.finfo(np.float32).eps)


class LossTarget(NamedTuple):
    framework: str
    reduction: str
    measure: str
    """"time" (ours / naive), "memory" (ours / naive), "MiB" (ours), or "error" (eps)."""
    goal: float
    why: str


LOSS_TARGETS = [
    LossTarget("torch", "sum", "MiB", 200, "one tile beside the gradients (141 MiB of them)"),
    LossTarget("torch", "sum", "time", 1.1, "the gradients formed in the forward pass: three matrix products, as the naive loss"),
    LossTarget("torch", "none", "MiB", 200, "one tile beside the gradients"),
    LossTarget("torch", "none", "time", 1.35, "the backward recomputes each tile: a fourth matrix product"),
    LossTarget("torch", "sum", "error", 16, "loss and gradients within the float32 tolerance of the naive ones"),
    LossTarget("torch", "none", "error", 16, "loss and gradients within the float32 tolerance of the naive ones"),
    LossTarget("jax", "sum", "memory", 1 / 8, "compiled temporaries: tiles, not the logits"),
    LossTarget("jax", "sum", "time", 1.1, "three matrix products, as the naive loss"),
    LossTarget("jax", "none", "memory", 1 / 8, "compiled temporaries: tiles, not the logits"),
    LossTarget("jax", "none", "time", 1.35, "the backward recomputes each tile"),
    LossTarget("jax", "sum", "error", 16, "within the float32 tolerance of the naive loss"),
    LossTarget("numpy", "sum", "memory", 1 / 8, "one tile buffer of logits, reused"),
    LossTarget("numpy", "sum", "time", 1.0, "the product by chunks of classes, a statistics pass per tile, no page faults"),
    LossTarget("numpy", "sum", "error", 16, "within the float32 tolerance of the naive loss"),
]


def _inputs(n: int, d: int, v: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h = (rng.standard_normal((n, d), dtype=np.float32) * 0.5).astype(np.float32)
    w = (rng.standard_normal((v, d), dtype=np.float32) * (1 / np.sqrt(d))).astype(np.float32)
    y = rng.integers(0, v, n)
    g = rng.random(n, dtype=np.float32)  # the incoming gradient of the per-example losses
    return h, w, y, g


def torch_methods(n: int, d: int, v: int, reduction: str) -> dict[str, Callable[[], Any]]:
    """Forward and backward of each method; each call returns (loss, dh, dW)."""
    import torch.nn.functional as F

    import softmax_multi as smx

    from .cases import torch_ready

    torch = torch_ready()
    torch.set_num_threads(THREADS)
    h_np, w_np, y_np, g_np = _inputs(n, d, v)
    h, w, y, g = (torch.from_numpy(a) for a in (h_np, w_np, y_np, g_np))
    losses: dict[str, Callable[[Any, Any], Any]] = {
        NAIVE: lambda hh, ww: F.cross_entropy(hh @ ww.T, y, reduction=reduction),
        OURS: lambda hh, ww: smx.linear_cross_entropy(hh, ww, y, reduction=reduction),
    }
    losses[NAIVE_COMPILED] = torch.compile(losses[NAIVE])
    if hasattr(F, "linear_cross_entropy"):
        options = torch.nn.LinearCrossEntropyOptions()
        losses[TORCH_CHUNKED] = lambda hh, ww: F.linear_cross_entropy(hh, ww, y, reduction=reduction, options=options)

    def step(f: Callable[[Any, Any], Any]) -> Callable[[], Any]:
        def call() -> Any:
            hh, ww = h.detach().requires_grad_(True), w.detach().requires_grad_(True)
            value = f(hh, ww)
            value.backward(g if reduction == "none" else None)
            return value.detach(), hh.grad, ww.grad

        return call

    return {name: step(f) for name, f in losses.items()}


def jax_methods(n: int, d: int, v: int, reduction: str) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    """``jit(value_and_grad)`` of each method, and its compiled temporary memory in MiB."""
    import jax
    import jax.numpy as jnp

    import softmax_multi as smx

    h_np, w_np, y_np, g_np = _inputs(n, d, v)
    h, w, y, g = (jnp.asarray(a) for a in (h_np, w_np, y_np.astype(np.int32), g_np))

    def reduce(per_example: Any) -> Any:
        return jnp.sum(per_example * g) if reduction == "none" else jnp.sum(per_example)

    def naive(hh: Any, ww: Any) -> Any:
        z = hh @ ww.T
        return reduce(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0])

    def ours(hh: Any, ww: Any) -> Any:
        per_example = smx.linear_cross_entropy(hh, ww, y, reduction="none" if reduction == "none" else "sum")
        return reduce(per_example) if reduction == "none" else per_example

    methods: dict[str, Callable[[], Any]] = {}
    memory: dict[str, float] = {}
    for name, f in ((NAIVE, naive), (OURS, ours)):
        compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
        analysis = compiled.lower(h, w).compile().memory_analysis()
        memory[name] = math.nan if analysis is None else analysis.temp_size_in_bytes / 2**20
        methods[name] = functools.partial(_ready, compiled, h, w)
    return methods, memory


def _ready(f: Callable[..., Any], *args: Any) -> Any:
    import jax

    return jax.block_until_ready(f(*args))


def numpy_methods(n: int, d: int, v: int, reduction: str) -> dict[str, Callable[[], Any]]:
    """Forward only: the naive loss of the whole logits, by our log_softmax kernel and by SciPy."""
    import softmax_multi as smx

    h, w, y, _ = _inputs(n, d, v)
    rows = np.arange(n)

    def naive_kernel() -> Any:
        log_p = smx.log_softmax(h @ w.T)
        return -np.sum(log_p[rows, y], dtype=np.float64).astype(np.float32)

    methods: dict[str, Callable[[], Any]] = {NAIVE: naive_kernel}
    try:
        from scipy.special import logsumexp
    except ImportError:
        pass
    else:

        def naive_scipy() -> Any:
            z = h @ w.T
            return np.sum(logsumexp(z, axis=1) - z[rows, y], dtype=np.float64).astype(np.float32)

        methods["naive (scipy.special.logsumexp)"] = naive_scipy
    methods[OURS] = lambda: smx.linear_cross_entropy(h, w, y, reduction=reduction)
    return methods


_MEMORY = """
import json, sys
from softmax_multi.backends import fused
from softmax_multi.bench import loss as b
framework, method, reduction, n, d, v = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
make = b.torch_methods if framework == "torch" else b.numpy_methods
make(64, 64, 512, reduction)[method]()  # threads, kernels and lazy imports: not the loss's memory
fused.wait_ready()  # as in the timed runs: the kernels that load in the background, loaded
call = make(n, d, v, reduction)[method]
base = b._status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
call()
print(json.dumps(b._status("VmHWM") - base))
"""


def _status(field: str) -> float:
    """A line of /proc/self/status, in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory(framework: str, method: str, reduction: str, n: int, d: int, v: int) -> float | None:
    """MiB above the inputs at the peak of one call in a fresh process; None where Linux's
    /proc cannot say."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY, framework, method, reduction, str(n), str(d), str(v)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory of {framework} {method} {reduction}: {done.stderr.strip().splitlines()[-1:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _error(ours: Any, naive: Any) -> float:
    """The largest difference of (loss, gradients...) from the naive ones, in eps x their magnitude."""
    worst = 0.0
    for got, expected in zip(ours, naive):
        a, b = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
        scale = max(float(np.max(np.abs(b))), np.finfo(np.float32).tiny)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale / EPS32)
    return worst


def run_cross_entropy(
    rounds: int = 3,
    frameworks: tuple[str, ...] = ("numpy", "jax", "torch"),
    scale: float = 1.0,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every method of every framework and reduction: seconds, memory, error against the naive one.
    ``scale`` shrinks N and V (tests run the group small). NumPy first: once PyTorch's and XLA's
    thread pools have run in this process, their spinning threads slow NumPy's BLAS down."""
    from softmax_multi.backends import fused

    fused.wait_ready()  # the NumPy and PyTorch losses read their tiles by the kernels, once loaded
    todo = [(f, r) for f in frameworks for r in (("sum", "none") if f != "numpy" else ("sum",)) if _installed(f)]
    results = []
    for i, (framework, reduction) in enumerate(todo):
        n, d, v = (max(8, int(s * scale)) if k != 1 else s for k, s in enumerate(SIZES[framework]))
        if progress:
            progress(i, len(todo), f"{framework} {reduction} N={n} D={d} V={v}")
        memory: dict[str, float | None]
        if framework == "jax":
            methods, compiled_memory = jax_methods(n, d, v, reduction)
            memory = dict(compiled_memory)
        else:
            methods = (torch_methods if framework == "torch" else numpy_methods)(n, d, v, reduction)
            memory = {name: peak_memory(framework, name, reduction, n, d, v) for name in methods if name != NAIVE_COMPILED}
        outputs = {name: f() for name, f in methods.items()}
        times = time_interleaved(methods, rounds=rounds, number=1, warmup=1, settle=0.0, pause=0.05)
        for name in methods:
            results.append(
                {
                    "framework": framework,
                    "reduction": reduction,
                    "method": name,
                    "shape": [n, d, v],
                    "seconds": times[name],
                    "memory_mib": memory.get(name),
                    "memory_kind": "compiled temporaries" if framework == "jax" else "peak above inputs",
                    "error_eps": _error(_flat(outputs[name]), _flat(outputs[NAIVE])),
                }
            )
    if progress:
        progress(len(todo), len(todo), "done")
    return results


def _flat(output: Any) -> list[Any]:
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], tuple):  # JAX: (value, (dh, dW))
        return [output[0], *output[1]]
    return list(output) if isinstance(output, tuple) else [output]


def _installed(framework: str) -> bool:
    import importlib.util

    return framework == "numpy" or importlib.util.find_spec(framework) is not None


def loss_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """The measurements, a row per method, and the targets met or missed."""
    header = [
        "framework",
        "reduction",
        "method",
        "N, D, V",
        "time",
        "time / naive",
        "memory (MiB)",
        "memory / naive",
        "error (eps)",
    ]
    rows: list[list[str]] = []
    by_case: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in results:
        by_case.setdefault((r["framework"], r["reduction"]), {})[r["method"]] = r
    for (framework, reduction), methods in by_case.items():
        naive = _fastest_naive(methods)
        for name, r in methods.items():
            mem = r["memory_mib"]
            rows.append(
                [
                    framework,
                    reduction,
                    name,
                    "x".join(map(str, r["shape"])),
                    f"{r['seconds']:.3f} s",
                    f"{r['seconds'] / naive['seconds']:.2f}",
                    "-" if mem is None else f"{mem:.0f}",
                    "-" if mem is None or not naive["memory_mib"] else f"{mem / naive['memory_mib']:.3f}",
                    f"{r['error_eps']:.1f}",
                ]
            )
    found = [["framework", "reduction", "measure", "goal", "measured", "why", ""]]
    for t in LOSS_TARGETS:
        case = by_case.get((t.framework, t.reduction))
        if not case or OURS not in case:
            continue
        ours, naive = case[OURS], _fastest_naive(case)
        if t.measure == "time":
            value, goal = ours["seconds"] / naive["seconds"], f"<= {t.goal:g}x naive"
        elif t.measure == "memory":
            if ours["memory_mib"] is None or not naive["memory_mib"]:
                continue
            value, goal = ours["memory_mib"] / naive["memory_mib"], f"<= {t.goal:.3f} of naive"
        elif t.measure == "MiB":
            if ours["memory_mib"] is None:
                continue
            value, goal = ours["memory_mib"], f"<= {t.goal:g} MiB"
        else:
            value, goal = ours["error_eps"], f"<= {t.goal:g} eps"
        found.append([t.framework, t.reduction, t.measure, goal, f"{value:.3f}", t.why, "met" if value <= t.goal else "MISSED"])
    return header, rows, found


def _fastest_naive(methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The naive loss's fastest configuration (NumPy: our kernel's or SciPy's logsumexp)."""
    naive = [r for name, r in methods.items() if name.startswith(NAIVE)]
    return min(naive, key=lambda r: r["seconds"])
