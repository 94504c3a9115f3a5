"""The ``softmax-multi`` command: which backends are here, and the worked example through each."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from . import registry
from ._api import softmax

WORKED_VECTOR = [5.0, 7.0, 10.0]
WORKED_MATRIX = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


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
        if row.status != "ready" or spec.from_numpy is None:
            continue
        vector = spec.to_numpy(softmax(spec.from_numpy(np.asarray(WORKED_VECTOR))))
        matrix = spec.to_numpy(softmax(spec.from_numpy(np.asarray(WORKED_MATRIX))))
        out.append(f"{row.name}:")
        out.append(f"  softmax({WORKED_VECTOR}) = {np.round(vector, 4).tolist()}")
        out.append(f"  softmax of the rows of {WORKED_MATRIX} (shift invariance):")
        out.extend(f"    {np.round(r, 4).tolist()}" for r in matrix)
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="softmax-multi", description="softmax, log_softmax and logsumexp on any array library"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backends", help="list the backends, their versions, status and devices")
    sub.add_parser("example", help="run the worked example through every ready backend")
    bench = sub.add_parser("bench", help="time our functions against native peers, interleaved")
    bench.add_argument("--group", choices=["grid", "overhead", "torch-rows"], default="grid", help="which cases (default: the grid)")
    bench.add_argument("--rounds", type=int, help="samples per method, median reported (default 7 for the grid, 21 otherwise)")
    bench.add_argument(
        "--settle", type=float, default=0.03, metavar="SECONDS",
        help="untimed calls of a method before each of its samples, after a 10 ms pause (default 0.03; 0 times calls made after idling)",
    )
    bench.add_argument("--shapes", help='grid shapes, ";"-separated, "x" between axes: "10;64x1000;1e6x10" (default: all eight)')
    bench.add_argument("--dtypes", default="float32,float64", help="grid dtypes (default: float32,float64)")
    bench.add_argument("--funcs", default="softmax,log_softmax,logsumexp", help="grid functions")
    bench.add_argument("--backends", default="numpy,torch,jax", help="grid backends (their peers come along)")
    bench.add_argument("--json", default="benchmark.json", metavar="FILE", help="grid results as JSON (default: benchmark.json)")
    bench.add_argument("--plot", default="benchmark.png", metavar="FILE", help="grid plot as PNG (default: benchmark.png)")
    bench.add_argument("--from-json", metavar="FILE", help="no timing: print the tables and draw the plot of a saved grid run")
    conf = sub.add_parser("conformance", help="run the conformance suite and print the checks x backends matrix")
    conf.add_argument("--backend", action="append", default=[], help="backend name or module:attr (repeatable; default: all ready)")
    tier = conf.add_mutually_exclusive_group()
    tier.add_argument("--quick", dest="tier", action="store_const", const="quick", help="leave out rows of 1e6 and more (default)")
    tier.add_argument("--full", dest="tier", action="store_const", const="full", help="everything, rows up to 1e7")
    conf.set_defaults(tier="quick")
    conf.add_argument("--json", metavar="FILE", help="also write the matrix as JSON")
    conf.add_argument("--max-examples", type=int, help="Hypothesis examples per property (default 50)")
    sub.add_parser("accuracy", help="float32 softmax error in eps at row lengths 1e4..1e7, per backend")
    args = parser.parse_args(argv)
    if args.command == "backends":
        print(backends_table())
    elif args.command == "example":
        print(worked_example())
    elif args.command == "bench" and args.group == "grid":
        return _bench_grid(args)
    elif args.command == "bench":
        from .bench import run_group

        rows = [
            [case, peer, f"{ours * 1e6:.2f} us", f"{theirs * 1e6:.2f} us", f"{ours / theirs:.2f}x", f"{(ours - theirs) * 1e6:+.2f} us"]
            for case, peer, ours, theirs in run_group(args.group, args.rounds or 21, args.settle)
        ]
        print(_table(["case", "peer", "smx", "peer time", "smx / peer", "smx - peer"], rows))
    elif args.command == "conformance":
        from .conformance import oracle, report

        code, collector = report.run(args.backend, args.tier, args.json, args.max_examples)
        header, rows = collector.matrix()
        print(_table(header, rows))
        limits = ", ".join(f"{k} {v:g}" for k, v in oracle.TOLERANCE_ULPS.items())
        print("\ncells: pass/FAIL/known (a backend's declared failure) and the largest error seen, in eps")
        print(f"tolerances (eps): {limits}; log_softmax and logsumexp errors are scaled by max(1, |y|)")
        if code != 0:
            print(f"conformance: FAILED (pytest exit code {code})")
        return int(code)
    elif args.command == "accuracy":
        from .bench import accuracy_table

        header, *rows = accuracy_table()
        print(_table(header, rows))
    return 0


def _bench_grid(args) -> int:
    import json
    import platform
    import time

    from . import bench

    shapes = bench.GRID_SHAPES if not args.shapes else [_shape(s) for s in args.shapes.split(";")]
    start = time.perf_counter()

    def progress(done: int, total: int, what: str) -> None:
        bar = "#" * (30 * done // total)
        sys.stderr.write(f"\r[{bar:<30}] {done}/{total} {time.perf_counter() - start:5.0f} s  {what:<40}")
        sys.stderr.write("\n" if done == total else "")
        sys.stderr.flush()

    if args.from_json:
        with open(args.from_json) as fh:
            results = json.load(fh)["results"]
    else:
        results = bench.run_grid(
            shapes, tuple(args.dtypes.split(",")), tuple(args.funcs.split(",")), tuple(args.backends.split(",")), args.rounds or 7, progress,
            args.settle,
        )
    header, rows = bench.grid_table(results)
    print("ratios: peer time / our time (above 1: we are faster); 'numpy vs copy': the copy's time / ours")
    print(_table(header, rows))
    print()
    header, *rows = bench.targets(results)
    print(_table(header, rows))
    if not args.from_json:
        machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(), "python": platform.python_version()}
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "command": " ".join(sys.argv), "results": results}, fh, indent=1)
        print(f"\nwrote {args.json}")
    bench.plot_grid(results, args.plot)
    print(f"drew {args.plot}")
    return 0


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(float(n)) for n in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"softmax-multi bench: --shapes: cannot read {text!r} as a shape like 64x1000") from None


if __name__ == "__main__":
    sys.exit(main())
