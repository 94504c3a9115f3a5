"""Two real array-API libraries from PyPI, each certified as its plugin's author would: the whole
conformance suite, from outside this checkout, through an installed distribution's entry point.

* ndonnx (ONNX-backed arrays): the README's plugin example, extracted from README.md verbatim;
* Cubed (chunked, lazy, bounded memory): tests/plugins/smx_cubed.py.

Each certification takes minutes (ndonnx evaluates every operation through onnxruntime, Cubed plans
and runs every computation through its executor), so both start in the background as soon as these
tests are collected (tests/conftest.py: BACKGROUND) and run beside the rest of the suite.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import sys

from .conftest import background, plugin_env, write_distribution

MAX_EXAMPLES = "20"  # Hypothesis examples per property: each example costs Cubed a computation


def _readme_plugin() -> tuple[str, dict[str, str]]:
    """The README's plugin example: its module source and its entry points, as written there."""
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Register a backend") :]
    toml = section[section.index("```toml\n") + 8 : section.index("```", section.index("```toml\n") + 8)]
    module = section[section.index("```python\n") + 10 : section.index("```", section.index("```python\n") + 10)]
    entry_points = dict(re.findall(r'^(\w+) = "([^"]+)"$', toml, flags=re.M))
    return module, entry_points


def _certify(name: str, where: pathlib.Path) -> tuple[list[str], dict[str, str]]:
    """The conformance CLI on ``name``'s plugin, installed as a distribution in ``where``."""
    if name == "ndonnx":
        module, entry_points = _readme_plugin()
        write_distribution(where, "smx-ndonnx", entry_points, {"smx_ndonnx": module})
    else:
        write_distribution(where, "smx-cubed", {"cubed": "smx_cubed:spec"})
    cmd = [sys.executable, "-m", "softmax_multi.cli", "conformance", "--smx-backend", name]
    return cmd + ["--smx-max-examples", MAX_EXAMPLES, "--json", str(where / "report.json")], plugin_env(where)


BACKGROUND = {name: functools.partial(_certify, name) for name in ("ndonnx", "cubed")}


def _passed_everything(name: str):
    run, where = background(name, BACKGROUND[name])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    report = json.loads((where / "report.json").read_text())
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
