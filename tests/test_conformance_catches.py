"""The conformance suite fails broken backends and passes a correct one, each a real third-party plugin.

Every plugin (tests/plugins) is installed as a distribution with its entry point in a temporary
directory and certified the way its author would, from outside this checkout: all of them in one
``softmax-multi conformance --json`` run, whose report the tests below read back.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from .conftest import PLUGINS, background, plugin_env, write_distribution

sys.path.insert(0, str(PLUGINS))
from fake_flaws import FLAWS

sys.path.remove(str(PLUGINS))
for _module in ("fake_flaws", "fakearr"):  # in-process tests import them afresh (tests/conftest.py: plugin_path)
    sys.modules.pop(_module, None)

CERTIFIED = ["fakearr", *(f"fake_{flaw}" for flaw in FLAWS), "fake_known", "numpy"]


def _certify(root: pathlib.Path) -> tuple[list[str], dict[str, str]]:
    """One run certifying every fake plugin and NumPy, installed as a distribution in ``root``."""
    entry_points = {
        "fakearr": "fakearr:spec",
        "fake_known": "fake_flaws:spec_known",
        "broken": "broken_import:spec",
        "absent": "odd_plugins:absent",
    }
    entry_points.update({f"fake_{flaw}": f"fake_flaws:spec_{flaw}" for flaw in FLAWS})
    write_distribution(root, "fake-plugins", entry_points)
    env = plugin_env(root) | {"SOFTMAX_MULTI_DISABLE": "array_api_strict,jax,torch,dask"}  # pairs with NumPy only
    cmd = [
        sys.executable,
        "-m",
        "softmax_multi.cli",
        "conformance",
        "--smx-max-examples",
        "5",
        "--json",
        str(root / "report.json"),
    ]
    for name in CERTIFIED:
        cmd += ["--smx-backend", name]
    return cmd, env


BACKGROUND = {"fake-plugins": _certify}  # started when collection finishes (tests/conftest.py)


@pytest.fixture(scope="module")
def certified():
    """The run certifying every fake plugin and NumPy: its exit code, output and JSON report."""
    run, root = background("fake-plugins", _certify)
    return run, json.loads((root / "report.json").read_text())


def _cells(report, backend):
    return {check: cells[backend] for check, cells in report["checks"].items() if backend in cells}


def test_a_correct_third_party_backend_passes_everything(certified):
    _, report = certified
    cells = _cells(report, "fakearr")
    assert cells and all(c["status"] == "passed" for c in cells.values()), {k: c["status"] for k, c in cells.items()}


@pytest.mark.parametrize("flaw", list(FLAWS))
def test_each_flaw_fails_its_check_with_the_reason(certified, flaw):
    run, report = certified
    cell = _cells(report, f"fake_{flaw}")[FLAWS[flaw]]
    assert cell["status"] == "failed", cell
    assert cell["failures"] and all(f["message"] and f["test"] for f in cell["failures"])
    assert f"FAIL {FLAWS[flaw]} on fake_{flaw}:" in run.stdout


def test_failures_are_explained_below_the_matrix(certified):
    run, report = certified
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    failures = out[out.index("FAIL axis_forms on fake_axis_ignored") :]
    assert "error inf eps exceeds 16 eps" in failures or "eps exceeds" in failures  # the assertion's first line
    rerun = next(line for line in failures.splitlines() if line.strip().startswith("rerun one:"))
    assert "-p softmax_multi.conformance.plugin" in rerun and "--smx-backend fake_axis_ignored" in rerun
    cell = _cells(report, "fake_sequential_float32_sum")["float32_long_rows"]
    assert cell["failing_eps"] > 16  # a FAIL cell shows the failing case's error, not a passing one's


def test_the_rerun_command_reruns_the_failing_test(certified, tmp_path):
    run, _ = certified
    line = next(line for line in run.stdout.splitlines() if line.strip().startswith("rerun one:") and "fake_axis_ignored" in line)
    import shlex

    cmd = shlex.split(line.split("rerun one:", 1)[1])
    root = tmp_path
    write_distribution(root, "fake-plugins", {"fake_axis_ignored": "fake_flaws:spec_axis_ignored"})
    again = subprocess.run(
        cmd + ["-q", "-p", "no:cacheprovider"], cwd=root, env=plugin_env(root), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 1 and "1 failed" in again.stdout, again.stdout[-3000:]


def test_a_disagreement_is_charged_to_the_backend_that_is_wrong(certified):
    _, report = certified
    assert _cells(report, "numpy")["backends_agree_pairwise"]["status"] == "passed"
    assert _cells(report, "fake_no_max_subtraction")["backends_agree_pairwise"]["status"] == "failed"


def test_known_failures_of_one_variant(certified):
    """large_inputs_do_not_overflow declared for softmax alone: those variants are known (xfail,
    strict), log_softmax's and logsumexp's still pass (no XPASS), and a stale name is warned about."""
    run, report = certified
    cells = _cells(report, "fake_known")
    assert cells["large_inputs_do_not_overflow"]["status"] == "xfailed"
    matrix_row = next(line for line in run.stdout.splitlines() if line.startswith("large_inputs_do_not_overflow"))
    assert "known" in matrix_row


def test_plugins_that_cannot_be_certified_are_reported(certified):
    run, report = certified
    assert report["failed_plugins"]["broken"]["error"] == "ImportError: no such thing here"
    assert "plugin broken (broken_import:spec) failed to load: ImportError: no such thing here" in run.stdout
    assert report["unavailable"]["absent"] == "not installed"


def test_a_check_with_nothing_to_test_shows_a_dash(certified):
    run, report = certified
    # fakearr declares neither float16/bfloat16 nor complex dtypes: nothing to test, not a pass
    assert "low_precision_accumulates_in_float32" not in _cells(report, "fakearr")
    assert "complex_logsumexp" not in _cells(report, "fakearr")
    header = next(line for line in run.stdout.splitlines() if line.startswith("check "))
    row = next(line for line in run.stdout.splitlines() if line.startswith("low_precision_accumulates_in_float32"))
    column = header.split().index("fakearr")
    assert row.split()[column] == "-"


def test_known_failures_from_a_file_and_a_warning_at_the_spec(tmp_path):
    write_distribution(
        tmp_path,
        "fake-known",
        {"fake_known": "fake_flaws:spec_known", "fake_no_max_subtraction": "fake_flaws:spec_no_max_subtraction"},
    )
    listed = tmp_path / "known.txt"
    listed.write_text("# my backend's known failures\nlarge_inputs_do_not_overflow:softmax  # no max subtraction yet\n")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "softmax_multi.conformance.plugin",
        "--pyargs",
        "softmax_multi.conformance",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "large_inputs_do_not_overflow",
        "-W",
        "always",
        "-rxX",
    ]
    env = plugin_env(tmp_path)
    from_spec = subprocess.run(
        cmd + ["--smx-backend", "fake_known"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert from_spec.returncode == 0, from_spec.stdout[-3000:]
    assert "1 xfailed" in from_spec.stdout and "XPASS" not in from_spec.stdout
    assert "properties_of_unicorns" in from_spec.stdout and "matches no conformance check" in from_spec.stdout
    assert "fake_flaws.py" in from_spec.stdout  # the warning points at the module of the spec
    from_file = subprocess.run(
        cmd + ["--smx-backend", "fake_no_max_subtraction", "--smx-known-failures", str(listed)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert from_file.returncode == 0, from_file.stdout[-3000:]
    assert "1 xfailed" in from_file.stdout and "no max subtraction yet" in from_file.stdout
