"""Run SciPy's own tests of softmax, log_softmax and logsumexp on softmax-multi's functions.

Load with ``-p scipy_adapter`` beside ``--pyargs scipy.special.tests.test_logsumexp`` (with
``SCIPY_ARRAY_API=1``, so that SciPy's ``xp`` fixture runs every array library installed). The test
module is used as installed: once it is imported, its ``softmax``, ``log_softmax`` and
``logsumexp`` are replaced by ours, carrying SciPy's own tags (``_lazy_xp_function``), so that
SciPy's conftest still runs them under ``jax.jit`` and forbids Dask computations; its decorators
already read SciPy's capabilities table when the module was imported.

The adapter is thin: SciPy's softmax defaults to ``axis=None`` (ours to -1), and SciPy returns NumPy
scalars where a result is 0-d (ours, 0-d arrays).
"""

from __future__ import annotations

import numpy as np

import softmax_multi as smx

TARGET = "scipy.special.tests.test_logsumexp"


def _scalar(r):
    if isinstance(r, tuple):
        return tuple(_scalar(v) for v in r)
    return r[()] if isinstance(r, np.ndarray) and r.ndim == 0 else r


def softmax(x, axis=None):
    return _scalar(smx.softmax(x, axis=axis))


def log_softmax(x, axis=None):
    return _scalar(smx.log_softmax(x, axis=axis))


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    return _scalar(smx.logsumexp(a, axis, b, keepdims, return_sign))


OURS = {"softmax": softmax, "log_softmax": log_softmax, "logsumexp": logsumexp}
replaced: list[str] = []


def pytest_collection_modifyitems(session, config, items):
    modules = {
        item.module
        for item in items
        if getattr(item, "module", None) is not None and item.module.__name__.endswith("test_logsumexp")
    }
    for module in modules:
        for name, ours in OURS.items():
            theirs = getattr(module, name)
            tags = getattr(theirs, "_lazy_xp_function", None)
            if tags is not None:
                ours._lazy_xp_function = tags
            setattr(module, name, ours)
            replaced.append(f"{module.__name__}.{name}")


def pytest_report_header(config):
    return "scipy_adapter: SciPy's softmax, log_softmax and logsumexp tests run on softmax-multi"


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"scipy_adapter replaced: {', '.join(sorted(set(replaced))) or 'nothing'}")
