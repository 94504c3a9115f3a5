"""Bad input gets a clear error naming the argument, on every backend; never a silent wrong answer."""

from __future__ import annotations

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi.conformance.plugin import Backend

from .conftest import BACKENDS

ALL = (smx.softmax, smx.log_softmax, smx.logsumexp)
SOFTMAXES = (smx.softmax, smx.log_softmax)
FUNCS = pytest.mark.parametrize("f", ALL, ids=lambda f: f.__name__)

# The error contract: the same bad input gives the same exception and message on every backend.
# (case, the functions it applies to, call(f, backend), exception, message pattern) - the README's
# table lists these rows.
CONTRACT = [
    (
        "complex dtype",
        SOFTMAXES,
        lambda f, b: f(b.asarray(np.array([1 + 1j, 2]))),
        TypeError,
        r"complex input is not supported \(x has dtype complex128\); expected real numbers",
    ),
    (
        "complex x, real dtype=",
        (smx.logsumexp,),
        lambda f, b: f(b.asarray(np.array([1 + 1j, 2])), dtype="float64"),
        TypeError,
        r"dtype must be a complex floating dtype for complex x \(x has dtype complex128\), got 'float64'",
    ),
    (
        "axis out of range",
        ALL,
        lambda f, b: f(b.asarray(np.zeros((2, 3))), axis=2),
        smx.AxisError,
        r"axis 2 is out of bounds for an array of ndim 2",
    ),
    (
        "negative axis out of range",
        ALL,
        lambda f, b: f(b.asarray(np.zeros((2, 3))), axis=(0, -3)),
        smx.AxisError,
        r"axis -3 is out of bounds .* ndim 2",
    ),
    (
        "axis on a 0-d array",
        ALL,
        lambda f, b: f(b.asarray(np.array(1.0)), axis=1),
        smx.AxisError,
        r"axis 1 is out of bounds for an array of ndim 0",
    ),
    (
        "duplicate axes",
        ALL,
        lambda f, b: f(b.asarray(np.zeros((2, 3))), axis=(1, -1)),
        smx.AxisError,
        r"axis \(1, -1\) names the same axis twice",
    ),
    (
        "axis of the wrong type",
        ALL,
        lambda f, b: f(b.asarray(np.zeros((2, 3))), axis=1.0),
        TypeError,
        r"axis must be an int, a tuple of ints or None",
    ),
    (
        "where not broadcastable",
        ALL,
        lambda f, b: f(b.asarray(np.zeros((2, 3))), where=b.asarray(np.ones((4, 3), bool))),
        ValueError,
        r"where of shape \(4, 3\) does not broadcast to the shape of x \(2, 3\)",
    ),
    (
        "where not boolean",
        ALL,
        lambda f, b: f(b.asarray(np.zeros((2, 3))), where=b.asarray(np.ones((2, 3)))),
        TypeError,
        r"where must be a boolean array, got dtype float64",
    ),
    (
        "non-floating dtype=",
        SOFTMAXES,
        lambda f, b: f(b.asarray(np.zeros(3)), dtype="int32"),
        TypeError,
        r"dtype must be a real floating dtype, got 'int32'",
    ),
    (
        "non-floating dtype= (logsumexp)",
        (smx.logsumexp,),
        lambda f, b: f(b.asarray(np.zeros(3)), dtype="int32"),
        TypeError,
        r"dtype must be a floating dtype, got 'int32'",
    ),
    (
        "b that does not broadcast",
        (smx.logsumexp,),
        lambda f, b: f(b.asarray(np.zeros((2, 3))), b=b.asarray(np.ones((4, 3)))),
        ValueError,
        r"b of shape \(4, 3\) does not broadcast against x of shape \(2, 3\)",
    ),
    (
        "b not numbers",
        (smx.logsumexp,),
        lambda f, b: f(np.zeros(2), b=np.array(["a", "b"])),
        TypeError,
        r"b must hold numbers, got dtype <U1",
    ),
    (
        "return_sign not a bool",
        (smx.logsumexp,),
        lambda f, b: f(b.asarray(np.zeros(3)), return_sign="yes"),
        TypeError,
        r"return_sign must be a bool, got 'yes'",
    ),
]
CONTRACT_CASES = [(case, f) for case in CONTRACT for f in case[1]]


@pytest.mark.parametrize("case,f", CONTRACT_CASES, ids=[f"{c[0]}-{f.__name__}" for c, f in CONTRACT_CASES])
def test_error_contract(backend, f, case):
    _, _, call, exc, pattern = case
    with pytest.raises(exc, match=f"^{f.__name__}: {pattern}"):
        call(f, backend)


OUT_FUNCS = pytest.mark.parametrize("f", [smx.softmax, smx.log_softmax], ids=lambda f: f.__name__)

# out= (softmax and log_softmax): the rows for backends that write into out=, and the one error
# of those that cannot (JAX: immutable arrays; array-api-strict: no in-place writes in the standard).
OUT_CONTRACT = [
    (
        "out of the wrong shape",
        lambda f, b: f(b.asarray(np.zeros((2, 3))), out=b.asarray(np.zeros((3, 2)))),
        ValueError,
        r"out has shape \(3, 2\), expected \(2, 3\) \(the shape of x\)",
    ),
    (
        "out of the wrong dtype",
        lambda f, b: f(b.asarray(np.zeros((2, 3))), out=b.asarray(np.zeros((2, 3), np.float32))),
        TypeError,
        r"out has dtype float32, expected float64 \(the result's dtype\)",
    ),
    (
        "out of another library",
        lambda f, b: f(b.asarray(np.zeros((2, 3))), out=_foreign(b, np.zeros((2, 3)))),
        TypeError,
        r"x is a \w+ array but out is a \w+ array; pass out from the same library as x",
    ),
]


def _foreign(b: Backend, a: np.ndarray):
    return Backend.named("torch" if b.name == "numpy" else "numpy").asarray(a)


@OUT_FUNCS
@pytest.mark.parametrize("case", OUT_CONTRACT, ids=[c[0] for c in OUT_CONTRACT])
def test_out_contract(backend, f, case):
    _, call, exc, pattern = case
    if backend.spec.out is not True:
        exc, pattern = TypeError, rf"out= is not supported for {backend.name} arrays: .+; use the returned array"
    with pytest.raises(exc, match=f"^{f.__name__}: {pattern}"):
        call(f, backend)


@OUT_FUNCS
def test_out_read_only_numpy(f):
    out = np.zeros(3)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=f"^{f.__name__}: out is read-only"):
        f(np.zeros(3), out=out)


def test_out_with_autograd_is_refused():
    torch = pytest.importorskip("torch")
    x = torch.zeros(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"^softmax: out= cannot take part in autograd"):
        smx.softmax(x, out=torch.empty(3))


def test_logsumexp_has_no_out():
    with pytest.raises(TypeError, match="out"):
        smx.logsumexp(np.zeros(3), out=np.zeros(()))


PAIRS = [(mine, other) for mine in BACKENDS for other in BACKENDS if other != mine]


@FUNCS
@pytest.mark.parametrize("mine,other", PAIRS, ids=[f"{m}-{o}" for m, o in PAIRS])
def test_arrays_of_two_libraries(f, mine, other):
    mask = Backend.named(other).asarray(np.ones(3, bool))
    with pytest.raises(
        TypeError, match=f"x is a {mine} array but where is a {other} array; pass where from the same library as x"
    ):
        f(Backend.named(mine).asarray(np.zeros(3)), where=mask)


@pytest.mark.parametrize("mine,other", PAIRS, ids=[f"{m}-{o}" for m, o in PAIRS])
def test_weights_of_another_library(mine, other):
    weights = Backend.named(other).asarray(np.ones(3))
    with pytest.raises(
        TypeError, match=f"^logsumexp: x is a {mine} array but b is a {other} array; pass b from the same library as x"
    ):
        smx.logsumexp(Backend.named(mine).asarray(np.zeros(3)), b=weights)


@FUNCS
@pytest.mark.parametrize("axis", ["0", True, (0, True), [0], None.__class__])
def test_more_axes_of_the_wrong_type(backend, f, axis):
    with pytest.raises(TypeError, match="axis must be an int"):
        f(backend.asarray(np.zeros((2, 3))), axis=axis)


@FUNCS
@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([1.0, "x"], dtype=object), ["a", "b"]])
def test_strings_and_objects(f, bad):
    expected = "numbers" if f is smx.logsumexp else "real numbers"  # logsumexp takes complex numbers too
    with pytest.raises(TypeError, match=f"^{f.__name__}: x must hold {expected}, got dtype"):
        f(bad)


def test_ragged_list():
    with pytest.raises(TypeError, match="x could not be read as an array"):
        smx.softmax([[1.0], [1.0, 2.0]])


def test_unknown_object():
    with pytest.raises(TypeError, match="not an array of any registered backend"):
        smx.softmax(object())


def test_masked_arrays_are_refused():
    with pytest.raises(TypeError, match=r"^softmax: masked arrays .* where="):
        smx.softmax(np.ma.masked_array([1.0, 2.0], mask=[False, True]))


def test_pandas_and_xarray_objects_get_a_hint():
    class Series:  # what matters: not an array, but it holds one
        def to_numpy(self):
            return np.zeros(3)

    with pytest.raises(TypeError, match=r"not an array of any registered backend .*; pass x.to_numpy\(\)"):
        smx.softmax(Series())


@pytest.mark.parametrize("f", SOFTMAXES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", ["int32", "bool", "complex64", "float128x", 3])
def test_dtype_that_is_not_real_floating(backend, f, dtype):
    with pytest.raises(TypeError, match="dtype must be a real floating dtype"):
        f(backend.asarray(np.zeros(3)), dtype=dtype)


@pytest.mark.parametrize("dtype", ["int32", "bool", "float128x", 3])
def test_logsumexp_dtype_that_is_not_floating(backend, dtype):
    with pytest.raises(TypeError, match=r"^logsumexp: dtype must be a floating dtype"):
        smx.logsumexp(backend.asarray(np.zeros(3)), dtype=dtype)


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_numpy_dtype_spellings_on_every_backend(backend, name):
    """dtype=np.float32 (or float, or np.dtype) means the same dtype on any library, by its name."""
    x = backend.asarray(np.zeros(3, dtype=np.float32 if name == "float64" else np.float64))
    for spelling in (getattr(np, name), np.dtype(name), name):
        assert backend.dtype_name(smx.softmax(x, dtype=spelling)) == name


def test_keepdims_must_be_bool():
    with pytest.raises(TypeError, match="keepdims must be a bool"):
        smx.logsumexp(np.zeros(3), keepdims=1)
