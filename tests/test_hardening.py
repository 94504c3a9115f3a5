"""Faulty plugins, sixteen threads on mixed backends from a cold registry, and no leaks."""

from __future__ import annotations

import gc
import threading
import tracemalloc

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi import registry
from softmax_multi.conformance import oracle

from .conftest import BACKENDS, Backend, write_distribution


def test_a_plugin_whose_softmax_raises_is_named_and_isolated(plugin_path):
    write_distribution(plugin_path, "exploding-plugin", {"exploding": "odd_plugins:exploding"})
    import fakearr

    for where in (None, fakearr.FakeArray(np.ones(3, bool))):
        with pytest.raises(RuntimeError, match="kernel exploded") as info:
            smx.softmax(fakearr.FakeArray(np.zeros(3)), where=where)
        assert "raised in softmax of the softmax-multi backend 'exploding'" in info.value.__notes__
    # the registry is consistent and every other function and backend keeps working
    assert {r.name: r.status for r in smx.list_backends()}["exploding"] == "ready"
    lse = smx.logsumexp(fakearr.FakeArray(np.zeros(4)))
    assert float(lse.data) == pytest.approx(np.log(4))
    np.testing.assert_allclose(smx.softmax(np.zeros(2)), [0.5, 0.5])


def test_sixteen_threads_mixed_backends_cold_registry():
    import array_api_strict as xps
    import jax.numpy as jnp
    import torch

    x_np = np.random.default_rng(3).standard_normal((8, 50))
    inputs = [np.array(x_np), xps.asarray(x_np), jnp.asarray(x_np), torch.from_numpy(x_np.copy())]
    funcs = [smx.softmax, smx.log_softmax, smx.logsumexp]
    expected = {f.__name__: getattr(oracle, f.__name__)(x_np, (1,)) for f in funcs}
    registry.reset()
    barrier = threading.Barrier(16)
    errors: list = []

    def work(i: int) -> None:
        x = inputs[i % 4]
        barrier.wait()
        try:
            for k in range(30):
                f = funcs[(i + k) % 3]
                y = np.asarray(Backend.named(BACKENDS[i % 4]).numpy(f(x, axis=-1)))
                oracle.assert_close(y, expected[f.__name__], "float64", log_scale=f is not smx.softmax)
        except BaseException as err:  # collected and asserted below
            errors.append((i, err))

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlock: a thread did not finish in 120 s"
    assert not errors, errors[:3]


# Every call on a Dask array builds a task graph (about 4 ms here): 3 000 calls there. A call on
# array-api-strict's checked arrays takes about 1.2 ms (100 000 of them took 137 s of CI): 20 000
# there (the tracemalloc bound below then allows 32 bytes a call over 2 000 of them, as before).
LEAK_CALLS = {"dask": 3_000, "array_api_strict": 20_000}


@pytest.mark.parametrize("name", BACKENDS)
def test_no_leak_over_100_000_calls(name):
    import psutil

    b = Backend.named(name)
    x = b.asarray(np.linspace(-1.0, 1.0, 8))
    w = b.asarray(np.arange(8) % 3 != 0)
    calls = [lambda: smx.softmax(x), lambda: smx.log_softmax(x, where=w), lambda: smx.logsumexp(x)]

    def run(n: int) -> None:
        for i in range(n):
            calls[i % 3]()

    calls_total = LEAK_CALLS.get(name, 100_000)
    run(min(3_000, calls_total // 4))  # warm caches and allocators
    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    run(calls_total)
    gc.collect()
    rss_after = process.memory_info().rss
    # tracemalloc slows every allocation down, so it watches a further tenth of the calls
    tracemalloc.start()
    run(min(1_000, calls_total // 10))
    gc.collect()
    traced_before = tracemalloc.get_traced_memory()[0]
    run(calls_total // 10)
    gc.collect()
    traced_after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert traced_after - traced_before < 64 * 1024, f"Python memory grew {traced_after - traced_before} bytes"
    assert rss_after - rss_before < 32 * 2**20, f"RSS grew {(rss_after - rss_before) / 2**20:.1f} MiB"


def test_array_api_strict_device_without_64_bit_dtypes(rng):
    """array-api-strict's 'no_x64' device has no float64 and no int64 (a sum's default integer
    dtype): every function and loss computes there, in float32, and agrees with the oracle."""
    import array_api_strict as xp

    device = xp.Device("no_x64")
    x_np = (rng.standard_normal((3, 40)) * 3).astype(np.float32)
    x = xp.asarray(x_np, device=device)
    y_np = rng.integers(0, 40, 3).astype(np.int32)
    y = xp.asarray(y_np, device=device)
    w_np = (rng.standard_normal((40, 5)) * 0.5).astype(np.float32)
    h_np = (rng.standard_normal((3, 5))).astype(np.float32)
    results = {
        "softmax": (smx.softmax(x), oracle.softmax(x_np, (1,))),
        "log_softmax": (smx.log_softmax(x), oracle.log_softmax(x_np, (1,))),
        "logsumexp": (smx.logsumexp(x, axis=1), oracle.logsumexp(x_np, (1,))),
        "cross_entropy": (smx.cross_entropy(x, y, label_smoothing=0.1), oracle.cross_entropy(x_np, y_np, label_smoothing=0.1)),
        "linear_cross_entropy": (
            smx.linear_cross_entropy(xp.asarray(h_np, device=device), xp.asarray(w_np, device=device), y),
            oracle.cross_entropy(h_np.astype(np.longdouble) @ w_np.astype(np.longdouble).T, y_np),
        ),
    }
    for name, (got, expected) in results.items():
        assert got.device == device, name
        on_cpu = np.asarray(got.to_device(xp.Device("CPU_DEVICE")))  # NumPy cannot read the other device
        oracle.assert_close(on_cpu, expected, "float32", log_scale=name != "softmax")
