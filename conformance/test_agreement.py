"""The same inputs through every two backends give the same results: dtype, NaN/inf pattern, values.

Pairs are the backend under test with every other ready backend (``backend_pair``).
"""

from __future__ import annotations

import numpy as np
import pytest
from softmax_multi.conformance import oracle
from softmax_multi.conformance.plugin import Backend

import softmax_multi as smx

SPECIAL = np.array(
    [[1.0, np.inf, 2.0, 0.5], [1.0, np.nan, 2.0, 0.5], [-np.inf] * 4, [-np.inf, 0.0, 1.0, 3.0], [88.0, 89.0, 100.0, -100.0]]
)
MASK = np.array([[True, False, True, True], [False] * 4, [True, True, False, True], [True] * 4, [True, False, False, True]])


def _results(name, func, x_np, **kw):
    b = Backend.named(name)
    w = kw.pop("where", None)
    y = getattr(smx, func)(b.asarray(x_np), where=None if w is None else b.asarray(w), **kw)
    return b.numpy(y)


@pytest.mark.parametrize("func", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("case", ["special", "masked", "masked_special", "tuple_axis"])
def test_backends_agree_pairwise(backend_pair, func, case, measured):
    a, b = backend_pair
    rng = np.random.default_rng(7)
    both = set(Backend.named(a).dtypes()) & set(Backend.named(b).dtypes())
    for dtype in [d for d in ("float32", "float64") if d in both]:
        x = SPECIAL.astype(dtype) if "special" in case else (rng.standard_normal((5, 4)) * 10).astype(dtype)
        kw = {"axis": (0, 1) if case == "tuple_axis" else -1}
        if "masked" in case:
            kw["where"] = MASK
        ya, yb = _results(a, func, x, **dict(kw)), _results(b, func, x, **dict(kw))
        assert ya.dtype == yb.dtype == np.dtype(dtype), (a, b, ya.dtype, yb.dtype)
        # each within tolerance of the oracle, so within twice the tolerance of each other
        err = measured(oracle.ulp_error(ya, yb, dtype, log_scale=func != "softmax"))
        assert err <= 2 * oracle.TOLERANCE_ULPS[dtype], f"{a} vs {b} ({dtype}): {err} eps"
