"""The conformance suite's pytest plugin: which backends to certify, their dtypes, known failures.

Nothing loads it by itself: installing softmax-multi adds nothing to anyone else's pytest run. It
is loaded by name where the suite runs::

    pytest -p softmax_multi.conformance.plugin --pyargs softmax_multi.conformance --smx-backend NAME

(``softmax-multi conformance`` does the same; this repository's ``pyproject.toml`` adds the ``-p``
to its own runs). Its options are prefixed ``--smx-`` so that they cannot collide with another
project's, its Hypothesis settings apply to the suite's own tests only, and it discovers backends
only once a suite module is collected, or a backend is asked for by name.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import pathlib
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi import registry
from softmax_multi._args import dtype_name

from .options import DEFAULT_MAX_EXAMPLES, OPTIONS

# The dtypes a test may ask for by fixture name; each backend is asked only for those it declares.
DTYPE_FIXTURES = {
    "float_dtype": ("float32", "float64"),
    "low_dtype": ("float16", "bfloat16"),
    "complex_dtype": ("complex64", "complex128"),
}


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
        if self.spec.from_numpy is None:
            raise TypeError(f"backend {self.name!r} declares no from_numpy: the suite cannot build its inputs")
        return self.spec.from_numpy(np.asarray(a, dtype=dtype), self.device)

    def numpy(self, x: Any) -> np.ndarray:
        if self.spec.to_numpy is None:
            raise TypeError(f"backend {self.name!r} declares no to_numpy: the suite cannot read its results")
        return np.asarray(self.spec.to_numpy(x))

    def namespace(self, x: Any) -> Any:
        return self.spec.namespace(x)

    def dtype_name(self, x: Any) -> str:
        return str(self.numpy(x).dtype)

    def default_float(self) -> str:
        xp = self.namespace(self.asarray(np.zeros(1)))
        return dtype_name(xp.__array_namespace_info__().default_dtypes()["real floating"])

    def dtypes(self) -> tuple[str, ...]:
        return self.spec.dtype_names()

    def owns(self, y: Any) -> bool:
        """Is ``y`` an array of this backend's library (not, say, a NumPy array in disguise)?"""
        return self.spec.serves(type(y)) or (not self.spec.array_types and hasattr(y, "__array_namespace__"))

    def __repr__(self) -> str:
        return self.name if self.device in (None, "cpu") else f"{self.name}[{self.device}]"


class BackendUnavailable(LookupError):
    """A backend asked for by name that cannot be certified here; the message says why."""


def resolve_backend(name: str) -> registry.BackendSpec:
    """A registered backend name, or ``module:attribute`` naming a spec (registered if it is new).

    Raises :class:`BackendUnavailable` with the registry's reason when it cannot be used.
    """
    if ":" not in name:
        try:
            spec = smx.get_backend(name)
        except LookupError as err:
            raise BackendUnavailable(str(err)) from None
        row = registry.status_of(name)
        if row.status != "ready":
            raise BackendUnavailable(f"backend {name!r} is {row.status}: {row.error or 'install its library first'}")
        return spec
    module, _, attr = name.partition(":")
    try:
        spec = getattr(importlib.import_module(module), attr)
    except Exception as err:  # ImportError, AttributeError, or the module's own error
        raise BackendUnavailable(f"cannot load {name}: {type(err).__name__}: {err}") from None
    if not isinstance(spec, registry.BackendSpec):
        raise BackendUnavailable(f"{name} is a {type(spec).__name__}, not a BackendSpec")
    try:
        known = smx.get_backend(spec.name)
    except LookupError:
        smx.register_backend(spec)
        return spec
    if known is not spec:
        raise BackendUnavailable(f"{name} is named {spec.name!r}, which another backend already has")
    return spec


def testable_backends() -> list[str]:
    """Every ready backend that can take NumPy test data."""
    return [r.name for r in smx.list_backends() if r.status == "ready" and smx.get_backend(r.name).from_numpy is not None]


def agreement_partners(names: list[str]) -> list[str]:
    """The backends each one under test is compared with: the others under test, and every ready
    built-in (a third-party plugin that is merely installed is not pulled into someone else's run)."""
    builtin = {r.name for r in smx.list_backends() if r.source.startswith("softmax_multi.")}
    return sorted(set(names) | (builtin & set(testable_backends())))


# -- options and settings ------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("softmax-multi conformance")
    for name, kwargs in OPTIONS.items():
        group.addoption(name, **kwargs)


class _Settings:
    """What this run's options say, for the suite's modules (read when they are imported)."""

    max_examples = DEFAULT_MAX_EXAMPLES


def suite_settings(test: Callable[..., Any]) -> Callable[..., Any]:
    """The Hypothesis settings of the suite's own property tests, and of no one else's:
    ``--smx-max-examples`` examples, derandomised, no deadline, no example database."""
    from hypothesis import settings

    return settings(max_examples=_Settings.max_examples, derandomize=True, deadline=None, database=None)(test)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: rows of 1e6 and more (left out by --smx-tier quick)")
    _Settings.max_examples = config.getoption("--smx-max-examples")
    if config.getoption("--smx-backend"):  # asked for by name: a name that cannot be used is a usage error
        try:
            selected_backends(config)
        except BackendUnavailable as err:
            raise pytest.UsageError(f"--smx-backend: {err}") from None


def selected_backends(config: pytest.Config) -> list[str]:
    """The spec names of the backends under test (a ``module:attr`` is registered and named by its spec)."""
    cached = getattr(config, "_smx_backends", None)
    if cached is None:
        asked = config.getoption("--smx-backend")
        cached = [resolve_backend(n).name for n in asked] if asked else testable_backends()
        config._smx_backends = cached  # type: ignore[attr-defined]
    return cached


# -- parametrisation: each backend is asked only for what it declares -----------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not _is_suite_file(metafunc.definition.path):
        return
    names = selected_backends(metafunc.config)
    fixtures = metafunc.fixturenames
    if "backend_pair" in fixtures:  # the backend under test beside the others and the built-ins
        others = agreement_partners(names)
        pairs = sorted({tuple(sorted((n, o))) for n in names for o in others if o != n})
        metafunc.parametrize("backend_pair", pairs, ids=["-".join(p) for p in pairs])
        return
    if "backend_name" not in fixtures:
        return
    specs = {n: resolve_backend(n) for n in names}
    axes: list[tuple[str, Callable[[registry.BackendSpec], Iterable[str]]]] = []
    for fixture, candidates in DTYPE_FIXTURES.items():
        if fixture in fixtures:
            axes.append((fixture, lambda spec, c=candidates: [d for d in c if d in spec.dtype_names()]))  # type: ignore[misc]
    if "transform_name" in fixtures:  # every transform each backend declares
        axes.append(("transform_name", lambda spec: sorted(spec.transforms)))
    if "gradient_name" in fixtures:  # the gradient transforms only (grad, autograd)
        axes.append(("gradient_name", lambda spec: sorted(t for t in spec.transforms if t in registry.GRADIENT_TRANSFORMS)))
    if "device" in fixtures:  # every device the backend offers here (CUDA on a GPU machine)
        axes.append(("device", lambda spec: list(spec.devices())))
    if "input_form" in fixtures:  # every memory layout or byte order the backend's arrays can take
        axes.append(("input_form", lambda spec: sorted(spec.input_forms)))
    if not axes:
        metafunc.parametrize("backend_name", names, scope="session")
        return
    rows = [[n] for n in names]
    for _, values in axes:
        rows = [row + [v] for row in rows for v in values(specs[row[0]])]
    argnames = ["backend_name"] + [a for a, _ in axes]
    metafunc.parametrize(argnames, [tuple(r) for r in rows], scope="session")


@pytest.fixture(scope="session")
def backend(backend_name: str) -> Backend:
    """The backend under test (the suite parametrises ``backend_name`` over ``--smx-backend``)."""
    return Backend(resolve_backend(backend_name))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Callable[[float], float]:
    """Call ``measured(err)`` with an error in eps; the largest per test lands in the report."""

    def record(err: float) -> float:
        props = dict(request.node.user_properties)
        request.node.user_properties[:] = [(k, v) for k, v in request.node.user_properties if k != "eps"]
        request.node.user_properties.append(("eps", max(err, props.get("eps", 0.0))))
        return err

    return record


# -- known failures, tiers -----------------------------------------------------------------------


def check_name(item: pytest.Item) -> str:
    """The check a test belongs to: its function name without ``test_``."""
    return getattr(item, "originalname", item.name).removeprefix("test_")


def matches(pattern: str, item: pytest.Item) -> bool:
    """Does a known-failure pattern name this test?

    ``check`` names every variant of a check, ``check:function`` those of one function
    (softmax, log_softmax, logsumexp), and any other pattern is matched (``fnmatch``) against
    the test's id with or without its ``test_`` prefix, e.g. ``finite_input[*-float64-*]``.
    """
    check = check_name(item)
    if pattern == check:
        return True
    if ":" in pattern and "[" not in pattern:
        name, _, func = pattern.partition(":")
        params = getattr(getattr(item, "callspec", None), "params", {})
        return name == check and params.get("func") == func
    return fnmatch.fnmatchcase(item.name, pattern) or fnmatch.fnmatchcase(item.name.removeprefix("test_"), pattern)


def read_known_failures(path: str) -> dict[str, str]:
    """The patterns of a known-failures file: one per line, ``#`` starts its reason."""
    known = {}
    for line in pathlib.Path(path).read_text().splitlines():
        pattern, _, reason = line.partition("#")
        if pattern.strip():
            known[pattern.strip()] = reason.strip() or f"listed in {path}"
    return known


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect: known failures are checked against the whole suite
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    suite = [i for i in items if _in_suite(i)]
    if not suite:
        return
    if config.getoption("--smx-tier") == "quick":
        slow = [i for i in suite if i.get_closest_marker("slow") is not None]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [i for i in items if i not in slow]
            suite = [i for i in suite if i not in slow]
    # A backend that declares nothing for a check gives an empty parameter set: nothing to test.
    empty = [
        i for i in suite if any("got empty parameter set" in str(m.kwargs.get("reason", "")) for m in i.iter_markers("skip"))
    ]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [i for i in items if i not in empty]
        suite = [i for i in suite if i not in empty]
    from_files: dict[str, str] = {}
    for path in config.getoption("--smx-known-failures"):
        from_files.update(read_known_failures(path))
    for name in selected_backends(config):
        spec = resolve_backend(name)
        mine = [i for i in suite if _params(i).get("backend_name") == name]
        known = {**spec.known_failures, **from_files}
        for pattern, reason in known.items():
            hits = [i for i in mine if matches(pattern, i)]
            for item in hits:
                item.add_marker(pytest.mark.xfail(reason=f"known failure of {name}: {reason}", strict=True))
            if not hits and pattern in spec.known_failures:
                _warn_at_spec(name, f"backend {name!r} lists a known failure {pattern!r} that matches no conformance check")


def _params(item: pytest.Item) -> dict[str, Any]:
    return getattr(getattr(item, "callspec", None), "params", {})


def _warn_at_spec(name: str, message: str) -> None:
    """A warning whose location is the module that defines the backend's spec."""
    source = registry.status_of(name).source
    module = source.partition(":")[0]
    try:
        where = importlib.util.find_spec(module)
        filename = where.origin if where and where.origin else module
    except (ImportError, ValueError):
        filename = module
    warnings.warn_explicit(f"{message} (the spec: {source})", pytest.PytestWarning, filename, 1)


_SUITE_DIR = pathlib.Path(__file__).resolve().parent


def _is_suite_file(path: Any) -> bool:
    return pathlib.Path(path).resolve().parent == _SUITE_DIR


def _in_suite(item: pytest.Item) -> bool:
    return _is_suite_file(item.path)
