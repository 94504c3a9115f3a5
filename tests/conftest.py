"""Fixtures that run a test on every backend this repository ships (CI installs them all).

A backend that is not installed fails the test rather than skipping it: a skip is not a pass.
"""

from __future__ import annotations

import pathlib

import pytest
from softmax_multi.conformance.plugin import Backend

import softmax_multi as smx

# The throwaway plugins are modules to install, not tests (nor doctests) to collect.
collect_ignore = ["plugins"]

# Every built-in backend; CI installs them all, so a missing one fails rather than skips.
BACKENDS = ["numpy", "array_api_strict", "jax", "torch", "dask"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    row = {r.name: r for r in smx.list_backends()}[request.param]
    assert row.status == "ready", f"backend {request.param} is {row.status}: {row.error}"
    return Backend.named(request.param)


@pytest.fixture
def readme_example():
    """``readme_example(first_line)``: the README's Python example that starts with that line."""

    def find(first_line: str) -> str:
        readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
        start = readme.index("```python\n" + first_line) + len("```python\n")
        return readme[start : readme.index("```", start)]

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
