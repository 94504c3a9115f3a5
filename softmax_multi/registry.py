"""Backend specs, their discovery through entry points, and dispatch from an array to its backend.

Nothing is discovered at ``import softmax_multi``. The built-in backends come from
``BUILTIN_BACKENDS`` on the first call; the entry-point group (third-party plugins), whose scan
of every installed distribution costs tens of milliseconds, is read on the first call that could
need it: an array of a class no built-in backend names exactly, a lookup by name, a listing or a
registration. A plugin cannot take a built-in backend's classes, so an exact match needs no scan.

Dispatch is a dict keyed by ``type(x)``; a miss checks the array classes each backend names
as (module, class-name) strings against modules already in ``sys.modules``, so asking "is this
a torch tensor?" never imports torch.

What the registry holds, and when it is filled:

* ``_specs`` (name -> BackendSpec): every backend loaded from an entry point or given to
  :func:`register_backend`; filled by the first discovery, then by each registration.
* ``_rows`` (name -> BackendStatus): the same names plus those that failed to load or are
  disabled, with their reason; what :func:`list_backends` returns.
* ``_by_type`` (array class -> BackendSpec): the dispatch cache, filled on each first sight of a
  class, emptied whenever a backend is added or replaced.
* ``_listeners``: functions called after each such change, so that caches built elsewhere on
  dispatch results (the checked call plans of :mod:`softmax_multi._api`) are dropped with it;
  see :func:`on_change`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = [
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "BackendLoadWarning",
    "BackendSpec",
    "BackendStatus",
    "backend_for_type",
    "get_backend",
    "list_backends",
    "on_change",
    "register_backend",
    "reset",
    "status_of",
]

ENTRY_POINT_GROUP = "softmax_multi.backends"
# The backends that ship with softmax-multi, loaded without reading the entry points.
BUILTIN_BACKENDS = {
    "numpy": "softmax_multi.backends.numpy_backend:spec",
    "array_api_strict": "softmax_multi.backends.strict_backend:spec",
    "torch": "softmax_multi.backends.torch_backend:spec",
    "jax": "softmax_multi.backends.jax_backend:spec",
    "dask": "softmax_multi.backends.dask_backend:spec",
    "cupy": "softmax_multi.backends.cupy_backend:spec",
}
GRADIENT_TRANSFORMS = frozenset({"grad", "autograd"})
DISABLE_ENV = "SOFTMAX_MULTI_DISABLE"  # comma-separated backend names to leave out


class BackendLoadWarning(UserWarning):
    """A backend plugin could not be loaded; the others keep working."""


def _array_api_namespace(x: Any) -> Any:
    from array_api_compat import array_namespace

    return array_namespace(x)


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """What softmax-multi needs to know about one array library. Data plus a few functions.

    Parameters
    ----------
    name
        Short unique name (``"numpy"``, ``"torch"``).
    array_types
        The array classes served, as ``(module, class_name)`` pairs, so that nothing is imported to
        check them; subclasses are served too.
    module
        The import name of the library; the backend is "not installed" when it cannot be found.
    distribution
        The distribution whose version is reported (defaults to ``module``).
    namespace
        ``namespace(x)`` gives the array API namespace of ``x``; defaults to array-api-compat's.
    softmax, log_softmax, logsumexp
        Optional native implementations with the signature of :mod:`softmax_multi.reference`
        (``f(x, axes, where)``; ``logsumexp`` also takes ``keepdims``) for real floating ``x``.
        Missing ones fall back to the reference implementation.
    weighted_logsumexp
        Optional native logsumexp for the other cases: ``f(x, axes, where, keepdims, b,
        return_sign)`` with weights ``b`` (None, or an array of ``x``'s shape and dtype),
        ``return_sign``, or complex ``x``; the reference's ``logsumexp`` otherwise.
    from_numpy, to_numpy
        Move test data in and out: ``from_numpy(a, device)`` and ``to_numpy(x)``.
    devices
        ``devices()`` lists the device names this backend can place arrays on here.
    transforms
        Program transforms the backend supports, by name, each as a function the conformance
        suite applies to ``f(x)``: most (``"jit"``, ``"vmap"``, ``"compile"``) return a function
        that must equal ``f``; those named in ``GRADIENT_TRANSFORMS`` (``"grad"``, ``"autograd"``)
        return ``g(x, w)``, the gradient of ``sum(w * f(x))`` with respect to ``x``.
    dtypes
        The floating dtype names the backend serves (real and complex; the conformance suite asks
        for these only), or a function giving them when they depend on configuration (JAX's
        float64, NumPy's bfloat16 from ml_dtypes).
    known_failures
        Conformance check -> reason, for checks this backend is known to fail. A key names a
        check (every variant), ``check:function`` (one function's variants), or is a pattern
        matched against test ids (``finite_input[*-float64-*]``).
    out
        True when ``softmax`` and ``log_softmax`` take ``out=`` (a preallocated array of ``x``'s
        shape and the result's dtype, written and returned); otherwise a reason why ``out=`` is
        refused, shown in the error (``"JAX arrays are immutable"``).
    input_forms
        Other ways this library's arrays can hold the same values, by name, each as
        ``form(a, device)`` building one from the NumPy array ``a`` (a byte-swapped, a
        Fortran-ordered, a broadcast view...); the conformance suite runs every function on each.
    unavailable
        For a library that can be installed where it cannot run (CuPy without a GPU): returns why
        it cannot run here, or None when it can. Asked when the backends are listed (it may
        import the library), never on the hot path; such a backend is listed ``unavailable``.
    accurate_sums
        True when the library's ``sum`` is accurate whatever the length (pairwise or tree
        reductions): the reference implementation then sums float32 with it directly. Otherwise
        it accumulates float32 sums in float64, so that accuracy never depends on the library's
        summation order.
    cross_entropy
        ``cross_entropy(z, target, axis, where, class_weight, label_smoothing, ignore_index,
        reduction)`` with checked arguments (``z`` and probability targets in the compute dtype);
        the reference's (:mod:`softmax_multi.loss`) otherwise.
    linear_cross_entropy
        ``linear_cross_entropy(h, weight, target, options)`` with checked arguments, the others
        in ``options`` (:class:`softmax_multi.linear.Options`); the reference's
        (:mod:`softmax_multi.linear`, forward only) otherwise.
    accepts_weight
        ``accepts_weight(w)``: True for a ``weight`` (or ``bias``) of another library that
        ``linear_cross_entropy`` takes with this backend's ``h`` (Dask takes NumPy's).
    """

    name: str
    array_types: tuple[tuple[str, str], ...]
    module: str | None = None
    distribution: str | None = None
    namespace: Callable[[Any], Any] = _array_api_namespace
    softmax: Callable[..., Any] | None = None
    log_softmax: Callable[..., Any] | None = None
    logsumexp: Callable[..., Any] | None = None
    weighted_logsumexp: Callable[..., Any] | None = None
    from_numpy: Callable[..., Any] | None = None
    to_numpy: Callable[[Any], Any] | None = None
    devices: Callable[[], list[str]] = lambda: ["cpu"]
    transforms: Mapping[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = dataclasses.field(default_factory=dict)
    dtypes: tuple[str, ...] | Callable[[], tuple[str, ...]] = ("float32", "float64")
    known_failures: Mapping[str, str] = dataclasses.field(default_factory=dict)
    out: bool | str = "this backend does not write into preallocated arrays"
    input_forms: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    accurate_sums: bool = False
    unavailable: Callable[[], str | None] | None = None
    cross_entropy: Callable[..., Any] | None = None
    linear_cross_entropy: Callable[..., Any] | None = None
    accepts_weight: Callable[[Any], bool] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"BackendSpec.name must be a non-empty string, got {self.name!r}")
        pairs = self.array_types
        if not isinstance(pairs, tuple) or not all(
            isinstance(p, tuple) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs
        ):
            raise TypeError(
                f"BackendSpec {self.name!r}: array_types must be a tuple of (module, class_name) string pairs, got {pairs!r}"
            )
        for field in _CALLABLE_FIELDS:
            value = getattr(self, field)
            if value is not None and not callable(value):
                raise TypeError(f"BackendSpec {self.name!r}: {field} must be callable, got {value!r}")

    def class_distance(self, cls: type) -> int | None:
        """How far up ``cls``'s MRO the nearest class this spec serves is (0: ``cls`` itself), or
        None when it serves no base of ``cls``. Only modules already imported are looked in."""
        best = None
        mro = cls.__mro__
        for module, qualname in self.array_types:
            mod = sys.modules.get(module)
            if mod is None:
                continue
            obj: Any = mod
            for part in qualname.split("."):
                obj = getattr(obj, part, None)
            if isinstance(obj, type) and obj in mro:
                d = mro.index(obj)
                best = d if best is None else min(best, d)
        return best

    def serves(self, cls: type) -> bool:
        """True when arrays of class ``cls`` (or of a subclass of a class named) are this spec's."""
        return self.class_distance(cls) is not None

    def dtype_names(self) -> tuple[str, ...]:
        """The dtype names this backend declares (``dtypes`` called, if it is a function)."""
        declared = self.dtypes
        return tuple(declared() if callable(declared) else declared)


_CALLABLE_FIELDS = (
    "softmax",
    "log_softmax",
    "logsumexp",
    "weighted_logsumexp",
    "namespace",
    "cross_entropy",
    "linear_cross_entropy",
    "accepts_weight",
)


class BackendStatus(NamedTuple):
    """One row of :func:`list_backends`."""

    name: str
    status: str  # "ready", "not installed", "failed", "disabled" or "overridden"
    version: str | None
    error: str | None
    source: str  # the entry point ("module:attr") or "register_backend"


# The generic backend: any object with ``__array_namespace__`` that no spec claims.
ARRAY_API = BackendSpec(name="array_api", array_types=(), module=None)

_lock = threading.RLock()
_discovered = False
_discovering = False  # a plugin being loaded may itself call register_backend
_specs: dict[str, BackendSpec] = {}
_rows: dict[str, BackendStatus] = {}
_by_type: dict[type, BackendSpec] = {}
_listeners: list[Callable[[], None]] = []


def on_change(listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener()`` after every change of the backends (one added, replaced or forgotten).

    A module that caches anything derived from dispatch registers its cache's ``clear`` here;
    returns ``listener``, so that it can serve as a decorator.
    """
    _listeners.append(listener)
    return listener


def _changed() -> None:
    _by_type.clear()
    for listener in _listeners:
        listener()


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _installed(spec: BackendSpec) -> bool:
    if spec.module is None:
        return True
    try:
        return importlib.util.find_spec(spec.module) is not None
    except (ImportError, ValueError):
        return False


def _version(spec: BackendSpec) -> str | None:
    """The installed version of the spec's library: looked up when listed (reading the installed
    distributions' metadata is slow), not when registered."""
    import importlib.metadata

    try:
        return importlib.metadata.version(spec.distribution or spec.module or "")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return getattr(sys.modules.get(spec.module or ""), "__version__", None)


def _with_version(row: BackendStatus) -> BackendStatus:
    """The row with its version looked up, and marked unavailable if its spec says so."""
    spec = _specs.get(row.name)
    if row.version is not None or row.status != "ready" or spec is None or spec.module is None:
        return row
    why = spec.unavailable() if spec.unavailable is not None else None  # may import the library: first
    row = row._replace(version=_version(spec))
    if why:
        row = row._replace(status="unavailable", error=why)
    _rows[row.name] = row
    return row


_builtins_loaded = False


def _load_builtins() -> None:
    """Register the built-in backends (once), from BUILTIN_BACKENDS."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    with _lock:
        if _builtins_loaded:
            return
        disabled = _disabled()
        for name, value in BUILTIN_BACKENDS.items():
            if name in _rows:
                continue
            if name in disabled:
                _rows[name] = BackendStatus(name, "disabled", None, f"listed in {DISABLE_ENV}", value)
                continue
            module, _, attr = value.partition(":")
            _add(getattr(importlib.import_module(module), attr), source=value, override=False)
        _builtins_loaded = True


def _discover() -> None:
    """Load the built-in backends, then every entry point of the group, once; a plugin that fails
    is recorded and warned about."""
    global _discovered, _discovering
    if _discovered:
        return
    _load_builtins()
    with _lock:
        if _discovered or _discovering:
            return
        _discovering = True
        try:
            import importlib.metadata

            disabled = _disabled()
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in _rows:  # a built-in, or the same distribution seen twice on sys.path
                    continue
                if ep.name in disabled:
                    _rows[ep.name] = BackendStatus(ep.name, "disabled", None, f"listed in {DISABLE_ENV}", ep.value)
                    continue
                try:
                    spec = ep.load()
                    if not isinstance(spec, BackendSpec) and callable(spec):
                        spec = spec()
                    if not isinstance(spec, BackendSpec):
                        raise TypeError(f"the entry point gave {type(spec).__name__}, not a BackendSpec")
                    if spec.name != ep.name:
                        raise ValueError(f"the spec is named {spec.name!r} but its entry point {ep.name!r}")
                    _add(spec, source=ep.value, override=False)
                except Exception as err:
                    reason = f"{type(err).__name__}: {err}"
                    _rows[ep.name] = BackendStatus(ep.name, "failed", None, reason, ep.value)
                    warnings.warn(
                        f"softmax-multi: backend plugin {ep.name!r} ({ep.value}) failed to load: {reason}",
                        BackendLoadWarning,
                        stacklevel=3,
                    )
        finally:
            _discovering = False
        _discovered = True


def _add(spec: BackendSpec, *, source: str, override: bool) -> None:
    if spec.name in _specs and not override:
        raise ValueError(f"a backend named {spec.name!r} is already registered; pass override=True")
    claimed = set(spec.array_types)
    for other in _specs.values():
        if other.name == spec.name:
            continue
        shared = claimed & set(other.array_types)
        if shared and not override:
            names = ", ".join(f"{m}.{c}" for m, c in sorted(shared))
            raise ValueError(f"backend {spec.name!r} claims {names}, already served by backend {other.name!r}")
    if override:  # the new spec takes the shared classes over
        for name, other in list(_specs.items()):
            if name != spec.name and claimed & set(other.array_types):
                kept = tuple(t for t in other.array_types if t not in claimed)
                _specs[name] = dataclasses.replace(other, array_types=kept)
                if not kept:  # nothing left to serve: listed as such, not as ready
                    row = _rows[name]
                    _rows[name] = row._replace(status="overridden", error=f"its array classes are served by {spec.name!r}")
    _specs[spec.name] = spec
    _rows[spec.name] = BackendStatus(spec.name, "ready" if _installed(spec) else "not installed", None, None, source)
    _changed()


def register_backend(spec: BackendSpec, *, override: bool = False, source: str = "register_backend") -> None:
    """Register ``spec`` at run time, beside the backends declared by entry points.

    A name or an array class that another backend already has is an error unless ``override``;
    a spec may serve a subclass of another backend's class (the nearest class wins dispatch).
    ``source`` is what :func:`list_backends` shows as its origin (``"mymodule:spec"``).

    Examples
    --------
    >>> import softmax_multi as smx
    >>> spec = smx.BackendSpec(name="mylib", array_types=(("mylib", "Array"),), module="mylib")
    >>> smx.register_backend(spec)  # doctest: +SKIP
    """
    if not isinstance(spec, BackendSpec):
        raise TypeError(f"register_backend: spec must be a BackendSpec, got {type(spec).__name__}")
    _discover()
    with _lock:
        _add(spec, source=source, override=override)


def backend_for_type(cls: type, obj: Any = None) -> BackendSpec | None:
    """The spec serving arrays of class ``cls``, or None. The hot path is one dict lookup.

    Of the ready backends that serve ``cls``, the one naming the nearest class in its MRO wins,
    so a plugin for a subclass of ``numpy.ndarray`` is used for it. A class no backend names,
    if ``obj`` has ``__array_namespace__``, goes to the generic array-API backend.
    """
    spec = _by_type.get(cls)
    if spec is not None:
        return spec
    _load_builtins()
    if not _discovered and not any(
        _rows[s.name].status == "ready" and s.class_distance(cls) == 0 for s in tuple(_specs.values())
    ):
        _discover()  # not a built-in class: a plugin may serve it
    # No lock past discovery: the scan reads a snapshot, and storing one dict entry is atomic, so
    # two threads at worst both find the same answer (and torch.compile can trace this part).
    best = None
    for candidate in tuple(_specs.values()):
        if _rows[candidate.name].status != "ready":
            continue
        d = candidate.class_distance(cls)
        if d is not None and (best is None or d < best[0]):
            best = (d, candidate)
    if best is not None:
        spec = best[1]
    elif obj is not None and hasattr(obj, "__array_namespace__"):
        spec = ARRAY_API
    else:
        return None
    _by_type[cls] = spec
    return spec


def get_backend(x_or_name: Any) -> BackendSpec:
    """The spec that serves an array, or the spec registered under a name.

    Examples
    --------
    >>> import numpy as np, softmax_multi as smx
    >>> smx.get_backend(np.zeros(3)).name, smx.get_backend("numpy").name
    ('numpy', 'numpy')
    """
    if isinstance(x_or_name, str):
        _discover()
        spec = _specs.get(x_or_name)
        if spec is None:
            row = _rows.get(x_or_name)
            why = f" ({row.status}: {row.error})" if row and row.error else ""
            known = ", ".join(sorted(_specs)) or "none"
            raise LookupError(f"no backend named {x_or_name!r}{why}; registered: {known}")
        return spec
    spec = backend_for_type(type(x_or_name), x_or_name)
    if spec is None:
        raise TypeError(
            f"no softmax-multi backend serves {type(x_or_name).__module__}.{type(x_or_name).__qualname__}; "
            f"install its plugin, register one with register_backend, or pass an array-API array"
        )
    return spec


def status_of(name: str) -> BackendStatus:
    """The :func:`list_backends` row of one backend; LookupError when no backend has that name."""
    _discover()
    row = _rows.get(name)
    if row is None:
        known = ", ".join(sorted(_rows)) or "none"
        raise LookupError(f"no backend named {name!r}; known: {known}")
    return _with_version(row)


def list_backends() -> list[BackendStatus]:
    """Every backend declared or registered, with its status, version and, if it failed, why.

    Examples
    --------
    >>> import softmax_multi as smx
    >>> [row.status for row in smx.list_backends() if row.name == "numpy"]
    ['ready']
    """
    _discover()
    with _lock:
        return sorted((_with_version(row) for row in list(_rows.values())), key=lambda row: row.name)


def reset() -> None:
    """Forget every backend, discovered or registered: the next call discovers them afresh
    (after installing a plugin in a running interpreter, or in tests)."""
    global _discovered, _builtins_loaded
    with _lock:
        _specs.clear()
        _rows.clear()
        _discovered = _builtins_loaded = False
        _changed()
