"""Benchmark: our functions against native peers, measured interleaved in one run.

Methods are timed round-robin (A, B, C, A, B, C, ...) so that machine drift hits them alike; each
sample times ``number`` calls, and the median of the samples is reported. Speed is a ratio measured
in one run, never an absolute number compared across runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

__all__ = ["time_interleaved", "overhead_cases", "run_overhead"]


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
    """Tiny inputs, where dispatch and argument checks are all there is to measure."""
    import numpy as np

    from ._api import softmax

    x = np.random.default_rng(0).standard_normal(10)

    def numpy_expression():
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    return {
        "numpy (10,) float64": {
            "smx.softmax": lambda: softmax(x),
            "plain NumPy expression": numpy_expression,
        }
    }


def run_overhead(rounds: int = 21) -> list[tuple[str, str, float, float]]:
    """``(case, peer, our seconds, our time / peer time)`` for every tiny-input case."""
    rows = []
    for case, methods in overhead_cases().items():
        times = time_interleaved(methods, rounds=rounds)
        ours = times.pop("smx.softmax")
        rows.extend((case, peer, ours, ours / t) for peer, t in times.items())
    return rows
