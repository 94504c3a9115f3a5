"""Discovery, dispatch, isolation of broken plugins, and thread safety of the backend registry."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi import registry
from softmax_multi.conformance import oracle

from .conftest import write_distribution


def test_import_imports_no_framework():
    code = (
        "import softmax_multi, sys; softmax_multi.softmax([1.0, 2.0]); "
        "softmax_multi.list_backends(); "
        "bad = {'torch', 'jax', 'dask', 'array_api_strict'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_builtin_backends_are_listed_with_their_versions():
    rows = {row.name: row for row in smx.list_backends()}
    assert rows["numpy"].source == "softmax_multi.backends.numpy_backend:spec"
    assert rows["numpy"].status == "ready" and rows["numpy"].version == np.__version__
    assert rows["array_api_strict"].status == "ready"


def test_a_builtin_class_needs_no_entry_point_scan():
    """A NumPy array is dispatched without reading the installed distributions' entry points;
    anything else (here a class no backend names) reads them once."""
    code = (
        "import sys, numpy as np, softmax_multi as smx\n"
        "smx.softmax(np.zeros(3))\n"
        "assert 'importlib.metadata' not in sys.modules, 'scanned'\n"
        "from softmax_multi import registry\n"
        "assert not registry._discovered\n"
        "registry.backend_for_type(object)\n"
        "assert registry._discovered\n"
    )
    env = {**__import__("os").environ, "SOFTMAX_MULTI_FUSED": "off"}  # Numba itself reads the metadata
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_dispatch_by_type(backend):
    x = backend.asarray(np.zeros(3))
    assert smx.get_backend(x) is backend.spec
    assert registry._by_type[type(x)] is backend.spec  # cached: the next call is one dict lookup


def test_get_backend_errors():
    with pytest.raises(LookupError, match="no backend named 'nope'"):
        smx.get_backend("nope")
    with pytest.raises(TypeError, match=r"no softmax-multi backend serves builtins\.object"):
        smx.get_backend(object())


def test_third_party_plugin_is_discovered_and_used(plugin_path):
    write_distribution(plugin_path, "fakearr-plugin", {"fakearr": "fakearr:spec"})
    write_distribution(plugin_path, "broken-plugin", {"broken": "broken_import:spec"})
    import fakearr

    x_np = np.array([[5.0, 7.0, 10.0], [1.0, 2.0, 3.0]])
    with pytest.warns(smx.BackendLoadWarning, match="'broken'.*ImportError: no such thing here"):
        y = smx.softmax(fakearr.FakeArray(x_np))
    assert isinstance(y, fakearr.FakeArray)
    assert fakearr.calls == ["softmax"]
    oracle.assert_close(y.data, oracle.softmax(x_np, (1,)), "float64")
    lse = smx.logsumexp(fakearr.FakeArray(x_np), axis=0, where=fakearr.FakeArray(x_np > 1))
    oracle.assert_close(lse.data, oracle.logsumexp(x_np, (0,), x_np > 1), "float64", log_scale=True)

    rows = {row.name: row for row in smx.list_backends()}
    assert rows["fakearr"].status == "ready" and rows["fakearr"].version == "1.0"
    assert rows["broken"].status == "failed" and "no such thing here" in rows["broken"].error
    # the others are untouched
    np.testing.assert_allclose(smx.softmax(np.array([0.0, 0.0])), [0.5, 0.5])


def test_plugin_errors_are_isolated_and_reported(plugin_path):
    write_distribution(
        plugin_path,
        "odd-plugins",
        {"notaspec": "odd_plugins:spec", "missing": "odd_plugins:nothing", "thief": "odd_plugins:thief"},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = {row.name: row for row in smx.list_backends()}
    assert "not a BackendSpec" in rows["notaspec"].error
    assert rows["missing"].status == "failed"
    assert "numpy.ndarray, already served by backend 'numpy'" in rows["thief"].error
    assert len([w for w in caught if issubclass(w.category, smx.BackendLoadWarning)]) == 3
    assert smx.get_backend(np.zeros(2)).name == "numpy"
    # warned once: a second look is silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smx.list_backends()
        smx.softmax(np.zeros(2))


def test_cli_shows_failed_plugins(plugin_path, capsys):
    from softmax_multi import cli

    write_distribution(plugin_path, "broken-plugin", {"broken": "broken_zero:spec"})
    with pytest.warns(smx.BackendLoadWarning):
        assert cli.main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "broken" in out and "failed: ZeroDivisionError: division by zero" in out
    assert "numpy" in out and "ready" in out


def test_disable_by_environment(plugin_path, monkeypatch):
    import array_api_strict as xps

    monkeypatch.setenv(registry.DISABLE_ENV, "array_api_strict, nothing")
    registry.reset()
    rows = {row.name: row for row in smx.list_backends()}
    assert rows["array_api_strict"].status == "disabled"
    # Its arrays still work, through the generic array-API path and the reference implementation.
    x = xps.asarray([5.0, 7.0, 10.0])
    assert smx.get_backend(x) is registry.ARRAY_API
    np.testing.assert_array_equal(np.round(np.from_dlpack(smx.softmax(x)), 4), [0.0064, 0.0471, 0.9465])


def test_register_backend_at_run_time(plugin_path):
    write_distribution(plugin_path, "fakearr-plugin", {})
    import fakearr

    smx.register_backend(fakearr.spec)
    assert smx.get_backend(fakearr.FakeArray([1.0])) is fakearr.spec
    assert {r.name: r for r in smx.list_backends()}["fakearr"].source == "register_backend"
    with pytest.raises(ValueError, match="already registered"):
        smx.register_backend(fakearr.spec)
    with pytest.raises(TypeError, match="must be a BackendSpec"):
        smx.register_backend("fakearr")
    thief = smx.BackendSpec(name="thief", array_types=(("fakearr", "FakeArray"),))
    with pytest.raises(ValueError, match="already served by backend 'fakearr'"):
        smx.register_backend(thief)
    smx.register_backend(thief, override=True)
    assert smx.get_backend(fakearr.FakeArray([1.0])).name == "thief"
    assert smx.get_backend("fakearr").array_types == ()
    row = {r.name: r for r in smx.list_backends()}["fakearr"]
    assert row.status == "overridden" and "served by 'thief'" in row.error  # not listed as ready


def test_a_spec_for_a_subclass_serves_the_subclass(plugin_path, monkeypatch):
    """The nearest class in the MRO wins: a plugin for a subclass of numpy.ndarray is used for it,
    and plain ndarrays stay NumPy's."""
    import sys
    import types

    class Tagged(np.ndarray):
        pass

    module = types.ModuleType("tagged_arrays")
    module.Tagged = Tagged
    monkeypatch.setitem(sys.modules, "tagged_arrays", module)
    spec = smx.BackendSpec(name="tagged", array_types=(("tagged_arrays", "Tagged"),))
    smx.register_backend(spec)
    assert smx.get_backend(np.zeros(2).view(Tagged)) is spec
    assert smx.get_backend(np.zeros(2)).name == "numpy"


def test_malformed_specs_are_refused():
    with pytest.raises(TypeError, match="array_types must be a tuple"):
        smx.BackendSpec(name="x", array_types=("numpy", "ndarray"))
    with pytest.raises(TypeError, match="non-empty string"):
        smx.BackendSpec(name="", array_types=())
    with pytest.raises(TypeError, match="softmax must be callable"):
        smx.BackendSpec(name="x", array_types=(), softmax=3)


def test_sixteen_threads_on_a_cold_registry(plugin_path):
    import array_api_strict as xps

    registry.reset()
    inputs = [np.array([5.0, 7.0, 10.0]), xps.asarray([5.0, 7.0, 10.0])]
    expected = [registry.get_backend("numpy"), registry.get_backend("array_api_strict")]
    registry.reset()
    barrier = threading.Barrier(16)
    results: list = [None] * 16

    def work(i):
        x = inputs[i % 2]
        barrier.wait()
        try:
            y = smx.softmax(x)
            results[i] = (smx.get_backend(x).name, np.round(np.from_dlpack(y), 4).tolist())
        except Exception as err:  # recorded and asserted below
            results[i] = err

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    names = [s.name for s in expected]
    for i, r in enumerate(results):
        assert r == (names[i % 2], [0.0064, 0.0471, 0.9465]), r


def test_an_installed_library_that_cannot_run_here_is_listed_unavailable(plugin_path):
    """A spec's ``unavailable`` (CuPy without a GPU) is asked when the backends are listed: the row
    says why, and the conformance suite leaves the backend out instead of failing it."""
    from softmax_multi.conformance.plugin import testable_backends

    write_distribution(plugin_path, "fakearr-plugin", {})
    import dataclasses

    import fakearr

    smx.register_backend(dataclasses.replace(fakearr.spec, unavailable=lambda: "no CUDA device"))
    row = smx.registry.status_of("fakearr")
    assert (row.status, row.error) == ("unavailable", "no CUDA device")
    assert "fakearr" not in testable_backends()


def test_cupy_is_listed_as_what_it_is_here():
    """Built in, and never failing: not installed, unavailable (installed without a GPU), or ready."""
    import importlib.util

    row = {row.name: row for row in smx.list_backends()}["cupy"]
    assert row.source == "softmax_multi.backends.cupy_backend:spec"
    if importlib.util.find_spec("cupy") is None:
        assert row.status == "not installed"
    else:
        from softmax_multi.backends import cupy_backend

        assert row.status == ("unavailable" if cupy_backend._unavailable() else "ready"), row
