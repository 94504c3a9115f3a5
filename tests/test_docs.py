"""Every Python code block of README.md and docs/*.md runs, as written there.

Doctest blocks (``>>>``) run as doctests; the others as scripts in a fresh interpreter in a
temporary directory, with the environment their first line asks for (``# NAME=value python
this.py``), and every ``print(...)  # output`` line's output checked. Blocks whose own test checks
more than that run there instead, named in DEDICATED.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys

import pytest

from .conftest import python_blocks

# first line of a block -> the test that runs it (and checks what it produces)
DEDICATED = {
    "# bigger than memory": "tests/test_dask.py::test_readme_example_runs",
    "# XLA_FLAGS=": "tests/test_jax.py::test_readme_sharding_example_runs",
    "# smx_ndonnx.py": "tests/test_third_party.py::test_the_readme_plugin_is_certified_verbatim",
}


def _dedicated(code: str) -> str | None:
    return next((test for first, test in DEDICATED.items() if code.startswith(first)), None)


BLOCKS = [(where, code) for where, code in python_blocks() if _dedicated(code) is None]
DOCTESTS = [(where, code) for where, code in BLOCKS if ">>>" in code]
SCRIPTS = [(where, code) for where, code in BLOCKS if ">>>" not in code]


def test_every_block_is_run_somewhere():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    for where, code in python_blocks():
        test = _dedicated(code)
        if test is not None:
            path, _, name = test.partition("::")
            assert f"def {name}(" in (root / path).read_text(), f"{where} is said to run in {test}, which does not exist"


@pytest.mark.parametrize("where,code", DOCTESTS, ids=[w for w, _ in DOCTESTS])
def test_doctest_block(where, code):
    test = doctest.DocTestParser().get_doctest(code, {}, where, where, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.tries > 0 and runner.failures == 0, f"{where}: {runner.failures} of {runner.tries} examples failed"


@pytest.mark.parametrize("where,code", SCRIPTS, ids=[w for w, _ in SCRIPTS])
def test_script_block(where, code, tmp_path):
    env = dict(os.environ)
    first = code.splitlines()[0]
    if first.startswith("#") and " python " in first:  # e.g. "# XLA_FLAGS=... python this.py"
        env.update(re.findall(r"(\w+)=(\S+)", first.split(" python ")[0]))
    script = tmp_path / "block.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{where}:\n{run.stderr[-3000:]}"
    for expected in re.findall(r"^\s*print\(.*\)\s+#\s*(.+)$", code, flags=re.M):
        for part in expected.split("..."):
            assert part.strip() in run.stdout, f"{where}: {part.strip()!r} not printed; got {run.stdout!r}"
