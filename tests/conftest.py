"""Fixtures that run a test on every backend this repository ships (CI installs them all).

A backend that is not installed fails the test rather than skipping it: a skip is not a pass.
"""

from __future__ import annotations

import pathlib

import pytest
from softmax_multi.conformance.plugin import Backend

import softmax_multi as smx

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


FAKE_LIBRARY = '''
"""A throwaway third-party array library with its own softmax-multi plugin."""
from types import SimpleNamespace

import numpy as np

from softmax_multi.backends import numpy_backend as _nb
from softmax_multi.registry import BackendSpec

__version__ = "1.0"
calls = []


class FakeArray:
    def __init__(self, data, device="cpu"):
        self.data = np.asarray(data)
        self.device = device

    dtype = property(lambda self: self.data.dtype)
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)

    def __getitem__(self, key):
        return FakeArray(self.data[key], self.device)


namespace = SimpleNamespace(
    isdtype=np.isdtype, finfo=np.finfo, float32=np.dtype("float32"), float64=np.dtype("float64"),
    astype=lambda a, dtype: FakeArray(a.data.astype(dtype)),
    asarray=lambda obj, dtype=None, device=None: FakeArray(np.asarray(obj, dtype=dtype)),
    __array_namespace_info__=np.__array_namespace_info__,
)


def _native(name):
    def run(x, axes, where=None, *keepdims):
        calls.append(name)
        return FakeArray(getattr(_nb, name)(x.data, axes, None if where is None else where.data, *keepdims))
    return run


spec = BackendSpec(
    name="fakearr",
    array_types=(("fakearr", "FakeArray"),),
    module="fakearr",
    distribution="fakearr-plugin",
    namespace=lambda x: namespace,
    softmax=_native("softmax"),
    log_softmax=_native("log_softmax"),
    logsumexp=_native("logsumexp"),
    from_numpy=lambda a, device=None: FakeArray(np.array(a)),
    to_numpy=lambda x: x.data,
)
'''


# Flaws a conformance suite must catch, each a replacement softmax over the correct one (``good``).
FLAWS = {
    "no_max_subtraction": "lambda x, axes, where=None: FakeArray(np.exp(x.data) / np.exp(x.data).sum(axes, keepdims=True)) if where is None else good(x, axes, where)",
    "sequential_float32_sum": "lambda x, axes, where=None: good(x, axes, where) if where is not None or len(axes) != 1 else FakeArray(np.exp(x.data - x.data.max(axes, keepdims=True)) / np.take(np.cumsum(np.exp(x.data - x.data.max(axes, keepdims=True)), axis=axes[0]), [-1], axis=axes[0]))",
    "masked_not_zeroed": "lambda x, axes, where=None: good(x, axes, None)",
    "fully_masked_nan": "lambda x, axes, where=None: FakeArray(np.where(where.data.any(axis=axes, keepdims=True), good(x, axes, where).data, np.nan)) if where is not None else good(x, axes, where)",
    "wrong_dtype": "lambda x, axes, where=None: FakeArray(good(x, axes, where).data.astype(np.float64))",
    "input_mutated": "lambda x, axes, where=None: (lambda y: (np.copyto(x.data, y.data), y)[1])(good(x, axes, where)) if x.data.flags.writeable else good(x, axes, where)",
    "axis_ignored": "lambda x, axes, where=None: good(x, (x.ndim - 1,) if x.ndim else (), where)",
    "wrong_library": "lambda x, axes, where=None: good(x, axes, where).data",
    "wrong_device": "lambda x, axes, where=None: FakeArray(good(x, axes, where).data, device='elsewhere')",
}


def flawed_library(flaw: str | None) -> str:
    """The fake library's source with its spec renamed ``fake_<flaw>`` and its softmax broken."""
    if flaw is None:
        return FAKE_LIBRARY
    return FAKE_LIBRARY + f'''
import dataclasses
good = spec.softmax
spec = dataclasses.replace(spec, name="fake_{flaw}", softmax={FLAWS[flaw]})
'''


def write_distribution(root, dist: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """Write an installed distribution into ``root``: its modules and a ``*.dist-info`` with entry points."""
    import pathlib

    root = pathlib.Path(root)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[softmax_multi.backends]\n{lines}")


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A directory on sys.path for throwaway distributions; the registry starts cold and ends cold."""
    import importlib
    import sys

    from softmax_multi import registry

    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    before = set(sys.modules)
    registry._reset()
    yield tmp_path
    registry._reset()
    for name in set(sys.modules) - before:
        if sys.modules[name].__spec__ is not None and str(tmp_path) in str(getattr(sys.modules[name], "__file__", "")):
            del sys.modules[name]
