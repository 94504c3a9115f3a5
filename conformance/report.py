"""Run the conformance suite and report it as a matrix: checks x backends, pass/FAIL and error in eps,
then why each failure failed and how to rerun it.

This is what ``softmax-multi conformance`` runs: the very tests ``pytest -p
softmax_multi.conformance.plugin --pyargs softmax_multi.conformance`` runs, collected by a small
pytest plugin instead of printed line by line.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
from typing import Any

import pytest

from softmax_multi._text import Progress

from .oracle import TOLERANCE_ULPS
from .plugin import check_name, selected_backends

_ORDER = {"passed": 0, "xfailed": 1, "skipped": 2, "failed": 3}
_LABEL = {"passed": "pass", "failed": "FAIL", "xfailed": "known", "skipped": "skip"}
SHOWN_PER_CELL = 3  # failing tests listed per FAIL cell (the JSON lists them all)


class Collector:
    """Gathers, per (check, backend), the worst outcome, the largest error in eps and the failures."""

    def __init__(self, stream: Any = sys.stderr, progress: bool = True):
        self.cells: dict[tuple[str, str], dict[str, Any]] = {}
        self.where: dict[str, tuple[str, list[str], str]] = {}
        self.stream = stream
        self.progress_enabled = progress
        self.progress: Progress | None = None
        self.under_test: set[str] = set()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.under_test = set(selected_backends(session.config))
        for item in session.items:
            params = getattr(item, "callspec", None)
            params = params.params if params else {}
            if "backend_pair" in params:
                names = list(params["backend_pair"])
            elif "backend_name" in params:
                names = [params["backend_name"]]
            else:
                names = ["(all)"]
            self.where[item.nodeid] = (check_name(item), names, f"{item.path}::{item.name}")
        self.progress = Progress(len(session.items), self.stream, width=40, enabled=self.progress_enabled)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
            if report.when != "call" and outcome == "passed":
                return
            check, names, test = self.where.get(report.nodeid, (report.nodeid, ["?"], report.nodeid))
            props: dict[str, Any] = dict(report.user_properties)
            eps = props.get("eps")
            if outcome == "failed" and props.get("blame"):  # a disagreement charged to who disagrees with the oracle
                names = [n for n in names if n in props["blame"]] or names
            elif len(names) > 1:  # a pair that agrees: a pass for the backends under test
                names = [n for n in names if n in self.under_test] or names
            for name in names:
                empty: dict[str, Any] = {"status": "passed", "max_eps": None, "failing_eps": None, "failures": []}
                cell = self.cells.setdefault((check, name), empty)
                if _ORDER[outcome] > _ORDER[cell["status"]]:
                    cell["status"] = outcome
                if outcome == "failed":
                    cell["failures"].append({"test": test, "message": _first_line(report), "eps": eps})
                    if eps is not None:
                        cell["failing_eps"] = max(eps, cell["failing_eps"] or 0.0)
                elif eps is not None:
                    cell["max_eps"] = max(eps, cell["max_eps"] or 0.0)
        if report.when == "teardown" and self.progress is not None:
            self.progress.advance()

    def matrix(self) -> tuple[list[str], list[list[str]]]:
        """The table: a row per check, a column per backend; '-' where a backend had nothing to test."""
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
                label = _LABEL[cell["status"]]
                eps = cell["failing_eps"] if cell["status"] == "failed" else cell["max_eps"]
                if eps is not None:
                    label += f" {eps:.3g}"
                row.append(label)
            rows.append(row)
        return ["check", *backends], rows

    def failures(self) -> list[tuple[str, str, list[dict[str, Any]]]]:
        """(check, backend, failing tests) of every FAIL cell."""
        return [(check, name, cell["failures"]) for (check, name), cell in self.cells.items() if cell["status"] == "failed"]

    def explain(self) -> str:
        """Below the matrix: each FAIL cell's failing tests, the first line of each assertion, and
        how to rerun one in pytest."""
        lines = []
        for check, name, failures in self.failures():
            lines.append(f"FAIL {check} on {name}: {len(failures)} failing")
            for f in failures[:SHOWN_PER_CELL]:
                lines.append(f"  {f['test'].rpartition('/')[2]}: {f['message']}")
            if len(failures) > SHOWN_PER_CELL:
                lines.append(f"  ... and {len(failures) - SHOWN_PER_CELL} more (all of them in --json)")
            lines.append(f"  rerun one: {rerun_command(failures[0]['test'], name)}")
        return "\n".join(lines)

    def as_json(self, tier: str, **extra: Any) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        for (check, backend), cell in self.cells.items():
            checks.setdefault(check, {})[backend] = cell
        return {"tier": tier, "tolerance_eps": TOLERANCE_ULPS, "checks": checks, **extra}


def rerun_command(test: str, backend: str) -> str:
    """The pytest command that runs one test of the suite again, on one backend."""
    return shlex.join([sys.executable, "-m", "pytest", "-p", "softmax_multi.conformance.plugin", test, "--smx-backend", backend])


def _first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if crash is not None else lines[-1]) if lines else "(no message)"


def run(
    backends: list[str],
    tier: str,
    json_path: str | None = None,
    max_examples: int | None = None,
    known_failure_files: list[str] | None = None,
    progress: bool = True,
    extra_report: dict[str, Any] | None = None,
) -> tuple[int, Collector]:
    """Run the suite; return pytest's exit code and the collected matrix."""
    args = [
        "-p",
        "softmax_multi.conformance.plugin",
        "--pyargs",
        "softmax_multi.conformance",
        "-p",
        "no:cacheprovider",
        "--smx-tier",
        tier,
    ]
    for name in backends:
        args += ["--smx-backend", name]
    if max_examples is not None:
        args += ["--smx-max-examples", str(max_examples)]
    for path in known_failure_files or ():
        args += ["--smx-known-failures", path]
    collector = Collector(progress=progress)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):  # pytest's own report: the matrix replaces it
        code = pytest.main(args, plugins=[collector])
    if int(code) not in (0, 1):  # pytest could not run the suite: its own words say why
        sys.stderr.write(captured.getvalue()[-4000:])
    if json_path:
        with open(json_path, "w") as f:
            json.dump(collector.as_json(tier, **(extra_report or {})), f, indent=2)
    return int(code), collector
