"""Reporting: the grid's table of ratios, the rows sweep's table, and the throughput plot."""

from __future__ import annotations

import math
from typing import Any

from .cases import COPY, shape_text

__all__ = ["grid_table", "plot_grid", "row_table"]


def _ratio(times: dict[str, float], peer: str, ours: str) -> float | None:
    return times[peer] / times[ours] if peer in times and ours in times else None


def grid_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The ratios of each case: peer time / our time (above 1: we are faster), and the copy's time /
    ours (1 = at the bandwidth bound)."""
    header = [
        "shape",
        "dtype",
        "func",
        "scipy / numpy",
        "NumPy expr / numpy",
        "torch 2T / numpy",
        "torch 2T out= / numpy out=",
        "numpy vs copy",
        "torch 2T / smx[torch]",
        "jax jit / smx[jax] jit",
        "scipy b= / numpy b=",
    ]
    rows = []
    for r in results:
        t, f = r["seconds"], r["func"]
        cells = [
            _ratio(t, f"scipy.special.{f}", "smx[numpy]"),
            _ratio(t, "NumPy expression", "smx[numpy]"),
            _ratio(t, f"torch.{f}, 2 threads", "smx[numpy]"),
            _ratio(t, f"torch.{f} out=, 2 threads", "smx[numpy] out="),
            _ratio(t, COPY, "smx[numpy] out=" if f != "logsumexp" else "smx[numpy]"),
            _ratio(t, f"torch.{f}, 2 threads", "smx[torch]"),
            _ratio(t, f"jax.nn.{f} jit", "smx[jax] jit"),
            _ratio(t, "scipy.special.logsumexp b=", "smx[numpy] b="),
        ]
        rows.append([shape_text(r["shape"]), r["dtype"], f] + ["-" if c is None else f"{c:.2f}" for c in cells])
    return header, rows


def row_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The rows sweep: for each size, dtype, function and row length, torch's fastest time over ours
    (both with out=), the copy's time over ours, and our allocating call's time over ours with out=."""
    header = [
        "size",
        "dtype",
        "func",
        "row length",
        "rows",
        "torch fastest / ours",
        "fastest torch",
        "copy / ours",
        "ours alloc / ours out=",
    ]
    rows = []
    for r in results:
        t, f = r["seconds"], r["func"]
        ours = t["smx[numpy] out="]
        peers = [k for k in (f"torch.{f} out=, 2 threads", f"torch.compile(torch.{f}), 2 threads") if k in t]
        best = min(peers, key=lambda k: t[k]) if peers else None
        rows.append(
            [
                r["size"],
                r["dtype"],
                f,
                str(r["n"]),
                str(r["rows"]),
                f"{t[best] / ours:.2f}" if best else "-",
                (best or "-").replace(", 2 threads", "").replace(f"torch.{f}", "eager"),
                f"{t[COPY] / ours:.2f}",
                f"{t['smx[numpy]'] / ours:.2f}",
            ]
        )
    return header, rows


def plot_grid(results: list[dict[str, Any]], path: str) -> None:
    """Throughput (input GB/s) against size, one line per method, the copy as a dashed roofline:
    a panel per function (rows) and dtype (columns). Needs matplotlib (the bench extra)."""
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
                    style: dict[str, Any] = {"linestyle": "--", "color": "black", "linewidth": 2}
                else:
                    style = {"marker": "o", "color": colors[tag], "linewidth": 2.5 if name.startswith("smx") else 1}
                ax.plot(*zip(*pts), label=tag, **style)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{f}, {dt}")
            ax.set_xlabel("elements")
            ax.set_ylabel("input GB/s")
            ax.grid(True, which="both", alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in fig.axes:
        for h, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
