"""The conformance suite's pytest plugin: ``--backend``, ``--tier``, ``--max-examples``, known failures.

pytest loads it through the ``pytest11`` entry point of this distribution (so ``--backend`` exists
before arguments are parsed), and the suite's tests take a ``backend`` fixture parametrised over
the chosen backends. ``--backend`` takes a registered name or ``module:attribute`` of a spec.
"""

from __future__ import annotations

import importlib
import pathlib
import warnings
from typing import Any

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi import registry
from softmax_multi._args import dtype_name


class Backend:
    """One backend under test: its spec, and how to move NumPy data in and out."""

    def __init__(self, spec: registry.BackendSpec, device: str | None = None):
        self.spec = spec
        self.name = spec.name
        self.device = device

    @classmethod
    def named(cls, name: str) -> Backend:
        return cls(resolve_backend(name))

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return self.spec.from_numpy(np.asarray(a, dtype=dtype), self.device)

    def numpy(self, x: Any) -> np.ndarray:
        return np.asarray(self.spec.to_numpy(x))

    def dtype_name(self, x: Any) -> str:
        return str(self.numpy(x).dtype)

    def default_float(self) -> str:
        xp = self.spec.namespace(self.asarray(np.zeros(1)))
        return dtype_name(xp.__array_namespace_info__().default_dtypes()["real floating"])

    def dtypes(self) -> tuple[str, ...]:
        declared = self.spec.dtypes
        return tuple(declared() if callable(declared) else declared)

    def owns(self, y: Any) -> bool:
        """Is ``y`` an array of this backend's library (not, say, a NumPy array in disguise)?"""
        return registry._claims(self.spec, type(y)) or (
            not self.spec.array_types and hasattr(y, "__array_namespace__")
        )

    def __repr__(self) -> str:
        return self.name if self.device in (None, "cpu") else f"{self.name}[{self.device}]"


def resolve_backend(name: str) -> registry.BackendSpec:
    """A registered backend name, or ``module:attribute`` naming a spec (registered if it is new)."""
    if ":" not in name:
        spec = smx.get_backend(name)
        row = {r.name: r for r in smx.list_backends()}[name]
        if row.status != "ready":
            raise pytest.UsageError(f"backend {name!r} is {row.status}: {row.error or 'install it first'}")
        return spec
    module, _, attr = name.partition(":")
    spec = getattr(importlib.import_module(module), attr)
    try:
        if smx.get_backend(spec.name) is not spec:
            raise pytest.UsageError(f"{name} is named {spec.name!r}, which another backend already has")
    except LookupError:
        smx.register_backend(spec)
    return spec


def testable_backends() -> list[str]:
    """Every ready backend that can take NumPy test data."""
    return [
        r.name
        for r in smx.list_backends()
        if r.status == "ready" and smx.get_backend(r.name).from_numpy is not None
    ]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("softmax-multi conformance")
    group.addoption("--backend", action="append", default=[], help="backend to certify (name or module:attr); repeatable; default: every ready backend")
    group.addoption("--tier", choices=["quick", "full"], default="full", help="quick leaves out rows of 1e6 and longer")
    group.addoption("--max-examples", type=int, default=50, help="Hypothesis examples per property")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: rows of 1e6 and more (left out by --tier quick)")
    config.addinivalue_line("markers", "check(name): the conformance check a test belongs to")
    try:
        from hypothesis import settings

        settings.register_profile(
            "softmax-multi", max_examples=config.getoption("--max-examples"), derandomize=True, deadline=None, database=None
        )
        settings.load_profile("softmax-multi")
    except ImportError:  # Hypothesis is needed only by the property tests
        pass


def selected_backends(config: pytest.Config) -> list[str]:
    return config.getoption("--backend") or testable_backends()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not _is_suite_file(metafunc.definition.path):
        return
    names = selected_backends(metafunc.config)
    if "backend_pair" in metafunc.fixturenames:  # the backend under test beside every other one
        others = sorted(set(testable_backends()) | set(names))
        pairs = sorted({tuple(sorted((n, o))) for n in names for o in others if o != n})
        metafunc.parametrize("backend_pair", pairs, ids=["-".join(p) for p in pairs])
    if "transform_name" in metafunc.fixturenames:  # every transform each backend declares
        pairs = [(n, t) for n in names for t in sorted(Backend.named(n).spec.transforms)]
        metafunc.parametrize(["backend_name", "transform_name"], pairs, scope="session")
        return
    if "device" in metafunc.fixturenames:  # every device the backend offers here (CUDA on a GPU machine)
        pairs = [(n, d) for n in names for d in Backend.named(n).spec.devices()]
        metafunc.parametrize(["backend_name", "device"], pairs, scope="session")
        return
    if "backend_name" not in metafunc.fixturenames:
        return
    if "float_dtype" in metafunc.fixturenames:  # only the dtypes each backend declares
        pairs = [(n, d) for n in names for d in ("float32", "float64") if d in Backend.named(n).dtypes()]
        metafunc.parametrize(["backend_name", "float_dtype"], pairs, scope="session")
    else:
        metafunc.parametrize("backend_name", names, scope="session")


@pytest.fixture(scope="session")
def backend(backend_name: str) -> Backend:
    """The backend under test (the suite parametrises ``backend_name`` over ``--backend``)."""
    return Backend(resolve_backend(backend_name))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def check_name(item: pytest.Item) -> str:
    """The check a test belongs to: its function name without ``test_``."""
    return getattr(item, "originalname", item.name).removeprefix("test_")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--tier") == "quick":
        kept = [i for i in items if i.get_closest_marker("slow") is None]
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
    # A backend without transforms gives an empty parameter set: nothing to check, not a skip.
    empty = [i for i in items if _in_suite(i) and any("got empty parameter set" in str(m.kwargs.get("reason", "")) for m in i.iter_markers("skip"))]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [i for i in items if i not in empty]
    checks = {check_name(i) for i in items if _in_suite(i)}
    for name in selected_backends(config):
        try:
            spec = resolve_backend(name)
        except Exception:  # reported when the fixture resolves it
            continue
        for check in spec.known_failures:
            if check not in checks:
                warnings.warn(
                    f"backend {spec.name!r} lists a known failure {check!r} that matches no conformance check",
                    pytest.PytestWarning,
                    stacklevel=2,
                )
        for item in items:
            callspec = getattr(item, "callspec", None)
            if _in_suite(item) and callspec and callspec.params.get("backend_name") == name:
                reason = spec.known_failures.get(check_name(item))
                if reason:
                    item.add_marker(pytest.mark.xfail(reason=f"known failure of {spec.name}: {reason}", strict=True))


_SUITE_DIR = pathlib.Path(__file__).resolve().parent


def _is_suite_file(path: Any) -> bool:
    return pathlib.Path(path).resolve().parent == _SUITE_DIR


def _in_suite(item: pytest.Item) -> bool:
    return _is_suite_file(item.path)


@pytest.fixture
def measured(request: pytest.FixtureRequest):
    """Call ``measured(err)`` with an error in eps; the largest per test lands in the report."""

    def record(err: float) -> float:
        props = dict(request.node.user_properties)
        request.node.user_properties[:] = [(k, v) for k, v in request.node.user_properties if k != "eps"]
        request.node.user_properties.append(("eps", max(err, props.get("eps", 0.0))))
        return err

    return record
