"""SciPy's own tests of softmax, log_softmax and logsumexp, as installed with SciPy, run on ours.

``scipy/special/tests/test_logsumexp.py`` with ``SCIPY_ARRAY_API=1``: SciPy's ``xp`` fixture runs
each test on NumPy, array-api-strict, PyTorch, JAX (under ``jax.jit``) and Dask (no computation
allowed), and tests/plugins/scipy_adapter.py puts our functions in the place of SciPy's.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys

from .conftest import PLUGINS, background


def _scipy_tests(where: pathlib.Path) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "SCIPY_ARRAY_API": "1",
        "PYTHONPATH": str(PLUGINS),
        # SciPy's xp fixture jits a fresh function per call, so that JAX compiles the same program
        # again for every case (334 compilations, 70 s of the run): the persistent cache, in this
        # run's own directory, compiles each once.
        "JAX_COMPILATION_CACHE_DIR": str(where / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "scipy.special.tests.test_logsumexp",
        "-p",
        "scipy_adapter",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rA",  # every outcome in the summary, passes included: the ids show which libraries ran
    ]
    return cmd, env


BACKGROUND = {"scipy-suite": _scipy_tests}  # started when collection finishes (tests/conftest.py)


def test_scipy_own_tests_pass_on_our_functions():
    run, _ = background("scipy-suite", _scipy_tests)
    out = run.stdout
    assert run.returncode == 0, out[-5000:] + run.stderr[-2000:]
    assert (
        "scipy_adapter replaced: "
        + ", ".join(f"scipy.special.tests.test_logsumexp.{name}" for name in ("log_softmax", "logsumexp", "softmax"))
        in out
    )
    summary = out.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 2000, summary  # about 2 000 cases over the five libraries
    assert not re.search(r"\d+ (failed|skipped|errors?)\b", summary), summary
    for library in ("numpy", "array_api_strict", "torch", "jax.numpy", "dask.array"):
        assert re.search(rf"^PASSED \S+\[{re.escape(library)}\b", out, flags=re.M), f"SciPy's xp fixture did not run {library}"
