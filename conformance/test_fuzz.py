"""Fuzzing: shapes (0-d, empty, size-1 axes), axes, masks, dtypes and values with ±inf, NaN, huge and
subnormal numbers. No crash, no warning, and every result within tolerance of the oracle.

CI draws ``--smx-max-examples`` inputs per function and backend (50 by default); a longer run is
``pytest -p softmax_multi.conformance.plugin --pyargs softmax_multi.conformance -k fuzz --smx-max-examples 5000``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmax_multi as smx
from softmax_multi.conformance import oracle
from softmax_multi.conformance.functions import axes_of
from softmax_multi.conformance.plugin import suite_settings

FUNCS = ["softmax", "log_softmax", "logsumexp"]


@st.composite
def inputs(draw, dtypes):
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    finfo = np.finfo(dtype)
    values = st.one_of(
        st.floats(-20, 20, width=finfo.bits),
        st.sampled_from(
            [
                np.inf,
                -np.inf,
                np.nan,
                float(finfo.max),
                -float(finfo.max),
                float(finfo.smallest_subnormal),
                -float(finfo.tiny),
                0.0,
            ]
        ),
    )
    x = draw(hnp.arrays(dtype, shape, elements=values))
    ndim = len(shape)
    axis = draw(
        st.one_of(
            st.none(),
            st.integers(-max(ndim, 1), max(ndim, 1) - 1),
            st.lists(st.integers(0, ndim - 1), unique=True).map(tuple) if ndim else st.just(()),
        )
    )
    where = draw(st.one_of(st.none(), hnp.arrays(np.bool_, shape)))
    return x, axis, where


def allowed_error(func, x, expected, eps):
    """Per element: the tolerance, plus half an eps per unit of |x - max| for softmax, the rounding
    of ``x - max`` that any softmax in this precision pays before ``exp``."""
    base = oracle.TOLERANCE_ULPS["float32"]
    if func != "softmax":
        return base
    with np.errstate(divide="ignore"):
        distance = np.nan_to_num(-np.log(np.asarray(expected, dtype=np.float64)), posinf=0.0)
    return base + 0.5 * distance


@pytest.mark.parametrize("func", FUNCS)
def test_fuzz(backend, func):
    dtypes = [d for d in ("float32", "float64") if d in backend.dtypes()]

    @suite_settings
    @given(data=inputs(dtypes))
    def run(data):
        x_np, axis, where = data
        x = backend.asarray(x_np)
        w = None if where is None else backend.asarray(where)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = getattr(smx, func)(x, axis=axis, where=w)
        got = backend.numpy(y)
        assert got.dtype == x_np.dtype
        expected = getattr(oracle, func)(x_np, axes_of(axis, x_np.ndim), where)
        assert got.shape == expected.shape
        if got.size == 0:
            return
        name = str(x_np.dtype)
        eps = float(np.finfo(x_np.dtype).eps)
        limit = allowed_error(func, x_np, expected, eps)
        # error per element, then against its own allowance
        err = oracle.ulp_error(got, expected, name, log_scale=func != "softmax")
        if np.ndim(limit) == 0 or err <= oracle.TOLERANCE_ULPS[name]:
            assert err <= float(np.max(limit)), f"{err} eps"
        else:
            e = np.asarray(expected, dtype=np.float64)
            a = got.astype(np.float64)
            fin = np.isfinite(e)
            rel = np.abs(a[fin] - e[fin]) / np.maximum(np.abs(e[fin]), np.finfo(x_np.dtype).tiny) / eps
            assert (rel <= np.asarray(limit)[fin]).all(), f"{rel.max()} eps"

    run()
