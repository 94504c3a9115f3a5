"""Two real array-API libraries from PyPI, each certified as its plugin's author would: the whole
conformance suite, from outside this checkout, through an installed distribution's entry point.

* ndonnx (ONNX-backed arrays): the README's plugin example, extracted from README.md verbatim;
* Cubed (chunked, lazy, bounded memory): tests/plugins/smx_cubed.py.

Each certification takes minutes (ndonnx evaluates every operation through onnxruntime, Cubed plans
and runs every computation through its executor), so both start in the background as soon as these
tests are collected (tests/conftest.py) and run beside the rest of the suite.
"""

from __future__ import annotations

import json

from .conftest import third_party_certification


def _passed_everything(name: str):
    run, report_path = third_party_certification(name)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    cells = {check: cells[name] for check, cells in report["checks"].items() if name in cells}
    assert len(cells) >= 30, sorted(cells)  # the whole suite, not a part of it
    failing = {check: cell["failures"][:2] for check, cell in cells.items() if cell["status"] != "passed"}
    assert not failing, failing
    return cells


def test_the_readme_plugin_is_certified_verbatim():
    cells = _passed_everything("ndonnx")
    # ndonnx sums float32 in order; the reference's float64 accumulation keeps its long rows accurate
    assert cells["float32_long_rows"]["max_eps"] <= 16


def test_cubed_is_certified():
    _passed_everything("cubed")
