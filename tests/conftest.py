"""Fixtures that run a test on every backend this repository ships (CI installs them all).

A backend that is not installed fails the test rather than skipping it: a skip is not a pass.
"""

from __future__ import annotations

import pathlib

import pytest

import softmax_multi as smx
from softmax_multi.conformance.plugin import Backend

# The throwaway plugins are modules to install, not tests (nor doctests) to collect.
collect_ignore = ["plugins"]

# Every built-in backend; CI installs them all, so a missing one fails rather than skips.
BACKENDS = ["numpy", "array_api_strict", "jax", "torch", "dask"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    row = {r.name: r for r in smx.list_backends()}[request.param]
    assert row.status == "ready", f"backend {request.param} is {row.status}: {row.error}"
    return Backend.named(request.param)


DOCUMENTS = [
    pathlib.Path(__file__).parent.parent / "README.md",
    *sorted((pathlib.Path(__file__).parent.parent / "docs").glob("*.md")),
]


def python_blocks() -> list[tuple[str, str]]:
    """Every ```python block of README.md and docs/*.md: (where, code)."""
    blocks = []
    for path in DOCUMENTS:
        text = path.read_text()
        start = 0
        while (start := text.find("```python\n", start)) >= 0:
            start += len("```python\n")
            end = text.index("```", start)
            line = text.count("\n", 0, start) + 1
            blocks.append((f"{path.name}:{line}", text[start:end]))
            start = end + 3
    return blocks


@pytest.fixture
def readme_example():
    """``readme_example(first_line)``: the Python example of README.md or docs/ that starts with that line."""

    def find(first_line: str) -> str:
        matches = [code for _, code in python_blocks() if code.startswith(first_line)]
        assert len(matches) == 1, f"{len(matches)} examples start with {first_line!r}"
        return matches[0]

    return find


@pytest.fixture
def data(rng):
    """A small (4, 6) input and a mask whose second slice is fully masked."""
    x = rng.standard_normal((4, 6)) * 3
    w = rng.random((4, 6)) < 0.6
    w[1] = False
    return x, w


PLUGINS = pathlib.Path(__file__).parent / "plugins"  # throwaway plugins: real modules, put on sys.path


def write_distribution(root, dist: str, entry_points: dict[str, str], modules: dict[str, str] | None = None) -> None:
    """Write an installed distribution into ``root``: a ``*.dist-info`` with its entry points (and
    any extra modules); its code comes from tests/plugins, which must be on the path too."""
    root = pathlib.Path(root)
    for name, source in (modules or {}).items():
        (root / f"{name}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[softmax_multi.backends]\n{lines}")


def plugin_env(root) -> dict[str, str]:
    """The environment of a subprocess that sees the distributions in ``root`` and tests/plugins."""
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(PLUGINS)])}


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A directory on sys.path for throwaway distributions (tests/plugins too); the registry starts
    cold and ends cold."""
    import importlib
    import sys

    from softmax_multi import registry

    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    before = set(sys.modules)
    registry.reset()
    yield tmp_path
    registry.reset()
    for name in set(sys.modules) - before:
        origin = str(getattr(sys.modules[name], "__file__", "") or "")
        if str(tmp_path) in origin or str(PLUGINS) in origin:
            del sys.modules[name]


# --- long subprocess runs, started in the background when collection finishes ------------------
#
# A test module lists its long subprocess runs in ``BACKGROUND`` (a name and a function that,
# given a fresh directory to run in, returns the command and its environment). They all start as
# soon as collection finishes, so that they run beside the tests in this process (which use about
# one core of the two CI has), and the tests that read them run last (pytest_collection_modifyitems
# below), by when most are done. ``background(name, make)`` is the finished run.

_RUNS: dict = {}


def _start(name: str, make) -> None:
    import subprocess
    import tempfile

    where = pathlib.Path(tempfile.mkdtemp(prefix=f"smx-{name}-"))
    cmd, env = make(where)
    out, err = open(where / "stdout", "w"), open(where / "stderr", "w")  # noqa: SIM115 (the background process writes them)
    _RUNS[name] = (subprocess.Popen(cmd, cwd=where, env=env, stdout=out, stderr=err), where)


def _background_runs(items) -> dict:
    runs: dict = {}
    for item in items:
        runs.update(getattr(getattr(item, "module", None), "BACKGROUND", {}))
    return runs


def pytest_collection_modifyitems(session, config, items):
    """The tests that wait on a background run go last, in their order."""
    items.sort(key=lambda item: bool(getattr(getattr(item, "module", None), "BACKGROUND", None)))


def pytest_collection_finish(session):
    for name, make in _background_runs(session.items).items():
        _start(name, make)


def background(name: str, make):
    """The finished background run ``name`` (started here if collection did not start it): a
    CompletedProcess, and the directory it ran in."""
    import subprocess

    if name not in _RUNS:
        _start(name, make)
    proc, where = _RUNS[name]
    proc.wait(timeout=1800)
    run = subprocess.CompletedProcess(proc.args, proc.returncode, (where / "stdout").read_text(), (where / "stderr").read_text())
    return run, where
