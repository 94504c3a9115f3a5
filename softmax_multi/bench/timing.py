"""Timing: methods sampled round-robin in one run, each in its steady state; medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

__all__ = ["time_interleaved"]


def time_interleaved(
    methods: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 21,
    number: int = 0,
    warmup: int = 3,
    pause: float = 0.01,
    settle: float = 0.03,
) -> dict[str, float]:
    """Median seconds per call of each method, sampled round-robin (A, B, C, A, B, C, ...), so that
    drift of the machine hits them alike.

    ``number`` calls make one sample; 0 picks it so that one sample of the slowest method takes
    about 20 ms. Before each sample: ``pause`` seconds idle, then, for a method whose call takes
    less than ``settle`` seconds, untimed calls of it for ``settle`` seconds, so that every
    method is timed in its steady state, as in a loop that calls it over and over:

    - The pause: PyTorch's OpenMP threads and XLA's keep spinning for a moment after a call
      returns, and would otherwise take the cores from whichever method comes next (a 2-thread
      kernel run right after ``torch.softmax`` took 4x as long here).
    - The settling: after 10 ms idle on a small VM, a call finds its input evicted from the
      caches, and a second core may not run a thread at full speed until it has been busy for
      10-20 ms. One warm-up call was not enough; 20 ms of calls were.
    """
    for f in methods.values():
        for _ in range(warmup):
            f()
    once = {name: _once(f) for name, f in methods.items()}
    if number <= 0:
        number = max(1, int(0.02 / max(*once.values(), 1e-9)))
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
