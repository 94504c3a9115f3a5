"""The ``softmax-multi`` command: the backends here, the conformance report, the worked example,
the benchmark and the accuracy table."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import __version__, registry
from ._api import softmax
from ._text import Progress
from ._text import table as _table

WORKED_VECTOR = [5.0, 7.0, 10.0]
WORKED_MATRIX = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]


def _devices(spec: registry.BackendSpec) -> str:
    try:
        return ", ".join(spec.devices())
    except Exception as err:
        return f"(error: {type(err).__name__}: {err})"


def backends_table() -> str:
    """One row per backend: name, library version, status (with the reason if it failed), devices."""
    rows = []
    for row in registry.list_backends():
        status = row.status if row.error is None else f"{row.status}: {row.error}"
        devices = _devices(registry.get_backend(row.name)) if row.status == "ready" else "-"
        rows.append([row.name, row.version or "-", status, devices])
    return _table(["backend", "version", "status", "devices"], rows)


def worked_example() -> str:
    """The worked example of the softmax write-up through every ready backend that can take NumPy data."""
    out = []
    for row in registry.list_backends():
        spec = registry.get_backend(row.name)
        to_numpy, from_numpy = spec.to_numpy, spec.from_numpy
        if row.status != "ready" or from_numpy is None or to_numpy is None:
            continue
        vector = to_numpy(softmax(from_numpy(np.asarray(WORKED_VECTOR))))
        matrix = to_numpy(softmax(from_numpy(np.asarray(WORKED_MATRIX))))
        dtype = np.asarray(vector).dtype
        out.append(f"{row.name} ({dtype}):")
        out.append(f"  softmax({WORKED_VECTOR}) = {_rounded(vector)}")
        out.append(f"  softmax of the rows of {WORKED_MATRIX} (shift invariance):")
        out.extend(f"    {_rounded(r)}" for r in matrix)
    return "\n".join(out)


def _rounded(values: object) -> list[float]:
    """To 4 places, as Python floats: a float32 0.0064 prints as 0.0064, not 0.006399999838322401."""
    return [round(float(v), 4) for v in np.asarray(values, dtype=np.float64)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="softmax-multi", description="softmax, log_softmax and logsumexp on any array library")
    parser.add_argument("--version", action="version", version=f"softmax-multi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backends", help="list the backends, their versions, status and devices")
    sub.add_parser("example", help="run the worked example through every ready backend")
    bench = sub.add_parser("bench", help="time our functions against native peers, interleaved")
    bench.add_argument(
        "--group",
        choices=list(BENCH_GROUPS),
        default="grid",
        help="which cases: " + "; ".join(f"{k}: {v}" for k, v in BENCH_GROUPS.items()) + " (default: grid)",
    )
    bench.add_argument(
        "--rounds", type=int, help="samples per method, median reported (default 7 for grid and rows, 21 otherwise)"
    )
    bench.add_argument(
        "--settle",
        type=float,
        default=0.03,
        metavar="SECONDS",
        help="untimed calls of a method before each of its samples, after a 10 ms pause "
        "(default 0.03; 0 times calls made after idling)",
    )
    bench.add_argument("--shapes", help='grid shapes, ";"-separated, "x" between axes: "10;64x1000;1e6x10" (default: all eight)')
    bench.add_argument("--lengths", help='rows: row lengths, ","-separated (default: the sweep 8 ... 1e6)')
    bench.add_argument("--sizes", help='rows: input sizes, ","-separated of "16 MiB" and "64 MiB" (default: both)')
    bench.add_argument("--dtypes", default="float32,float64", help="grid and rows dtypes (default: float32,float64)")
    bench.add_argument("--funcs", help="grid and rows functions (default: softmax,log_softmax,logsumexp; rows: the first two)")
    bench.add_argument("--backends", default="numpy,torch,jax", help="grid backends (their peers come along)")
    bench.add_argument(
        "--no-compile", action="store_true", help="rows: leave torch.compile(torch.softmax) out (it compiles every shape)"
    )
    bench.add_argument("--json", metavar="FILE", help="results as JSON (default: benchmark-GROUP.json)")
    bench.add_argument("--plot", default="benchmark.png", metavar="FILE", help="grid plot as PNG (default: benchmark.png)")
    bench.add_argument("--from-json", metavar="FILE", help="no timing: print the tables (and the grid's plot) of a saved run")
    conf = sub.add_parser(
        "conformance",
        help="run the conformance suite and print the checks x backends matrix",
        description="The conformance suite on every ready backend, or those named; the options are pytest's, spelled the same.",
    )
    from .conformance.options import OPTIONS  # the pytest plugin's own options: one spelling, one default

    for name, kwargs in OPTIONS.items():
        conf.add_argument(name, **kwargs)
    conf.add_argument("--json", metavar="FILE", help="also write the matrix, failures and reasons as JSON")
    # the spellings of 0.1, refused with the new one named
    for old_name, new_name in (("--backend", "--smx-backend"), ("--max-examples", "--smx-max-examples")):
        conf.add_argument(old_name, dest=f"renamed {old_name} {new_name}", nargs="?", const=True, help=argparse.SUPPRESS)
    for old_name in ("--quick", "--full"):
        conf.add_argument(
            old_name,
            dest=f"renamed {old_name} --smx-tier {old_name[2:]}",
            action="store_true",
            default=None,
            help=argparse.SUPPRESS,
        )
    sub.add_parser("accuracy", help="float32 softmax error in eps at row lengths 1e4..1e7, per backend")
    args = parser.parse_args(argv)
    if args.command == "backends":
        print(backends_table())
    elif args.command == "example":
        print(worked_example())
    elif args.command == "bench":
        return _bench(args)
    elif args.command == "conformance":
        return _conformance(args)
    elif args.command == "accuracy":
        from .conformance.accuracy import accuracy_table

        for func in ("softmax", "log_softmax"):
            header, *rows = accuracy_table(func=func)
            print(f"{func}, float32, largest error against the long-double oracle in eps (log_softmax: scaled by max(1, |y|))")
            print(_table(header, rows) + "\n")
    return 0


def _conformance(args: argparse.Namespace) -> int:
    """The suite on the backends asked for, after checking they can be had: an unknown one, a
    ``module:attr`` that does not import, or a plugin that failed to load is reported with the
    registry's reason and a non-zero exit; a built-in without its library is listed and fails nothing."""
    renamed = [k.split(" ", 2)[1:] for k, v in vars(args).items() if k.startswith("renamed ") and v is not None]
    if renamed:
        old, new = renamed[0]
        print(
            f"softmax-multi conformance: {old} is spelled {new} now (one spelling here and in pytest); "
            "see softmax-multi conformance --help",
            file=sys.stderr,
        )
        return 2
    from .conformance import oracle, report
    from .conformance.plugin import BackendUnavailable, resolve_backend

    problems = []
    for name in args.smx_backend:
        try:
            resolve_backend(name)
        except BackendUnavailable as err:
            problems.append(f"{name}: {err}")
    rows = registry.list_backends()
    failed = [r for r in rows if r.status == "failed"]
    unavailable = [r for r in rows if r.status in ("not installed", "disabled", "overridden", "unavailable")]
    if problems:
        for line in problems:
            print(f"softmax-multi conformance: cannot certify {line}", file=sys.stderr)
        return 2
    code, collector = report.run(
        args.smx_backend,
        args.smx_tier,
        args.json,
        args.smx_max_examples,
        args.smx_known_failures,
        extra_report={
            "failed_plugins": {r.name: {"source": r.source, "error": r.error} for r in failed},
            "unavailable": {r.name: r.status + (f": {r.error}" if r.error else "") for r in unavailable},
        },
    )
    header, matrix = collector.matrix()
    print(_table(header, matrix))
    limits = ", ".join(f"{k} {v:g}" for k, v in oracle.TOLERANCE_ULPS.items())
    print("\ncells: pass/FAIL/known (a backend's declared failure) and the largest error seen, in eps (of the failing cases")
    print("for FAIL); '-': nothing to test on that backend (a dtype or transform it does not declare)")
    print(f"tolerances (eps): {limits}; log_softmax and logsumexp errors are scaled by max(1, |y|)")
    if unavailable and not args.smx_backend:
        print(
            "unavailable here (nothing failed): "
            + ", ".join(f"{r.name} ({r.status}{': ' + r.error if r.error else ''})" for r in unavailable)
        )
    explained = collector.explain()
    if explained:
        print("\n" + explained)
    if failed:
        print()
        for r in failed:
            print(f"plugin {r.name} ({r.source}) failed to load: {r.error}")
    if code not in (0, 1):
        print(f"conformance: pytest could not run the suite (exit code {code}; its message is above)")
    elif code or failed:
        print(
            f"conformance: FAILED ({len(collector.failures())} failing cells"
            + (f", {len(failed)} plugin(s) that failed to load)" if failed else ")")
        )
    return int(code) or (1 if failed else 0)


BENCH_GROUPS = {
    "cross-entropy": "linear_cross_entropy against the naive loss and torch's chunked one: time, memory, error",
    "grid": "every shape, dtype and function against the native peers",
    "rows": "row lengths 8 to 1e6 at 16 and 64 MiB against torch's out= kernel and the copy",
    "overhead": "tiny inputs, dispatch against calling the native function",
    "torch": "the PyTorch backend against torch.softmax, with out= and under autograd",
    "jax": "the JAX backend against jax.nn under jit and under grad",
    "first-call": "fresh processes: import and first call, Numba's cache warm and empty",
}


def _bench(args: argparse.Namespace) -> int:
    import json
    import platform

    from . import bench

    path = args.json or f"benchmark-{args.group}.json"
    bar: Progress | None = None

    def progress(done: int, total: int, what: str) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(total)
        bar.update(done, what)

    if args.from_json:
        with open(args.from_json) as fh:
            saved = json.load(fh)
        group, results = saved.get("group", "grid"), saved["results"]
    else:
        group = args.group
        results = _bench_run(bench, args, progress)
        machine = {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
        with open(path, "w") as fh:
            json.dump({"machine": machine, "command": " ".join(sys.argv), "group": group, "results": results}, fh, indent=1)
    _bench_report(bench, group, results, args)
    if not args.from_json:
        print(f"\nwrote {path}")
    return 0


def _bench_run(bench: Any, args: argparse.Namespace, progress: Any) -> Any:
    from .backends import fused

    if args.group != "first-call":
        # Timed in their steady state: the fused kernels loaded, not the ufuncs that serve calls
        # while they load (with an empty cache the first case of a run was timed half on each).
        fused.wait_ready()
    dtypes = tuple(args.dtypes.split(","))
    if args.group == "grid":
        shapes = bench.GRID_SHAPES if not args.shapes else [_shape(s) for s in args.shapes.split(";")]
        funcs = tuple(args.funcs.split(",")) if args.funcs else bench.GRID_FUNCS
        return bench.run_grid(shapes, dtypes, funcs, tuple(args.backends.split(",")), args.rounds or 7, progress, args.settle)
    if args.group == "rows":
        select: dict[str, Any] = {"dtypes": dtypes, "compiled": not args.no_compile}
        if args.lengths:
            select["lengths"] = tuple(int(float(n)) for n in args.lengths.split(","))
        if args.sizes:
            select["sizes"] = {s.strip(): bench.cases.ROW_SIZES[s.strip()] for s in args.sizes.split(",")}
        if args.funcs:
            select["funcs"] = tuple(args.funcs.split(","))
        return bench.run_rows(args.rounds or 7, progress, args.settle, **select)
    if args.group in ("torch", "jax"):
        return (bench.run_torch if args.group == "torch" else bench.run_jax)(args.rounds or 21, args.settle)
    if args.group == "first-call":
        return [list(row) for row in bench.first_call(args.rounds or 5)]
    if args.group == "cross-entropy":
        from .bench import loss

        return loss.run_cross_entropy(args.rounds or 3, progress=progress)
    return [list(row) for row in bench.run_group(args.group, args.rounds or 21, args.settle)]


def _bench_report(bench: Any, group: str, results: Any, args: argparse.Namespace) -> None:
    if group == "grid":
        header, rows = bench.grid_table(results)
        print("ratios: peer time / our time (above 1: we are faster); 'numpy vs copy': the copy's time / ours")
        print(_table(header, rows))
        found = bench.evaluate(
            bench.GRID_TARGETS, results, lambda r: f"{bench.cases.shape_text(r['shape'])} {r['dtype']} {r['func']}"
        )
        _targets(found)
        try:
            bench.plot_grid(results, args.plot)
        except ImportError as err:
            print(f"no plot: {err.name or 'matplotlib'} is not installed (pip install 'softmax-multi[bench]')")
        else:
            print(f"drew {args.plot}")
    elif group == "rows":
        header, rows = bench.row_table(results)
        print("ratios with out= (above 1: we are faster): torch's fastest configuration's time / ours, the copy's time / ours")
        print(_table(header, rows))
        _targets(bench.evaluate(bench.ROW_TARGETS, results, lambda r: f"{r['size']} {r['dtype']} {r['func']} {r['n']}"))
    elif group in ("torch", "jax"):
        rows = [
            [r["case"], peer, f"{r['seconds']['smx'] * 1e6:.1f} us", f"{t * 1e6:.1f} us", f"{r['seconds']['smx'] / t:.2f}x"]
            for r in results
            for peer, t in r["seconds"].items()
            if peer != "smx"
        ]
        print(_table(["case", "peer", "smx", "peer time", "smx / peer"], rows))
        _targets(bench.evaluate(bench.TORCH_TARGETS if group == "torch" else bench.JAX_TARGETS, results, lambda r: r["case"]))
    elif group == "cross-entropy":
        from .bench import loss

        header, rows, found = loss.loss_table(results)
        print("forward and backward (NumPy: forward), float32; time / naive: against the naive loss's fastest configuration")
        print(_table(header, rows))
        _targets(found)
    elif group == "first-call":
        rows = [
            [cache, f"{imp:.3f} s", f"{first:.3f} s", f"{imp + first:.3f} s", f"{ready:.3f} s"]
            for cache, imp, first, ready in results
        ]
        print(
            "fresh processes, medians: import softmax_multi (NumPy included), its first softmax of a (1000, 1000) float32 array,"
        )
        print("both together, and the time until the fused kernels are loaded (they are, in the background, meanwhile)")
        print(_table(["Numba cache", "import", "first call", "import + first call", "kernels ready"], rows))
        _targets(bench.evaluate_first_call(results))
    else:
        rows = [
            [
                case,
                peer,
                f"{ours * 1e6:.2f} us",
                f"{theirs * 1e6:.2f} us",
                f"{ours / theirs:.2f}x",
                f"{(ours - theirs) * 1e6:+.2f} us",
            ]
            for case, peer, ours, theirs in results
        ]
        print(_table(["case", "peer", "smx", "peer time", "smx / peer", "smx - peer"], rows))


def _targets(found: list[list[str]]) -> None:
    header, *rows = found
    print()
    if rows:
        print(_table(header, rows))
        missed = sum(r[-1] == "MISSED" for r in rows)
        print(f"targets: {len(rows) - missed} met, {missed} missed")
    else:
        print("targets: none of this run's cases has a target")


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(float(n)) for n in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"softmax-multi bench: --shapes: cannot read {text!r} as a shape like 64x1000") from None


if __name__ == "__main__":
    sys.exit(main())
