"""float32 accuracy at every row length up to 1e7, on every backend (where PyTorch's own kernels drift)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi.conformance import oracle

SLOW = pytest.mark.slow
LENGTHS = [1_000, 4_096, 32_000, 100_000, pytest.param(1_000_000, marks=SLOW), pytest.param(10_000_000, marks=SLOW)]


@functools.cache
def case(n: int):
    rows = max(1, 2_000_000 // n)  # enough rows to see the worst case of short lengths
    x = (np.random.default_rng(n).standard_normal((rows, n)) * 3).astype(np.float32)
    return x, oracle.softmax(x, (1,)), oracle.log_softmax(x, (1,))


@pytest.mark.parametrize("n", LENGTHS)
def test_float32_long_rows(backend, n, measured):
    x_np, soft, log_soft = case(n)
    x = backend.asarray(x_np)
    y = backend.numpy(smx.softmax(x, axis=-1))
    oracle.assert_close(y, soft, "float32", record=measured)
    y = backend.numpy(smx.log_softmax(x, axis=-1))
    oracle.assert_close(y, log_soft, "float32", log_scale=True, record=measured)
