"""Program transforms a backend declares (jit, vmap, compile; grad, autograd) and its other devices."""

from __future__ import annotations

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi.conformance import oracle
from softmax_multi.conformance.plugin import Backend
from softmax_multi.registry import GRADIENT_TRANSFORMS

FUNCS = {
    "softmax": lambda x: smx.softmax(x, axis=-1),
    "log_softmax": lambda x: smx.log_softmax(x, axis=-1),
    "logsumexp": lambda x: smx.logsumexp(x, axis=-1),
}


def oracle_gradient(func: str, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The gradient of sum(w * func(x)) over the last axis, from the long-double softmax."""
    y = oracle.softmax(x, (x.ndim - 1,)).astype(np.float64)
    if func == "softmax":
        return y * (w - (w * y).sum(-1, keepdims=True))
    if func == "log_softmax":
        return w - y * w.sum(-1, keepdims=True)
    return y * w[..., None]


@pytest.mark.parametrize("func", list(FUNCS))
def test_transform_equals_eager(backend, transform_name, func, rng, measured):
    x_np = (rng.standard_normal((4, 700)) * 3).astype(np.float32)
    x = backend.asarray(x_np)
    f = FUNCS[func]
    transformed = backend.spec.transforms[transform_name](f)
    if transform_name in GRADIENT_TRANSFORMS:
        w_np = rng.standard_normal((4,) if func == "logsumexp" else (4, 700)).astype(np.float32)
        got = backend.numpy(transformed(x, backend.asarray(w_np)))
        expected = oracle_gradient(func, x_np, w_np.astype(np.float64))
        err = measured(float(np.abs(got - expected).max() / np.abs(w_np).max() / np.finfo(np.float32).eps))
        assert err <= oracle.GRADIENT_TOLERANCE_ULPS, f"gradient off by {err:.1f} eps"
    else:
        got = backend.numpy(transformed(x))
        err = measured(oracle.ulp_error(got, backend.numpy(f(x)), "float32", log_scale=func != "softmax"))
        assert err <= oracle.TOLERANCE_ULPS["float32"], f"{transform_name} differs from eager by {err:.1f} eps"


@pytest.mark.parametrize("func", list(FUNCS))
def test_device_keeps_results_and_matches_cpu(backend, device, func, rng):
    x_np = (rng.standard_normal((8, 5000)) * 3).astype(np.float32)
    on_device = Backend(backend.spec, device)
    x = on_device.asarray(x_np)
    y = FUNCS[func](x)
    assert str(getattr(y, "device", device)) == str(getattr(x, "device", device))
    oracle.assert_close(on_device.numpy(y), getattr(oracle, func)(x_np, (1,)), "float32", log_scale=func != "softmax")
