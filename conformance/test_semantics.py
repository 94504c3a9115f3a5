"""Every row of the semantics table (README "Semantics"), on the backend under test, against the oracle."""

from __future__ import annotations

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi.conformance import oracle
from softmax_multi.conformance.functions import FUNCTIONS, axes_of

ALL_FUNCS = pytest.mark.parametrize("func", list(FUNCTIONS))


def same_place(backend, x, y):
    """``y`` is an array of the backend's own library, on ``x``'s device."""
    assert backend.owns(y), f"{backend.name} returned a {type(y).__module__}.{type(y).__qualname__}"
    assert getattr(y, "device", None) == getattr(x, "device", None), "the result left the input's device"


def check(backend, func, x_np, axis, *, where=None, dtype_name=None, measured=None, **kw):
    """Run ``func`` on backend data and compare with the oracle; return the result as NumPy."""
    ours, truth, log_scale = FUNCTIONS[func]
    x = backend.asarray(x_np)
    w = None if where is None else backend.asarray(where)
    y = ours(x, axis=axis, where=w, **kw)
    same_place(backend, x, y)
    expected = truth(x_np, axes_of(axis, x_np.ndim), where, **kw)
    got = backend.numpy(y)
    assert got.dtype == x_np.dtype, f"dtype {got.dtype}, expected {x_np.dtype}"
    oracle.assert_close(got, expected, dtype_name or str(x_np.dtype), log_scale=log_scale, record=measured)
    return got


# -- finite input --------------------------------------------------------------------------------


@ALL_FUNCS
@pytest.mark.parametrize("shape,axis", [((7,), -1), ((1,), -1), ((4, 33), -1), ((4, 33), 0), ((3, 4, 5), 1)])
def test_finite_input(backend, float_dtype, rng, func, shape, axis, measured):
    dtype = float_dtype
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    got = check(backend, func, x, axis, measured=measured)
    if func == "softmax":
        np.testing.assert_allclose(got.sum(axis=axis), 1.0, rtol=1e-5 if dtype == "float32" else 1e-12)
    assert str(got.dtype) == dtype


@ALL_FUNCS
def test_large_inputs_do_not_overflow(backend, func, measured):
    x = np.array([[89.0, 90.0, 100.0], [1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]], dtype="float32")
    check(backend, func, x, -1, measured=measured)


def test_worked_example(backend):
    got = backend.numpy(smx.softmax(backend.asarray([5.0, 7.0, 10.0])))
    np.testing.assert_array_equal(got.round(4), [0.0064, 0.0471, 0.9465])
    rows = backend.numpy(smx.softmax(backend.asarray([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])))
    np.testing.assert_array_equal(rows.round(4), [[0.0900, 0.2447, 0.6652]] * 3)


# -- axis ----------------------------------------------------------------------------------------


@ALL_FUNCS
@pytest.mark.parametrize("axis", [0, 2, -1, -3, (0, 2), (-1, 1), (0, 1, 2), None, ()])
def test_axis_forms(backend, rng, func, axis, measured):
    x = (rng.standard_normal((3, 4, 5)) * 3).astype(np.float32)
    check(backend, func, x, axis, measured=measured)


def test_axis_defaults(backend, rng):
    x_np = rng.standard_normal((3, 4)).astype(np.float32)
    x = backend.asarray(x_np)
    np.testing.assert_allclose(backend.numpy(smx.softmax(x)), backend.numpy(smx.softmax(x, axis=-1)))
    assert backend.numpy(smx.logsumexp(x)).shape == ()  # logsumexp reduces everything by default
    np.testing.assert_allclose(backend.numpy(smx.logsumexp(x)), np.log(np.exp(x_np.astype(float)).sum()), rtol=1e-6)


@ALL_FUNCS
def test_zero_d_input(backend, func):
    x = np.array(2.5, dtype=np.float32)
    got = check(backend, func, x, -1)
    assert got.shape == ()
    check(backend, func, x, None)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 1, (0, 2)])
def test_logsumexp_keepdims(backend, rng, keepdims, axis):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    got = check(backend, "logsumexp", x, axis, keepdims=keepdims)
    assert got.shape == np.sum(x, axis=axis, keepdims=keepdims).shape


# -- where= --------------------------------------------------------------------------------------


@ALL_FUNCS
def test_where_masks_entries_and_fully_masked_slices(backend, rng, func, measured):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    where = rng.random((4, 6)) < 0.6
    where[1] = False  # a fully masked slice
    where[2] = True
    x[~where] = np.nan  # masked entries never leak, whatever they hold
    got = check(backend, func, x, -1, where=where, measured=measured)
    assert not np.isnan(got).any()
    if func == "softmax":
        assert (got[~where] == 0).all() and (got[1] == 0).all()
        np.testing.assert_allclose(got[[0, 2, 3]].sum(-1), 1.0, rtol=1e-6)
    elif func == "log_softmax":
        assert (got[~where] == -np.inf).all()
    else:
        assert got[1] == -np.inf


@ALL_FUNCS
def test_where_broadcasts(backend, rng, func):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    check(backend, func, x, -1, where=np.array([True, False, True, True, False]))
    check(backend, func, x, -1, where=np.array([[True], [False], [True]]))


def test_where_accepts_python_bools(backend, rng):
    x = backend.asarray(rng.standard_normal((2, 3)).astype(np.float32))
    got = backend.numpy(smx.softmax(x, where=[True, False, True]))
    assert (got[:, 1] == 0).all()


# -- special values ------------------------------------------------------------------------------

SPECIAL_ROWS = np.array(
    [
        [1.0, np.inf, 2.0],  # +inf: softmax NaN, logsumexp +inf
        [1.0, np.nan, 2.0],  # NaN: NaN everywhere
        [np.inf, np.nan, 2.0],  # NaN and +inf: NaN
        [-np.inf, -np.inf, -np.inf],  # all -inf, no mask: softmax NaN, logsumexp -inf
        [-np.inf, 0.0, 1.0],  # some -inf: ordinary, exp(-inf) = 0
        [np.inf, np.inf, 0.0],
    ]
)


@ALL_FUNCS
def test_special_values(backend, float_dtype, func):
    got = check(backend, func, SPECIAL_ROWS.astype(float_dtype), -1)
    if func == "logsumexp":
        assert got[0] == np.inf and np.isnan(got[1]) and np.isnan(got[2]) and got[3] == -np.inf
    else:
        assert np.isnan(got[[0, 1, 2, 3, 5]]).all()
    if func == "softmax":
        np.testing.assert_array_equal(got[4, 0], 0.0)


def test_special_values_are_silent(backend):
    """inf - inf and 0/0 happen inside; no RuntimeWarning may reach the user."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in (smx.softmax, smx.log_softmax, smx.logsumexp):
            f(backend.asarray(SPECIAL_ROWS.astype(np.float32)), axis=-1)
            f(backend.asarray(SPECIAL_ROWS.astype(np.float32)), axis=-1, where=backend.asarray(np.zeros(3, bool)))


# -- empty axis ----------------------------------------------------------------------------------


@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
def test_empty_axis_gives_empty_result(backend, func):
    x = backend.asarray(np.zeros((3, 0), np.float32))
    y = getattr(smx, func)(x, axis=-1)
    assert backend.numpy(y).shape == (3, 0)


def test_empty_axis_logsumexp_is_neg_inf(backend):
    got = check(backend, "logsumexp", np.zeros((3, 0), np.float32), -1)
    np.testing.assert_array_equal(got, [-np.inf] * 3)
    assert backend.numpy(smx.logsumexp(backend.asarray(np.zeros((0,), np.float32)))) == -np.inf


def test_empty_non_reduced_axis(backend):
    got = check(backend, "softmax", np.zeros((0, 4), np.float32), -1)
    assert got.shape == (0, 4)


# -- dtypes --------------------------------------------------------------------------------------


@ALL_FUNCS
def test_low_precision_accumulates_in_float32(backend, func, low_dtype, rng):
    """A row long enough that float16 accumulation would be visibly wrong; each declared dtype."""
    x32 = (rng.standard_normal((2, 3000)) * 2).astype(np.float32)
    xp = backend.namespace(backend.asarray(x32))
    x = xp.astype(backend.asarray(x32), getattr(xp, low_dtype))
    y = FUNCTIONS[func].ours(x, axis=-1)
    assert y.dtype == x.dtype, f"dtype {y.dtype}, expected {x.dtype}"
    exact = backend.numpy(xp.astype(x, xp.float32))
    expected = FUNCTIONS[func].truth(exact, (1,)).astype(np.float32)
    expected = backend.numpy(xp.astype(xp.astype(backend.asarray(expected), x.dtype), xp.float32))
    got = backend.numpy(xp.astype(y, xp.float32))
    oracle.assert_close(got, expected, low_dtype, log_scale=FUNCTIONS[func].log_scale, ulps=oracle.ROUNDED_TOLERANCE_ULPS)


@ALL_FUNCS
@pytest.mark.parametrize("int_dtype", ["int32", "int64", "bool"])
def test_integer_and_bool_promote_to_default_float(backend, func, int_dtype):
    x_np = np.array([[1, 0, 3], [2, 2, 0]]).astype(int_dtype)
    y = FUNCTIONS[func][0](backend.asarray(x_np), axis=-1)
    default = backend.default_float()  # float64 but for PyTorch's float32
    assert backend.dtype_name(y) == default
    oracle.assert_close(backend.numpy(y), FUNCTIONS[func][1](x_np.astype(default), (1,)), default, log_scale=FUNCTIONS[func][2])


@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
def test_complex_input_is_a_type_error(backend, func, complex_dtype):
    x = backend.asarray(np.array([1 + 1j, 2]).astype(complex_dtype))
    with pytest.raises(TypeError, match="complex"):
        FUNCTIONS[func].ours(x)
    with pytest.raises(TypeError, match="complex"):
        FUNCTIONS[func].ours(x, dtype="float64")


COMPLEX_ROWS = np.array(
    [
        [1 + 1j, 2 - 1j, -2 + 3j, 0.5j],
        [30 + 0.5j, 30 - 1j, -5 + 0j, 1 + 4j],  # two entries of the largest real part
        [0, 2.2204460492503132e-17j, -40, -40],  # a small imaginary part, kept
        [3 + 3.1j, 3 - 3.1j, 3 + 3.1j, -1],  # phases that sum past pi
    ]
)


@pytest.mark.parametrize("return_sign", [False, True])
def test_complex_logsumexp(backend, complex_dtype, return_sign, measured):
    """Complex logsumexp as SciPy's: complex result, imaginary part in (-pi, pi]; with
    return_sign, log|total| and the total's phase."""
    x_np = COMPLEX_ROWS.astype(complex_dtype)
    got = smx.logsumexp(backend.asarray(x_np), axis=-1, return_sign=return_sign)
    expected = oracle.logsumexp(x_np, (1,), return_sign=return_sign)
    parts = zip(got, expected) if return_sign else [(got, expected)]
    real = "float32" if complex_dtype == "complex64" else "float64"
    for i, (result, truth) in enumerate(parts):
        ours = backend.numpy(result)
        want = np.dtype(real) if return_sign and i == 0 else np.dtype(complex_dtype)
        assert ours.dtype == want, f"dtype {ours.dtype}, expected {want}"
        oracle.assert_close(ours, truth, complex_dtype, log_scale=True, record=measured)
        if not return_sign:
            assert (np.abs(ours.imag) <= np.pi).all()


@ALL_FUNCS
def test_dtype_argument_casts_first(backend, rng, func):
    # Cast to a narrower declared dtype, so that computing before the cast would show.
    src, target = ("float32", "float16") if "float16" in backend.dtypes() else ("float64", "float32")
    x_np = (rng.standard_normal((3, 5)) * 3).astype(src)
    xp = backend.spec.namespace(backend.asarray(x_np))
    y = FUNCTIONS[func][0](backend.asarray(x_np), axis=-1, dtype=target)
    assert y.dtype == getattr(xp, target)
    narrowed = x_np.astype(target).astype(np.float32 if target == "float16" else target)
    expected = FUNCTIONS[func][1](narrowed, (1,)).astype(target).astype(narrowed.dtype)
    got = backend.numpy(xp.astype(y, getattr(xp, str(narrowed.dtype))))
    oracle.assert_close(
        got, expected, target, log_scale=FUNCTIONS[func][2], ulps=oracle.ROUNDED_TOLERANCE_ULPS if target == "float16" else None
    )


# -- the input -----------------------------------------------------------------------------------


@ALL_FUNCS
def test_input_is_never_mutated(backend, rng, func):
    x_np = rng.standard_normal((4, 5)).astype(np.float32)
    where = rng.random((4, 5)) < 0.5
    x = backend.asarray(x_np)
    FUNCTIONS[func][0](x, axis=-1)
    FUNCTIONS[func][0](x, axis=0, where=backend.asarray(where))
    np.testing.assert_array_equal(backend.numpy(x), x_np)


def test_non_contiguous_backend_arrays(backend, rng):
    x_np = rng.standard_normal((6, 10)).astype(np.float32)
    x = backend.asarray(x_np)[::2, ::3]
    oracle.assert_close(backend.numpy(smx.softmax(x)), oracle.softmax(x_np[::2, ::3], (1,)), "float32")


@ALL_FUNCS
def test_masked_entries_of_non_finite_slices(backend, func):
    """A slice holding NaN or +inf is NaN where unmasked, yet its masked entries stay 0 / -inf."""
    where = np.array([True, True, False])
    for row in SPECIAL_ROWS[[0, 1, 2, 5]]:  # one slice at a time: no other slice may hide the fault
        got = check(backend, func, row.astype(np.float32), -1, where=where)
        if func != "logsumexp":
            assert got[2] == (0.0 if func == "softmax" else -np.inf)


# -- logsumexp's weights and signs (b=, return_sign=, as in SciPy) -------------------------------

WEIGHT_CASES = {
    "positive": ([[1.0, 2.0, 3.0], [1000.0, 1000.0, 999.0]], [[1.0, 2.0, 0.5], [1.2, 1.2, 3.0]]),
    "negative_total": (
        [[1.0, 2.0, 3.0], [3.06409428, 0.37251854, 3.87471931]],
        [[1.0, 1.0, -2.0], [1.88190708, 2.84174795, -3.85016884]],
    ),
    "cancelling_at_the_max": ([[5.0, 5.0, 1.0], [2.0, 2.0, 2.0]], [[1.0, -1.0, 1.0], [1.0, -1.0, 0.0]]),
    "zero_weights_hold_inf_and_nan": ([[np.inf, 1.0, np.nan], [-np.inf, 10000.0, 2.0]], [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
    "non_finite": ([[np.inf, 1.0, 2.0], [np.inf, np.inf, 0.0]], [[-1.0, 1.0, 1.0], [1.0, -1.0, 1.0]]),
    "all_zero": ([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
}


def _check_weighted(backend, x_np, b_np, measured, **kw):
    """logsumexp with weights against the oracle: the value and, with return_sign, the sign."""
    x, b = backend.asarray(x_np), backend.asarray(b_np)
    w = kw.pop("where", None)
    got = smx.logsumexp(x, b=b, where=None if w is None else backend.asarray(w), **kw)
    axis = kw.pop("axis", None)
    shape = np.broadcast_shapes(x_np.shape, b_np.shape)
    full_x, full_b = np.broadcast_to(x_np, shape), np.broadcast_to(b_np, shape)
    expected = oracle.logsumexp(full_x, axes_of(axis, len(shape)), w, b=full_b, **kw)
    if not kw.get("return_sign"):
        got, expected = [got], [expected]
    dtype = str(np.result_type(x_np, b_np))
    for result, truth in zip(got, expected):
        ours = backend.numpy(result)
        assert ours.dtype == np.dtype(dtype), f"dtype {ours.dtype}, expected {dtype}"
        oracle.assert_close(ours, truth, dtype, log_scale=True, record=measured)


@pytest.mark.parametrize("return_sign", [False, True])
@pytest.mark.parametrize("case", list(WEIGHT_CASES))
def test_logsumexp_weights(backend, float_dtype, case, return_sign, measured):
    x, b = (np.array(v, dtype=float_dtype) for v in WEIGHT_CASES[case])
    _check_weighted(backend, x, b, measured, axis=-1, return_sign=return_sign)


def test_logsumexp_weights_broadcast_and_mask(backend, float_dtype, rng, measured):
    """x and b broadcast together, axis names the broadcast shape's axes, and where= applies too."""
    x = rng.standard_normal((4, 1, 5)).astype(float_dtype)
    b = rng.standard_normal((3, 1)).astype(float_dtype)
    where = rng.random((4, 3, 5)) < 0.7
    for axis in (None, -1, (0, 2)):
        _check_weighted(backend, x, b, measured, axis=axis, return_sign=True)
    _check_weighted(backend, x, b, measured, axis=-1, where=where, return_sign=True)
    value, sign = smx.logsumexp(backend.asarray(x), axis=1, b=backend.asarray(b), keepdims=True, return_sign=True)
    assert backend.numpy(value).shape == backend.numpy(sign).shape == (4, 1, 5)


def test_logsumexp_python_weights_and_empty_slices(backend, measured):
    x = backend.asarray(np.array([[1000.0, 1000.0], [1.0, 2.0]]))
    got = backend.numpy(smx.logsumexp(x, axis=-1, b=1.2))
    expected = oracle.logsumexp(np.array([[1000.0, 1000.0], [1.0, 2.0]]), (1,), b=np.full((2, 2), 1.2))
    oracle.assert_close(got, expected, "float64", log_scale=True, record=measured)
    value, sign = smx.logsumexp(backend.asarray(np.zeros((2, 0))), axis=-1, return_sign=True)
    np.testing.assert_array_equal(backend.numpy(value), [-np.inf, -np.inf])
    np.testing.assert_array_equal(backend.numpy(sign), [-1.0, -1.0])  # SciPy's sign of an empty sum


# -- one dominant entry: relative precision near zero ----------------------------------------------


def _dominated(dtype):
    """Slices whose logsumexp is tiny: one entry, the others far below it (or tied with it)."""
    rows = [[0.0, -40.0], [0.0, -20.0, -25.0, -30.0], [5.0, -35.0, -36.0, -50.0], [0.0, -16.0, -17.0, -np.inf]]
    width = max(map(len, rows))
    x = np.full((len(rows), width), -np.inf)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
    if dtype == "float32":
        x = np.where(np.isfinite(x), x / 2, x)  # float32's smallest sums: exp(-20)
    long = np.full((2, 5000), -45.0 if dtype == "float64" else -22.0)  # long enough for any kernel
    long[:, 17] = 0.0
    return x.astype(dtype), long.astype(dtype)


@pytest.mark.parametrize("func", ["logsumexp", "log_softmax"])
def test_dominant_entry_keeps_relative_precision(backend, float_dtype, func, measured):
    """logsumexp of [0, -40] is 4.25e-18, not 0 (SciPy's gh-18295), and log_softmax at a slice's
    maximum is -log1p(rest): each judged by its relative error, not scaled by max(1, |y|)."""
    for x_np in _dominated(float_dtype):
        got = backend.numpy(FUNCTIONS[func].ours(backend.asarray(x_np), axis=-1))
        expected = FUNCTIONS[func].truth(x_np, (1,))
        if func == "log_softmax":  # the values at each slice's maximum
            at_max = np.argmax(x_np, axis=-1)[:, None]
            got, expected = np.take_along_axis(got, at_max, -1), np.take_along_axis(expected, at_max, -1)
        oracle.assert_close(got, expected, float_dtype, log_scale=False, record=measured)


# -- memory layouts and byte orders ----------------------------------------------------------------


@ALL_FUNCS
def test_input_forms(backend, input_form, float_dtype, func, rng, measured):
    """Every other way the backend's arrays can hold data (byte orders, strides, views, memory
    maps): the same answers, native-order results of the input's dtype, and the input untouched."""
    a = (rng.standard_normal((6, 40)) * 3).astype(float_dtype)
    x = backend.spec.input_forms[input_form](a, backend.device)
    held = np.array(backend.numpy(x))  # the values this form holds
    for axis in (-1, 0, None):
        y = backend.numpy(FUNCTIONS[func].ours(x, axis=axis))
        assert y.dtype == np.dtype(float_dtype), f"dtype {y.dtype!r}, expected {float_dtype}"
        expected = FUNCTIONS[func].truth(held.astype(float_dtype), axes_of(axis, 2))
        oracle.assert_close(y, expected, float_dtype, log_scale=FUNCTIONS[func].log_scale, record=measured)
    np.testing.assert_array_equal(backend.numpy(x), held)
