"""Installing softmax-multi changes nothing in another project's test run.

A throwaway project with its own ``--backend`` and ``--max-examples`` options (as array-api-tests
has) and a test of Hypothesis' defaults runs with softmax-multi installed: no option of ours, no
Hypothesis profile of ours, and nothing of ours (nor NumPy) imported.
"""

from __future__ import annotations

import os
import subprocess
import sys

CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--backend", default="mine")
    parser.addoption("--max-examples", type=int, default=7)
"""

TESTS = """
import sys

from hypothesis import given, settings, strategies as st


def test_our_options_are_ours(pytestconfig):
    assert pytestconfig.getoption("--backend") == "mine"
    assert pytestconfig.getoption("--max-examples") == 7


def test_hypothesis_defaults_are_untouched():
    assert settings.get_current_profile_name() == "default"
    assert settings().max_examples == 100 and not settings().derandomize and settings().database is not None


@given(st.integers())
def test_a_property(n):
    assert isinstance(n, int)


def test_nothing_of_softmax_multi_was_imported():
    assert not [m for m in sys.modules if m == "softmax_multi" or m.startswith("softmax_multi.")]
    assert "numpy" not in sys.modules
"""


def _others_plugins() -> list[str]:
    """``-p no:NAME`` for the pytest plugins of other distributions that import NumPy themselves
    (zarr's, here): the test is about ours. Hypothesis' own stays, and so would any of ours."""
    from importlib.metadata import entry_points

    keep = ("hypothesis", "softmax-multi", "softmax_multi")
    args = []
    for ep in entry_points(group="pytest11"):
        if ep.dist is None or ep.dist.name not in keep:
            args += ["-p", f"no:{ep.name}"]
    return args


def test_another_project_runs_as_if_softmax_multi_were_not_installed(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_theirs.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # with CI set, Hypothesis loads its own "ci" profile
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *_others_plugins()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "4 passed" in run.stdout
    helped = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "--smx-" not in helped.stdout and "softmax-multi" not in helped.stdout


def test_softmax_multi_installs_no_pytest_plugin():
    from importlib.metadata import entry_points

    assert not [ep for ep in entry_points(group="pytest11") if ep.value.startswith("softmax_multi")]
