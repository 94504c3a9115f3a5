"""The performance targets, as data: what is compared, with what goal, and why.

Each target compares our method with a peer's in the cases it selects, always against the peer's
fastest configuration measured in the same run (the fastest of the configurations it names:
torch with ``out=`` and its threads set, ``torch.compile`` where it is faster, ``jax.jit``).
A goal is one of: ``speedup >= g`` (peer time / our time), ``slowdown <= g`` (our time / peer
time), or ``extra <= g`` (our time - peer time, in seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "FIRST_CALL_LIMITS",
    "GRID_TARGETS",
    "JAX_TARGETS",
    "ROW_TARGETS",
    "TORCH_TARGETS",
    "Target",
    "evaluate",
    "evaluate_first_call",
]


class Target(NamedTuple):
    name: str
    applies: Callable[[dict[str, Any]], bool]
    """Which results (one dict per case of a group) the target is about."""
    ours: str
    peers: tuple[str, ...]
    """The peer's configurations ({func} is the case's function); the fastest is compared."""
    kind: str
    """"speedup", "slowdown" or "extra" (see the module's docstring)."""
    goal: float
    why: str


def _size(r: dict[str, Any]) -> int:
    return math.prod(r["shape"]) if "shape" in r else r.get("size_entries", 0)


GRID_TARGETS = [
    Target(
        "numpy vs scipy",
        lambda r: r["func"] != "logsumexp" and _size(r) >= 65536,
        "smx[numpy]",
        ("scipy.special.{func}",),
        "speedup",
        3,
        "the fused kernels read the data once; SciPy's expression makes a pass per operation",
    ),
    Target(
        "numpy logsumexp vs scipy",
        lambda r: r["func"] == "logsumexp" and _size(r) >= 65536,
        "smx[numpy]",
        ("scipy.special.logsumexp",),
        "speedup",
        2,
        "logsumexp at least 2x SciPy's, its dominant entry kept apart as SciPy does",
    ),
    Target(
        "numpy logsumexp b= vs scipy b=",
        lambda r: r["func"] == "logsumexp" and _size(r) >= 65536,
        "smx[numpy] b=",
        ("scipy.special.logsumexp b=",),
        "speedup",
        2,
        "with weights too: SciPy users change the import and nothing else",
    ),
    Target(
        "numpy out= vs torch's fastest",
        lambda r: r["func"] != "logsumexp" and _size(r) >= 65536,
        "smx[numpy] out=",
        ("torch.{func} out=, 2 threads",),
        "speedup",
        1.0,
        "as fast as the best native CPU kernel, both writing into preallocated memory",
    ),
    Target(
        "numpy (10,) time / NumPy expression",
        lambda r: r["func"] == "softmax" and r["dtype"] == "float64" and tuple(r["shape"]) == (10,),
        "smx[numpy]",
        ("NumPy expression",),
        "slowdown",
        1.3,
        "dispatch and checks cost about a microsecond",
    ),
]

ROW_TARGETS = [
    Target(
        "out= vs torch's fastest",
        lambda r: True,
        "smx[numpy] out=",
        ("torch.{func} out=, 2 threads", "torch.compile(torch.{func}), 2 threads"),
        "speedup",
        1.0,
        "at every row length and size: as fast as the best native CPU kernel, eager or compiled",
    ),
    Target(
        "out= vs the copy",
        lambda r: r["size"] == "64 MiB" and r["n"] >= 1024,
        "smx[numpy] out=",
        ("copy (bandwidth bound)",),
        "speedup",
        0.8,
        "out of cache, long rows: one read and one write, near a plain copy of the same bytes",
    ),
]

TORCH_TARGETS = [
    Target(
        "smx[torch] vs torch, >= 65 536 entries",
        lambda r: r["entries"] >= 65536,
        "smx",
        ("torch.softmax", "torch.softmax out="),
        "slowdown",
        1.05,
        "the PyTorch backend never slower than torch's own kernel, and accurate, which torch's is not on long CPU rows",
    ),
    Target(
        "smx[torch] vs torch, smaller",
        lambda r: r["entries"] < 65536,
        "smx",
        ("torch.softmax", "torch.softmax out="),
        "extra",
        1e-6,
        "where the work is small, dispatch costs at most a microsecond",
    ),
]

JAX_TARGETS = [
    Target(
        "smx[jax] vs jax.nn",
        lambda r: True,
        "smx",
        ("jax.nn.softmax", "jax.nn.log_softmax"),
        "slowdown",
        1.05,
        "under jit and grad no slower than jax.nn: the custom JVP keeps only the output for the backward pass",
    ),
]


_HEADER = ("target", "case", "peer", "measured", "goal", "")  # of the rows the evaluations return


# The first call has no peer: import softmax_multi + its first (1000, 1000) float32 softmax, in
# seconds, by the state of Numba's cache. Warm, the call cannot wait for Numba (importing it
# alone takes about 0.3 s): the ufunc path serves it while the kernels load in the background.
FIRST_CALL_LIMITS = {"warm": 0.15, "empty": 1.5}


def evaluate_first_call(results: list[list[Any]]) -> list[list[str]]:
    """The rows of :func:`evaluate` for the ``first-call`` group's (cache, import, first call,
    kernels ready) medians: import + first call against FIRST_CALL_LIMITS."""
    rows = [list(_HEADER)]
    for cache, imported, first, _ in results:
        total, limit = imported + first, FIRST_CALL_LIMITS[cache]
        verdict = "met" if total <= limit else "MISSED"
        rows.append(["first call", f"Numba cache {cache}", "-", f"{total:.3f} s", f"<= {limit:g} s", verdict])
    return rows


def evaluate(targets: list[Target], results: list[dict[str, Any]], label: Callable[[dict[str, Any]], str]) -> list[list[str]]:
    """A row per (target, case): the figure measured, the goal, and met or MISSED; the header first."""
    rows = [list(_HEADER)]
    for target in targets:
        for r in results:
            if not target.applies(r):
                continue
            times = r["seconds"]
            peers = [p for p in (p.format(func=r.get("func", "")) for p in target.peers) if p in times]
            if target.ours not in times or not peers:
                continue
            peer = min(peers, key=lambda p: times[p])  # the peer's fastest configuration
            ours = times[target.ours]
            if target.kind == "speedup":
                value, ok, shown, goal = (
                    times[peer] / ours,
                    times[peer] / ours >= target.goal,
                    f"{times[peer] / ours:.2f}x",
                    f">= {target.goal:g}x",
                )
            elif target.kind == "slowdown":
                value = ours / times[peer]
                ok, shown, goal = value <= target.goal, f"{value:.2f}x", f"<= {target.goal:g}x"
            else:
                value = ours - times[peer]
                ok, shown, goal = value <= target.goal, f"{value * 1e6:+.2f} us", f"<= {target.goal * 1e6:+g} us"
            rows.append([target.name, label(r), peer, shown, goal, "met" if ok else "MISSED"])
    return rows
