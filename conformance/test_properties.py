"""Properties that hold for any input (Hypothesis draws them; derandomised, --smx-max-examples)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmax_multi as smx
from softmax_multi.conformance import oracle
from softmax_multi.conformance.plugin import suite_settings

TOL = oracle.TOLERANCE_ULPS["float32"] * float(np.finfo(np.float32).eps)


def rows():
    """float32 arrays of 1 to 3 dims, values in ±10, and an axis into them.

    Rounding ``x - max`` costs up to |x - max|·eps/2 of relative error before ``exp`` in any
    float32 softmax, so the values stay where the 16-eps tolerance is a fair bound.
    """
    shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12)
    values = st.floats(-10, 10, width=32, allow_nan=False, allow_infinity=False)
    return shapes.flatmap(
        lambda shape: st.tuples(hnp.arrays(np.float32, shape, elements=values), st.integers(-len(shape), len(shape) - 1))
    )


def _run(backend, f, x_np, axis, **kw):
    return backend.numpy(f(backend.asarray(x_np), axis=axis, **kw)).astype(np.float64)


@suite_settings
@given(data=rows())
def test_rows_sum_to_one(backend, data):
    x, axis = data
    y = _run(backend, smx.softmax, x, axis)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=0, atol=x.shape[axis] * TOL)
    assert (y >= 0).all() and (y <= 1).all()


@suite_settings
@given(data=rows(), shift=st.floats(-1000, 1000, width=32))
def test_shift_invariance(backend, data, shift):
    x, axis = data
    shifted = (x.astype(np.float64) + shift).astype(np.float32)
    # the shift itself rounds, so compare each result with the oracle of its own input
    a, b = _run(backend, smx.softmax, x, axis), _run(backend, smx.softmax, shifted, axis)
    np.testing.assert_allclose(a, oracle.softmax(x, (axis,)).astype(np.float64), rtol=TOL, atol=1e-30)
    np.testing.assert_allclose(b, oracle.softmax(shifted, (axis,)).astype(np.float64), rtol=TOL, atol=1e-30)
    moved = np.abs(shifted.astype(np.float64) - x.astype(np.float64) - shift).max()  # rounding of the shift
    np.testing.assert_allclose(a, b, rtol=0, atol=2 * float(moved) + 2 * TOL)


@suite_settings
@given(data=rows())
def test_softmax_is_exp_of_log_softmax(backend, data):
    x, axis = data
    y, log_y = _run(backend, smx.softmax, x, axis), _run(backend, smx.log_softmax, x, axis)
    np.testing.assert_allclose(y, np.exp(log_y), rtol=float(4 * TOL * np.maximum(1, np.abs(log_y)).max()), atol=1e-37)


@suite_settings
@given(data=rows())
def test_log_softmax_is_x_minus_logsumexp(backend, data):
    x, axis = data
    log_y = _run(backend, smx.log_softmax, x, axis)
    lse = _run(backend, smx.logsumexp, x, axis, keepdims=True)
    expected = x.astype(np.float64) - lse
    np.testing.assert_allclose(log_y, expected, rtol=0, atol=float(4 * TOL * np.maximum(1, np.abs(expected)).max()))


@suite_settings
@given(data=rows(), mask_seed=st.integers(0, 2**32 - 1))
def test_masked_slices_sum_to_one_or_zero(backend, data, mask_seed):
    x, axis = data
    where = np.random.default_rng(mask_seed).random(x.shape) < 0.5
    y = _run(backend, smx.softmax, x, axis, where=backend.asarray(where))
    sums = y.sum(axis=axis)
    any_kept = where.any(axis=axis)
    np.testing.assert_allclose(sums[any_kept], 1.0, atol=x.shape[axis] * TOL)
    assert (sums[~any_kept] == 0).all() and (y[~where] == 0).all()
