"""The same inputs through every backend give the same results: dtype, NaN/inf pattern and values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi.conformance import oracle

from .conftest import BACKENDS, Backend

SPECIAL = np.array(
    [[1.0, np.inf, 2.0, 0.5], [1.0, np.nan, 2.0, 0.5], [-np.inf] * 4, [-np.inf, 0.0, 1.0, 3.0], [88.0, 89.0, 100.0, -100.0]]
)
MASK = np.array([[True, False, True, True], [False] * 4, [True, True, False, True], [True] * 4, [True, False, False, True]])


def _results(name, func, x_np, **kw):
    b = Backend(name)
    w = kw.pop("where", None)
    y = getattr(smx, func)(b.asarray(x_np), where=None if w is None else b.asarray(w), **kw)
    return b.numpy(y)


@pytest.mark.parametrize("func", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["special", "masked", "masked_special", "tuple_axis"])
def test_backends_agree_pairwise(func, dtype, case, rng):
    x = SPECIAL.astype(dtype) if "special" in case else (rng.standard_normal((5, 4)) * 10).astype(dtype)
    kw = {"axis": -1}
    if "masked" in case:
        kw["where"] = MASK
    if case == "tuple_axis":
        kw["axis"] = (0, 1)
    results = {name: _results(name, func, x, **dict(kw)) for name in BACKENDS}
    for a, b in itertools.combinations(BACKENDS, 2):
        ya, yb = results[a], results[b]
        assert ya.dtype == yb.dtype == np.dtype(dtype), (a, b)
        # both within tolerance of the oracle, so within twice the tolerance of each other
        err = oracle.ulp_error(ya, yb, dtype, log_scale=func != "softmax")
        assert err <= 2 * oracle.TOLERANCE_ULPS[dtype], f"{a} vs {b}: {err} eps"
