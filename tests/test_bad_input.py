"""Bad input gets a clear error naming the argument, on every backend; never a silent wrong answer."""

from __future__ import annotations

import numpy as np
import pytest

import softmax_multi as smx

FUNCS = pytest.mark.parametrize("f", [smx.softmax, smx.log_softmax, smx.logsumexp], ids=lambda f: f.__name__)


@FUNCS
@pytest.mark.parametrize("axis", [2, -3, (0, 5)])
def test_axis_out_of_range(backend, f, axis):
    x = backend.asarray(np.zeros((2, 3)))
    with pytest.raises(smx.AxisError, match=r"axis .* out of bounds .* ndim 2") as info:
        f(x, axis=axis)
    assert isinstance(info.value, ValueError)


@FUNCS
def test_axis_out_of_range_on_0d(backend, f):
    with pytest.raises(ValueError, match="ndim 0"):
        f(backend.asarray(np.array(1.0)), axis=1)


@FUNCS
@pytest.mark.parametrize("axis", [(0, 0), (1, -1)])
def test_duplicate_axes(backend, f, axis):
    with pytest.raises(ValueError, match="axis .* twice"):
        f(backend.asarray(np.zeros((2, 3))), axis=axis)


@FUNCS
@pytest.mark.parametrize("axis", [1.0, "0", True, (0, True), [0]])
def test_axis_of_the_wrong_type(backend, f, axis):
    with pytest.raises(TypeError, match="axis must be an int"):
        f(backend.asarray(np.zeros((2, 3))), axis=axis)


@FUNCS
@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([1.0, "x"], dtype=object), ["a", "b"]])
def test_strings_and_objects(f, bad):
    with pytest.raises(TypeError, match="x must hold real numbers"):
        f(bad)


def test_ragged_list():
    with pytest.raises(TypeError, match="x could not be read as an array"):
        smx.softmax([[1.0], [1.0, 2.0]])


def test_unknown_object():
    with pytest.raises(TypeError, match="not an array of any registered backend"):
        smx.softmax(object())


def test_masked_arrays_are_refused():
    with pytest.raises(TypeError, match="masked arrays .* where="):
        smx.softmax(np.ma.masked_array([1.0, 2.0], mask=[False, True]))


@FUNCS
def test_where_that_does_not_broadcast(backend, f):
    x = backend.asarray(np.zeros((2, 3)))
    for shape in [(2,), (4, 3), (1, 2, 3)]:
        with pytest.raises(ValueError, match=r"where of shape .* does not broadcast .* \(2, 3\)"):
            f(x, where=backend.asarray(np.ones(shape, bool)))


@FUNCS
def test_where_that_is_not_boolean(backend, f):
    x = backend.asarray(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="where must be a boolean array"):
        f(x, where=backend.asarray(np.ones((2, 3))))


@FUNCS
@pytest.mark.parametrize("dtype", ["int32", "bool", "complex64", "float128x", 3])
def test_dtype_that_is_not_real_floating(backend, f, dtype):
    with pytest.raises(TypeError, match="dtype must be a real floating dtype"):
        f(backend.asarray(np.zeros(3)), dtype=dtype)


def test_keepdims_must_be_bool():
    with pytest.raises(TypeError, match="keepdims must be a bool"):
        smx.logsumexp(np.zeros(3), keepdims=1)


def test_where_from_another_library_names_both():
    import array_api_strict as xps

    with pytest.raises(TypeError, match="x is a numpy array but where is a array_api_strict array"):
        smx.softmax(np.zeros(3), where=xps.ones(3, dtype=xps.bool))
    with pytest.raises(TypeError, match="x is a array_api_strict array but where is a numpy array"):
        smx.softmax(xps.zeros(3), where=np.ones(3, bool))
