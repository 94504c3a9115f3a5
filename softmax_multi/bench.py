"""Benchmark: our functions against native peers, measured interleaved in one run.

Methods are timed round-robin (A, B, C, A, B, C, ...) so that machine drift hits them alike; each
sample times ``number`` calls, and the median of the samples is reported. Speed is a ratio measured
in one run, never an absolute number compared across runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

__all__ = ["time_interleaved", "overhead_cases", "torch_row_cases", "run_group", "accuracy_table"]


def time_interleaved(
    methods: Mapping[str, Callable[[], object]], *, rounds: int = 21, number: int = 0, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per call of each method, sampled round-robin.

    ``number`` calls make one sample; 0 picks it so that one sample of the slowest method takes
    about 20 ms.
    """
    for f in methods.values():
        for _ in range(warmup):
            f()
    if number <= 0:
        slowest = max(_once(f) for f in methods.values())
        number = max(1, int(0.02 / max(slowest, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, f in methods.items():
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


def run_group(group: str = "overhead", rounds: int = 21) -> list[tuple[str, str, float, float]]:
    """``(case, peer, our seconds, peer seconds)`` for every case of a group."""
    rows = []
    for case, methods in GROUPS[group]().items():
        times = time_interleaved(methods, rounds=rounds)
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
