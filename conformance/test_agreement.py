"""The same inputs through every two backends give the same results: dtype, NaN/inf pattern, values.

Pairs are the backend under test with every other ready backend (``backend_pair``). Where two
disagree, the one that disagrees with the oracle is blamed (``blame`` in the report), so that a
broken backend does not fail the pairs of every healthy one beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from softmax_multi.conformance import oracle
from softmax_multi.conformance.functions import FUNCTIONS, axes_of
from softmax_multi.conformance.plugin import Backend

SPECIAL = np.array(
    [[1.0, np.inf, 2.0, 0.5], [1.0, np.nan, 2.0, 0.5], [-np.inf] * 4, [-np.inf, 0.0, 1.0, 3.0], [88.0, 89.0, 100.0, -100.0]]
)
MASK = np.array([[True, False, True, True], [False] * 4, [True, True, False, True], [True] * 4, [True, False, False, True]])
WEIGHTS = np.array(
    [[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.5, 0.5], [1.0, -1.0, 1.0, -1.0], [0.0, 3.0, 1.0, 1.0], [1.0, 1.0, -0.5, 0.0]]
)


def _results(name, func, x_np, **kw):
    b = Backend.named(name)
    for arg in ("where", "b"):
        if kw.get(arg) is not None:
            kw[arg] = b.asarray(kw[arg])
    return b.numpy(FUNCTIONS[func].ours(b.asarray(x_np), **kw))


CASES = [(case, func) for case in ("special", "masked", "masked_special", "tuple_axis") for func in FUNCTIONS]
CASES.append(("weighted", "logsumexp"))  # weights are logsumexp's alone


@pytest.mark.parametrize("case,func", CASES, ids=[f"{c}-{f}" for c, f in CASES])
def test_backends_agree_pairwise(backend_pair, func, case, measured, record_property):
    a, b = backend_pair
    rng = np.random.default_rng(7)
    both = set(Backend.named(a).dtypes()) & set(Backend.named(b).dtypes())
    log_scale = FUNCTIONS[func].log_scale
    for dtype in [d for d in ("float32", "float64") if d in both]:
        x = SPECIAL.astype(dtype) if "special" in case else (rng.standard_normal((5, 4)) * 10).astype(dtype)
        kw: dict[str, Any] = {"axis": (0, 1) if case == "tuple_axis" else -1}
        if "masked" in case:
            kw["where"] = MASK
        if case == "weighted":
            kw["b"] = WEIGHTS.astype(dtype)
        results = {}
        for name in (a, b):
            try:
                results[name] = _results(name, func, x, **dict(kw))
            except Exception:
                record_property("blame", [name])
                raise
        ya, yb = results[a], results[b]
        if not ya.dtype == yb.dtype == np.dtype(dtype):
            record_property("blame", [n for n in (a, b) if results[n].dtype != np.dtype(dtype)])
            raise AssertionError(f"dtypes {a}: {ya.dtype}, {b}: {yb.dtype}, expected {dtype}")
        # each within tolerance of the oracle, so within twice the tolerance of each other
        err = measured(oracle.ulp_error(ya, yb, dtype, log_scale=log_scale))
        if not err <= 2 * oracle.TOLERANCE_ULPS[dtype]:
            truth = FUNCTIONS[func].truth(x, axes_of(kw["axis"], 2), kw.get("where"), **({"b": kw["b"]} if "b" in kw else {}))
            wrong = [
                n
                for n in (a, b)
                if not oracle.ulp_error(results[n], truth, dtype, log_scale=log_scale) <= oracle.TOLERANCE_ULPS[dtype]
            ]
            record_property("blame", wrong or [a, b])
            raise AssertionError(
                f"{a} and {b} differ by {err:.3g} eps ({dtype}); off the oracle: {', '.join(wrong) or 'neither'}"
            )
