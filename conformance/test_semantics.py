"""Every row of the semantics table (DESIGN.md §2), on the backend under test, against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from softmax_multi.conformance import oracle

import softmax_multi as smx

FUNCS = {
    "softmax": (smx.softmax, oracle.softmax, False),
    "log_softmax": (smx.log_softmax, oracle.log_softmax, True),
    "logsumexp": (smx.logsumexp, oracle.logsumexp, True),
}
ALL_FUNCS = pytest.mark.parametrize("func", list(FUNCS))


def _axes(axis, ndim):
    if axis is None or ndim == 0:
        return tuple(range(ndim))
    return tuple(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,)))


def same_place(backend, x, y):
    """``y`` is an array of the backend's own library, on ``x``'s device."""
    assert backend.owns(y), f"{backend.name} returned a {type(y).__module__}.{type(y).__qualname__}"
    assert getattr(y, "device", None) == getattr(x, "device", None), "the result left the input's device"


def check(backend, func, x_np, axis, *, where=None, dtype_name=None, measured=None, **kw):
    """Run ``func`` on backend data and compare with the oracle; return the result as NumPy."""
    ours, truth, log_scale = FUNCS[func]
    x = backend.asarray(x_np)
    w = None if where is None else backend.asarray(where)
    y = ours(x, axis=axis, where=w, **kw)
    same_place(backend, x, y)
    expected = truth(x_np, _axes(axis, x_np.ndim), where, **kw)
    got = backend.numpy(y)
    assert got.dtype == x_np.dtype, f"dtype {got.dtype}, expected {x_np.dtype}"
    err = oracle.assert_close(got, expected, dtype_name or str(x_np.dtype), log_scale=log_scale)
    if measured is not None:
        measured(err)
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
@pytest.mark.parametrize("low", ["float16", "bfloat16"])
def test_low_precision_accumulates_in_float32(backend, func, low, rng):
    """A row long enough that float16 accumulation would be visibly wrong; each declared dtype."""
    if low not in backend.dtypes():
        return  # the backend does not serve this dtype: nothing to check
    x32 = (rng.standard_normal((2, 3000)) * 2).astype(np.float32)
    xp = backend.spec.namespace(backend.asarray(x32))
    x = xp.astype(backend.asarray(x32), getattr(xp, low))
    y = FUNCS[func][0](x, axis=-1)
    assert y.dtype == x.dtype, f"dtype {y.dtype}, expected {x.dtype}"
    exact = backend.numpy(xp.astype(x, xp.float32))
    expected = FUNCS[func][1](exact, (1,)).astype(np.float32)
    expected = backend.numpy(xp.astype(xp.astype(backend.asarray(expected), x.dtype), xp.float32))
    got = backend.numpy(xp.astype(y, xp.float32))
    oracle.assert_close(got, expected, low, log_scale=FUNCS[func][2], ulps=1.0)


@ALL_FUNCS
@pytest.mark.parametrize("int_dtype", ["int32", "int64", "bool"])
def test_integer_and_bool_promote_to_default_float(backend, func, int_dtype):
    x_np = np.array([[1, 0, 3], [2, 2, 0]]).astype(int_dtype)
    y = FUNCS[func][0](backend.asarray(x_np), axis=-1)
    default = backend.default_float()  # float64 but for PyTorch's float32
    assert backend.dtype_name(y) == default
    oracle.assert_close(backend.numpy(y), FUNCS[func][1](x_np.astype(default), (1,)), default, log_scale=FUNCS[func][2])


@ALL_FUNCS
@pytest.mark.parametrize("complex_dtype", ["complex64", "complex128"])
def test_complex_input_is_a_type_error(backend, func, complex_dtype):
    x = backend.asarray(np.array([1 + 1j, 2]).astype(complex_dtype))
    with pytest.raises(TypeError, match="complex"):
        FUNCS[func][0](x)
    with pytest.raises(TypeError, match="complex"):
        FUNCS[func][0](x, dtype="float64")


@ALL_FUNCS
def test_dtype_argument_casts_first(backend, rng, func):
    # Cast to a narrower declared dtype, so that computing before the cast would show.
    src, target = ("float32", "float16") if "float16" in backend.dtypes() else ("float64", "float32")
    x_np = (rng.standard_normal((3, 5)) * 3).astype(src)
    xp = backend.spec.namespace(backend.asarray(x_np))
    y = FUNCS[func][0](backend.asarray(x_np), axis=-1, dtype=target)
    assert y.dtype == getattr(xp, target)
    narrowed = x_np.astype(target).astype(np.float32 if target == "float16" else target)
    expected = FUNCS[func][1](narrowed, (1,)).astype(target).astype(narrowed.dtype)
    got = backend.numpy(xp.astype(y, getattr(xp, str(narrowed.dtype))))
    oracle.assert_close(got, expected, target, log_scale=FUNCS[func][2], ulps=1.0 if target == "float16" else None)


# -- the input -----------------------------------------------------------------------------------


@ALL_FUNCS
def test_input_is_never_mutated(backend, rng, func):
    x_np = rng.standard_normal((4, 5)).astype(np.float32)
    where = rng.random((4, 5)) < 0.5
    x = backend.asarray(x_np)
    FUNCS[func][0](x, axis=-1)
    FUNCS[func][0](x, axis=0, where=backend.asarray(where))
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
