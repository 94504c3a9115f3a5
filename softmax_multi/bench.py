"""Benchmark: our functions against native peers, measured interleaved in one run.

Methods are timed round-robin (A, B, C, A, B, C, ...) so that machine drift hits them alike; each
sample times ``number`` calls, and the median of the samples is reported. Speed is a ratio measured
in one run, never an absolute number compared across runs.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping

__all__ = [
    "GRID_SHAPES",
    "accuracy_table",
    "grid_case",
    "grid_table",
    "overhead_cases",
    "plot_grid",
    "run_grid",
    "run_group",
    "targets",
    "time_interleaved",
    "torch_row_cases",
]


def time_interleaved(
    methods: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 21,
    number: int = 0,
    warmup: int = 3,
    pause: float = 0.01,
    settle: float = 0.03,
) -> dict[str, float]:
    """Median seconds per call of each method, sampled round-robin.

    ``number`` calls make one sample; 0 picks it so that one sample of the slowest method takes
    about 20 ms. Before each sample: ``pause`` seconds idle, then, for a method whose call takes
    less than ``settle`` seconds, untimed calls of it for ``settle`` seconds, so that every
    method is timed in its steady state, as in a loop that calls it over and over:

    - The pause: PyTorch's OpenMP threads and XLA's keep spinning for a moment after a call
      returns, and would otherwise take the cores from whichever method comes next (a 2-thread
      kernel run right after ``torch.softmax`` took 4x as long here).
    - The settling: after 10 ms idle on this machine, a call finds its input evicted from the
      caches, and the second core does not run a thread at full speed until it has been busy
      for 10-20 ms: two threads on halves of a row took as long as one thread on all of it.
      One warm-up call was not enough; 20 ms of calls were.
    """
    for f in methods.values():
        for _ in range(warmup):
            f()
    once = {name: _once(f) for name, f in methods.items()}
    if number <= 0:
        number = max(1, int(0.02 / max(max(once.values()), 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, f in methods.items():
            time.sleep(pause)
            t0 = time.perf_counter()
            while once[name] < settle and time.perf_counter() - t0 < settle:
                f()
            t0 = time.perf_counter()
            for _ in range(number):
                f()
            samples[name].append((time.perf_counter() - t0) / number)
    return {name: statistics.median(s) for name, s in samples.items()}


def _once(f: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def overhead_cases() -> dict[str, dict[str, Callable[[], object]]]:
    """Small inputs, where dispatch and argument checks are most of what there is to measure.

    Each case maps method names to callables; "smx" is ours, the others are the native peers.
    Frameworks that are not installed are left out.
    """
    import importlib.util

    import numpy as np

    from ._api import softmax

    x = np.random.default_rng(0).standard_normal(10)

    def numpy_expression():
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    cases = {"numpy (10,) float64": {"smx": lambda: softmax(x), "plain NumPy expression": numpy_expression}}
    if importlib.util.find_spec("torch"):
        import torch

        t = torch.from_numpy(x.astype(np.float32))
        cases["torch (10,) float32"] = {"smx": lambda: softmax(t), "torch.softmax": lambda: torch.softmax(t, -1)}
    if importlib.util.find_spec("jax"):
        import jax

        j = jax.numpy.asarray(x.astype(np.float32))
        m = jax.numpy.asarray(np.random.default_rng(1).standard_normal((64, 1000)).astype(np.float32))
        ours_jit = jax.jit(lambda a: softmax(a))
        peer_jit = jax.jit(lambda a: jax.nn.softmax(a))
        cases["jax eager (10,) float32"] = {
            "smx": lambda: softmax(j).block_until_ready(),
            "jax.nn.softmax": lambda: jax.nn.softmax(j).block_until_ready(),
        }
        cases["jax jit (64, 1000) float32"] = {
            "smx": lambda: ours_jit(m).block_until_ready(),
            "jax.nn.softmax": lambda: peer_jit(m).block_until_ready(),
        }
    return cases


def torch_row_cases(threads: int = 2) -> dict[str, dict[str, Callable[[], object]]]:
    """PyTorch float32 softmax on CPU rows from 512 to 32 000 long, where the backend corrects
    the native kernel's normaliser on rows longer than ``NATIVE_CPU_ROW_LIMIT``."""
    import torch

    from ._api import softmax

    torch.set_num_threads(threads)
    cases = {}
    for shape in [(64, 512), (64, 1000), (64, 4096), (256, 4096), (1024, 32000), (4096, 32000)]:
        x = torch.randn(shape) * 3
        cases[f"torch {shape} float32, {threads} threads"] = {
            "smx": lambda x=x: softmax(x),
            "torch.softmax": lambda x=x: torch.softmax(x, -1),
        }
    return cases


GROUPS = {"overhead": overhead_cases, "torch-rows": torch_row_cases}

# --- the grid: every shape x dtype x function, each backend against its native peers ------------

GRID_SHAPES = [(10,), (1000,), (64, 1000), (1_000_000,), (1_000_000, 10), (1024, 32000), (4096, 32000), (100, 1_000_000)]
GRID_FUNCS = ("softmax", "log_softmax", "logsumexp")
COPY = "copy (bandwidth bound)"


def grid_case(shape: tuple[int, ...], dtype: str, func: str, backends: tuple[str, ...] = ("numpy", "torch", "jax")) -> dict[str, Callable[[], object]]:
    """The methods timed together for one shape, dtype and function, along the last axis.

    Our methods are named ``smx[<backend>]``; the rest are native peers. ``COPY`` copies the
    input's bytes into a preallocated array: the bandwidth bound a one-pass kernel can approach.
    """
    import importlib.util

    import numpy as np

    from . import _api

    ours = getattr(_api, func)
    kw = {"axis": -1}
    x = (np.random.default_rng(0).standard_normal(shape) * 3).astype(dtype)
    sink = np.empty_like(x)
    m: dict[str, Callable[[], object]] = {COPY: lambda: np.copyto(sink, x)}
    if "numpy" in backends:
        m["smx[numpy]"] = lambda: ours(x, **kw)
        if func != "logsumexp":
            out = np.empty_like(x)
            m["smx[numpy] out="] = lambda: ours(x, out=out, **kw)
        if importlib.util.find_spec("scipy"):
            import scipy.special

            peer = getattr(scipy.special, func)
            m[f"scipy.special.{func}"] = lambda: peer(x, axis=-1)
        m["NumPy expression"] = lambda: _numpy_expression(np, func, x)
    if "torch" in backends and importlib.util.find_spec("torch"):
        m.update(_torch_methods(func, x, ours, kw))
    if "jax" in backends and importlib.util.find_spec("jax"):
        m.update(_jax_methods(func, x, ours))
    return m


def _numpy_expression(np, func, x):
    """What one writes by hand: the max-shifted formula with NumPy ufuncs."""
    m = x.max(-1, keepdims=True)
    if func == "softmax":
        e = np.exp(x - m)
        return e / e.sum(-1, keepdims=True)
    s = np.log(np.exp(x - m).sum(-1, keepdims=True))
    return x - m - s if func == "log_softmax" else (m + s)[..., 0]


def _torch_methods(func, x, ours, kw):
    import torch

    t = torch.from_numpy(x)  # shares x's memory: no copy
    out = torch.empty_like(t)
    native = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}.get(func)

    def threads(n, f):
        def call():
            torch.set_num_threads(n)
            return f()

        return call

    m = {"smx[torch]": threads(2, lambda: ours(t, **kw))}
    if native is None:  # logsumexp
        m["torch.logsumexp, 1 thread"] = threads(1, lambda: torch.logsumexp(t, -1))
        m["torch.logsumexp, 2 threads"] = threads(2, lambda: torch.logsumexp(t, -1))
        return m
    m[f"torch.{func}, 1 thread"] = threads(1, lambda: native(t, -1))
    m[f"torch.{func}, 2 threads"] = threads(2, lambda: native(t, -1))
    m[f"torch.{func} out=, 2 threads"] = threads(2, lambda: native(t, -1, out=out))
    return m


def _jax_methods(func, x, ours):
    import jax

    j = jax.device_put(x)
    peer = {"softmax": jax.nn.softmax, "log_softmax": jax.nn.log_softmax, "logsumexp": jax.nn.logsumexp}[func]
    mine = jax.jit(lambda a: ours(a, axis=-1))
    theirs = jax.jit(lambda a: peer(a, axis=-1))
    return {"smx[jax] jit": lambda: mine(j).block_until_ready(), f"jax.nn.{func} jit": lambda: theirs(j).block_until_ready()}


def run_grid(
    shapes=GRID_SHAPES,
    dtypes=("float32", "float64"),
    funcs=GRID_FUNCS,
    backends=("numpy", "torch", "jax"),
    rounds: int = 7,
    progress=None,
    settle: float = 0.03,
) -> list[dict]:
    """Time every case of the grid; one dict per case: shape, dtype, func, bytes, seconds per method."""
    import gc

    import numpy as np

    cases = [(s, d, f) for s in shapes for d in dtypes for f in funcs]
    results = []
    for i, (shape, dtype, func) in enumerate(cases):
        if progress:
            progress(i, len(cases), f"{shape} {dtype} {func}")
        methods = grid_case(shape, dtype, func, backends)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        # Big inputs: one call per sample, fewer warm-ups; small ones: enough calls for 20 ms.
        times = time_interleaved(methods, rounds=rounds, warmup=1 if nbytes > 1 << 26 else 3, settle=settle)
        results.append({"shape": list(shape), "dtype": dtype, "func": func, "bytes": nbytes, "seconds": times})
        del methods
        gc.collect()
    if progress:
        progress(len(cases), len(cases), "done")
    return results


def _ratio(times: dict, peer: str, ours: str) -> float | None:
    return times[peer] / times[ours] if peer in times and ours in times else None


def grid_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The ratios of each case: peer time / our time (above 1: we are faster), and our GB/s over
    the copy's GB/s (1 = at the bandwidth bound)."""
    header = [
        "shape", "dtype", "func", "scipy / numpy", "NumPy expr / numpy", "torch 2T / numpy", "torch 2T out= / numpy out=",
        "torch 1T / numpy", "numpy vs copy", "torch 2T / smx[torch]", "jax jit / smx[jax] jit",
    ]
    rows = []
    for r in results:
        t, f = r["seconds"], r["func"]
        torch2 = f"torch.{f}, 2 threads"
        cells = [
            _ratio(t, f"scipy.special.{f}", "smx[numpy]"),
            _ratio(t, "NumPy expression", "smx[numpy]"),
            _ratio(t, torch2, "smx[numpy]"),
            _ratio(t, f"torch.{f} out=, 2 threads", "smx[numpy] out="),
            _ratio(t, f"torch.{f}, 1 thread", "smx[numpy]"),
            _ratio(t, COPY, "smx[numpy]"),
            _ratio(t, torch2, "smx[torch]"),
            _ratio(t, f"jax.nn.{f} jit", "smx[jax] jit"),
        ]
        shape = "(" + ", ".join(_count(n) for n in r["shape"]) + ("," if len(r["shape"]) == 1 else "") + ")"
        rows.append([shape, r["dtype"], f] + ["-" if c is None else f"{c:.2f}" for c in cells])
    return header, rows


def _count(n: int) -> str:
    return f"{n:.0e}".replace("+0", "") if n >= 100_000 and n % 100_000 == 0 else str(n)


def targets(results: list[dict]) -> list[list[str]]:
    """Each performance target of the benchmark issue with the ratio measured for it."""
    rows = []

    def add(name, case, ratio, goal, higher_is_better=True):
        if ratio is None:
            return
        ok = ratio >= goal if higher_is_better else ratio <= goal
        rows.append([name, case, f"{ratio:.2f}", (">= " if higher_is_better else "<= ") + f"{goal:g}", "met" if ok else "MISSED"])

    for r in results:
        t, f, shape, dt = r["seconds"], r["func"], tuple(r["shape"]), r["dtype"]
        case = f"{shape} {dt} {f}"
        if math.prod(shape) >= 65536:
            add("numpy vs scipy", case, _ratio(t, f"scipy.special.{f}", "smx[numpy]"), 2 if f == "logsumexp" else 3)
        if f == "softmax" and dt == "float32" and shape in ((1024, 32000), (4096, 32000), (1_000_000, 10)):
            add("numpy vs torch 2 threads, allocating", case, _ratio(t, "torch.softmax, 2 threads", "smx[numpy]"), 1)
            if shape != (1_000_000, 10):
                add("numpy out= vs torch out=, 2 threads", case, _ratio(t, "torch.softmax out=, 2 threads", "smx[numpy] out="), 0.7)
        if f == "softmax" and shape == (10,) and dt == "float64":
            add("numpy (10,) time / NumPy expression", case, _inverse(_ratio(t, "NumPy expression", "smx[numpy]")), 1.3, False)
        if f == "softmax" and shape == (4096, 32000) and dt == "float32":
            add("smx[torch] time / torch.softmax 2 threads", case, _inverse(_ratio(t, "torch.softmax, 2 threads", "smx[torch]")), 1.25, False)
    return [["target", "case", "ratio", "goal", ""]] + rows


def _inverse(r: float | None) -> float | None:
    return None if r is None else 1 / r


def plot_grid(results: list[dict], path: str) -> None:
    """Throughput (input GB/s) against size, one line per method, the copy as a dashed roofline:
    a panel per function (rows) and dtype (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    funcs = list(dict.fromkeys(r["func"] for r in results))
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    def label(name: str, func: str) -> str:  # "torch.softmax, 2 threads" -> "torch, 2 threads": one colour each
        return name.replace("." + func, "")

    labels = list(dict.fromkeys(label(name, r["func"]) for r in results for name in r["seconds"]))
    colors = {name: plt.cm.tab20(i % 20) for i, name in enumerate(labels)}
    fig, axes = plt.subplots(len(funcs), len(dtypes), figsize=(7 * len(dtypes), 4.5 * len(funcs)), squeeze=False)
    for i, f in enumerate(funcs):
        for j, dt in enumerate(dtypes):
            ax = axes[i][j]
            rs = sorted((r for r in results if r["func"] == f and r["dtype"] == dt), key=lambda r: r["bytes"])
            for name in dict.fromkeys(name for r in rs for name in r["seconds"]):
                pts = [(math.prod(r["shape"]), r["bytes"] / r["seconds"][name] / 1e9) for r in rs if name in r["seconds"]]
                tag = label(name, f)
                if name == COPY:
                    style = {"linestyle": "--", "color": "black", "linewidth": 2}
                else:
                    style = {"marker": "o", "color": colors[tag], "linewidth": 2.5 if name.startswith("smx") else 1}
                ax.plot(*zip(*pts), label=tag, **style)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{f}, {dt}")
            ax.set_xlabel("elements")
            ax.set_ylabel("input GB/s")
            ax.grid(True, which="both", alpha=0.3)
    handles = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_group(group: str = "overhead", rounds: int = 21, settle: float = 0.03) -> list[tuple[str, str, float, float]]:
    """``(case, peer, our seconds, peer seconds)`` for every case of a group."""
    rows = []
    for case, methods in GROUPS[group]().items():
        times = time_interleaved(methods, rounds=rounds, settle=settle)
        ours = times.pop("smx")
        rows.extend((case, peer, ours, t) for peer, t in times.items())
    return rows


def accuracy_table(lengths: tuple[int, ...] = (10_000, 100_000, 1_000_000, 10_000_000)) -> list[list[str]]:
    """Largest float32 softmax error, in eps, of every ready backend (and PyTorch's own kernel)
    against the long-double oracle, for ``x ~ N(0, 3^2)`` rows of each length."""
    import importlib.util

    import numpy as np

    from . import registry
    from ._api import softmax
    from .conformance import oracle

    methods: dict[str, Callable] = {}
    for row in registry.list_backends():
        spec = registry.get_backend(row.name)
        if row.status == "ready" and spec.from_numpy is not None:
            methods[row.name] = lambda a, spec=spec: spec.to_numpy(softmax(spec.from_numpy(a)))
    if importlib.util.find_spec("torch"):
        import torch

        methods["torch.softmax (native peer)"] = lambda a: torch.softmax(torch.from_numpy(a), -1).numpy()
    table = []
    for n in lengths:
        x = (np.random.default_rng(n).standard_normal((max(1, 2_000_000 // n), n)) * 3).astype(np.float32)
        truth = oracle.softmax(x, (1,))
        table.append([f"{n:.0e}"] + [f"{oracle.ulp_error(f(x), truth, 'float32'):.1f}" for f in methods.values()])
    return [["row length", *methods]] + table
