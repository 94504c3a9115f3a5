"""Run the conformance suite and report it as a matrix: checks x backends, pass/fail and error in eps.

This is what ``softmax-multi conformance`` runs: the very tests ``pytest --pyargs
softmax_multi.conformance`` runs, collected by a small pytest plugin instead of printed line by line.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any

import pytest

from .oracle import TOLERANCE_ULPS
from .plugin import check_name

_ORDER = {"passed": 0, "xfailed": 1, "skipped": 2, "failed": 3}


class Collector:
    """Gathers, per (check, backend), the worst outcome and the largest error in eps."""

    def __init__(self, stream: Any = sys.stderr, progress: bool = True):
        self.cells: dict[tuple[str, str], dict[str, Any]] = {}
        self.where: dict[str, tuple[str, list[str]]] = {}
        self.total = self.done = 0
        self.stream = stream
        self.progress = progress

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            params = getattr(item, "callspec", None)
            params = params.params if params else {}
            if "backend_pair" in params:
                names = list(params["backend_pair"])
            elif "backend_name" in params:
                names = [params["backend_name"]]
            else:
                names = ["(all)"]
            self.where[item.nodeid] = (check_name(item), names)
        self.total = len(session.items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
            if report.when != "call" and outcome == "passed":
                return
            check, names = self.where.get(report.nodeid, (report.nodeid, ["?"]))
            eps = dict(report.user_properties).get("eps")
            for name in names:
                cell = self.cells.setdefault((check, name), {"status": "passed", "max_eps": None, "failures": []})
                if _ORDER[outcome] > _ORDER[cell["status"]]:
                    cell["status"] = outcome
                if outcome == "failed":
                    cell["failures"].append(report.nodeid)
                if eps is not None:
                    cell["max_eps"] = max(eps, cell["max_eps"] or 0.0)
        if report.when == "teardown":
            self.done += 1
            width = 40
            filled = width * self.done // max(self.total, 1)
            if self.progress and (filled != width * (self.done - 1) // max(self.total, 1) or self.done == self.total):
                self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
                if self.done == self.total:
                    self.stream.write("\n")
                self.stream.flush()

    def matrix(self) -> tuple[list[str], list[list[str]]]:
        backends = sorted({b for _, b in self.cells if b != "(all)"})
        checks = list(dict.fromkeys(c for c, _ in self.cells))
        rows = []
        for check in checks:
            row = [check]
            for b in backends:
                cell = self.cells.get((check, b))
                if cell is None:
                    row.append("-")
                    continue
                label = {"passed": "pass", "failed": "FAIL", "xfailed": "known", "skipped": "skip"}[cell["status"]]
                if cell["max_eps"] is not None:
                    label += f" {cell['max_eps']:.3g}"
                row.append(label)
            rows.append(row)
        return ["check", *backends], rows

    def as_json(self, tier: str) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        for (check, backend), cell in self.cells.items():
            checks.setdefault(check, {})[backend] = cell
        return {"tier": tier, "tolerance_eps": TOLERANCE_ULPS, "checks": checks}


def run(backends: list[str], tier: str, json_path: str | None = None, max_examples: int | None = None) -> tuple[int, Collector]:
    """Run the suite; return pytest's exit code and the collected matrix."""
    args = ["--pyargs", "softmax_multi.conformance", "-p", "no:cacheprovider", "--tier", tier]
    for name in backends:
        args += ["--backend", name]
    if max_examples is not None:
        args += ["--max-examples", str(max_examples)]
    collector = Collector()
    with contextlib.redirect_stdout(io.StringIO()):  # pytest's own report: the matrix replaces it
        code = pytest.main(args, plugins=[collector])
    if json_path:
        with open(json_path, "w") as f:
            json.dump(collector.as_json(tier), f, indent=2)
    return int(code), collector
