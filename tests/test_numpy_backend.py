"""NumPy-only behaviour: dtype spellings, read-only and strided views, Python inputs."""

from __future__ import annotations

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi.conformance import oracle

FUNCS = {
    "softmax": (smx.softmax, oracle.softmax, False),
    "log_softmax": (smx.log_softmax, oracle.log_softmax, True),
    "logsumexp": (smx.logsumexp, oracle.logsumexp, True),
}
ALL_FUNCS = pytest.mark.parametrize("func", list(FUNCS))


def test_dtype_argument_numpy_spellings(rng):
    x = rng.standard_normal(4)
    assert smx.softmax(x, dtype=np.float32).dtype == np.float32
    assert smx.softmax(x, dtype=np.dtype("float32")).dtype == np.float32
    assert smx.softmax(x.astype(np.float32), dtype=float).dtype == np.float64
    assert smx.softmax(x, dtype="float16").dtype == np.float16


@ALL_FUNCS
def test_read_only_and_non_contiguous_numpy_inputs(rng, func):
    base = rng.standard_normal((6, 10))
    base.flags.writeable = False
    for x in (base, base[::2, ::3], base.T, np.broadcast_to(base[0], (3, 10))):
        y = FUNCS[func][0](x, axis=-1)
        oracle.assert_close(y, FUNCS[func][1](x, (1,)), "float64", log_scale=FUNCS[func][2])


def test_python_scalars_and_lists_are_numpy():
    assert isinstance(smx.softmax([1.0, 2.0]), np.ndarray)
    assert isinstance(smx.logsumexp([[1, 2], [3, 4]]), np.ndarray)
    assert float(smx.softmax(3.0)) == 1.0
    assert smx.softmax([1, 2]).dtype == np.float64
