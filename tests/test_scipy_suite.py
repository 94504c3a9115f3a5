"""SciPy's own tests of softmax, log_softmax and logsumexp, as installed with SciPy, run on ours.

``scipy/special/tests/test_logsumexp.py`` with ``SCIPY_ARRAY_API=1``: SciPy's ``xp`` fixture runs
each test on NumPy, array-api-strict, PyTorch, JAX (under ``jax.jit``) and Dask (no computation
allowed), and tests/plugins/scipy_adapter.py puts our functions in the place of SciPy's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .conftest import PLUGINS


def test_scipy_own_tests_pass_on_our_functions(tmp_path):
    env = {**os.environ, "SCIPY_ARRAY_API": "1", "PYTHONPATH": str(PLUGINS)}
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
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
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
