"""The PyTorch backend: devices, autograd, torch.compile, low-precision dtypes, and CUDA."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import softmax_multi as smx
from softmax_multi._args import dtype_name
from softmax_multi.conformance import oracle

FUNCS = [smx.softmax, smx.log_softmax, smx.logsumexp]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("f", FUNCS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [6, 5000])  # native kernel alone, and with its normaliser corrected
def test_result_stays_on_the_device_and_matches_oracle(f, device, n, rng):
    x_np = (rng.standard_normal((3, n)) * 3).astype(np.float32)
    w_np = rng.random((3, n)) < 0.5
    x = torch.from_numpy(x_np).to(device)
    for kwargs, w in [({}, None), ({"where": torch.from_numpy(w_np).to(device)}, w_np)]:
        y = f(x, axis=-1, **kwargs)
        assert y.device == x.device and y.dtype == torch.float32
        expected = getattr(oracle, f.__name__)(x_np, (1,), w)
        oracle.assert_close(y.cpu().numpy(), expected, "float32", log_scale=f is not smx.softmax)


@pytest.mark.parametrize("f", FUNCS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n", [6, 700])
def test_gradcheck_float64(f, masked, n, rng):
    x = torch.tensor(rng.standard_normal((3, n)), requires_grad=True)
    w = torch.from_numpy(rng.random((3, n)) < 0.6) if masked else None
    if masked:
        w[1] = False
        # a fully masked logsumexp slice is the constant -inf; finite differences cannot see it
        g = (
            (lambda x: smx.logsumexp(x, axis=-1, where=w)[[0, 2]])
            if f is smx.logsumexp
            else (lambda x: torch.nan_to_num(f(x, axis=-1, where=w), neginf=0.0))
        )
    else:
        g = lambda x: f(x, axis=-1)
    assert torch.autograd.gradcheck(g, (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("f", FUNCS, ids=lambda f: f.__name__)
def test_masked_gradients_hold_no_nan(f, data):
    x_np, w_np = data
    x = torch.tensor(np.where(w_np, x_np, np.nan), requires_grad=True)  # masked entries hold NaN
    y = f(x, axis=-1, where=torch.from_numpy(w_np))
    (torch.where(torch.isfinite(y), y, 0.0) * torch.arange(y.numel()).reshape(y.shape)).sum().backward()
    assert not torch.isnan(x.grad).any()
    assert (x.grad[torch.from_numpy(~w_np)] == 0).all()


def test_gradients_agree_with_jax(data):
    import jax
    import jax.numpy as jnp

    x_np = data[0]
    weights = np.arange(x_np.size, dtype=np.float64).reshape(x_np.shape)
    for f in (smx.softmax, smx.log_softmax):
        xt = torch.tensor(x_np, requires_grad=True)
        (f(xt) * torch.from_numpy(weights)).sum().backward()
        gj = jax.grad(lambda x: jnp.sum(f(x) * weights))(jnp.asarray(x_np))
        np.testing.assert_allclose(xt.grad.numpy(), np.asarray(gj), rtol=1e-12, atol=1e-12)


def _compiled_cases(x, w):
    return {
        "softmax": lambda x: smx.softmax(x) * 2,
        "log_softmax_axis0": lambda x: smx.log_softmax(x, axis=0),
        "where_tuple_axis": lambda x: smx.softmax(x, axis=(0, 1), where=w),
        "logsumexp_keepdims": lambda x: smx.logsumexp(x, axis=1, keepdims=True, where=w),
        "dtype": lambda x: smx.log_softmax(x, dtype=torch.float64),
        "long_rows": lambda x: smx.softmax(x.repeat(1, 200)),  # the corrected path
    }


@pytest.mark.parametrize("case", list(_compiled_cases(None, None)))
def test_torch_compile_has_no_graph_break_and_equals_eager(case, data):
    x = torch.tensor(data[0], dtype=torch.float32)
    w = torch.from_numpy(data[1])
    f = _compiled_cases(x, w)[case]
    smx.get_backend(x)  # the registry has seen tensors once (see README: torch.compile)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(f)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x), equal_nan=True, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("f", FUNCS, ids=lambda f: f.__name__)
def test_low_precision_accumulates_in_float32(f, dtype, device, rng):
    x = (torch.tensor(rng.standard_normal((2, 3000)) * 2, dtype=torch.float32)).to(dtype).to(device)
    y = f(x, axis=-1)
    assert y.dtype == dtype and y.device == x.device
    expected = getattr(oracle, f.__name__)(x.float().cpu().numpy(), (1,))
    rounded = torch.from_numpy(np.asarray(expected, dtype=np.float32)).to(dtype).float().numpy()
    oracle.assert_close(
        y.float().cpu().numpy(), rounded, dtype_name(dtype), log_scale=f is not smx.softmax, ulps=oracle.ROUNDED_TOLERANCE_ULPS
    )


@pytest.mark.parametrize("device", DEVICES)
def test_dtype_argument(device):
    x = torch.arange(6, device=device).reshape(2, 3)
    assert smx.softmax(x).dtype == torch.float32  # torch's default float
    assert smx.softmax(x, dtype=torch.float64).dtype == torch.float64
    assert smx.softmax(x, dtype="float16").dtype == torch.float16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_path_does_not_synchronise():
    x = torch.randn(64, 5000, device="cuda")
    w = torch.rand(64, 5000, device="cuda") > 0.5
    smx.softmax(x, where=w)  # warm the plan
    torch.cuda.set_sync_debug_mode("error")
    try:
        for f in FUNCS:
            f(x, axis=-1)
            f(x, axis=-1, where=w)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("device", DEVICES)
def test_linear_loss_stays_on_the_device(device, reduction, rng):
    """The linear loss's tiles and gradients are made on h's device: the same loss and gradients
    as the naive loss there, with a bias and whole rows in blocks of 40 rows."""
    h = torch.tensor(rng.standard_normal((100, 16)), dtype=torch.float32, device=device, requires_grad=True)
    w = torch.tensor(rng.standard_normal((50, 16)) * 0.3, dtype=torch.float32, device=device, requires_grad=True)
    b = torch.tensor(rng.standard_normal(50), dtype=torch.float32, device=device, requires_grad=True)
    y = torch.from_numpy(rng.integers(0, 50, 100)).to(device)
    ours = smx.linear_cross_entropy(h, w, y, bias=b, reduction=reduction, chunk_size=40 * 50)
    naive = torch.nn.functional.cross_entropy(h @ w.T + b, y, reduction=reduction)
    assert ours.device == h.device
    g = torch.rand(ours.shape, device=device)
    for got, expected in zip(torch.autograd.grad(ours, (h, w, b), g), torch.autograd.grad(naive, (h, w, b), g)):
        assert got.device == h.device
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, naive, rtol=1e-5, atol=1e-5)


def test_cpu_tensors_run_the_fused_kernels_on_their_memory():
    """From FUSED_CPU_MIN_SIZE entries (and any size past NATIVE_CPU_ROW_LIMIT), CPU tensors run
    the fused kernels on their own memory: the NumPy backend's numbers, returned as a tensor."""
    from softmax_multi.backends import torch_backend

    for shape in [(64, torch_backend.FUSED_CPU_MIN_SIZE // 64), (2, 5000)]:
        x = torch.randn(*shape) * 3
        for f in (smx.softmax, smx.log_softmax):
            y = f(x)
            assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and y.device == x.device
            np.testing.assert_array_equal(y.numpy(), f(x.numpy()))
            out = torch.empty_like(x)
            assert f(x, out=out) is out
            np.testing.assert_array_equal(out.numpy(), y.numpy())


@pytest.mark.skipif(sys.platform != "linux", reason="finds PyTorch's OpenMP runtime in /proc/self/maps")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_run_on_torchs_openmp_threads(dtype, rng, monkeypatch):
    """With PyTorch imported, the kernels' row work runs as tasks on PyTorch's OpenMP team (all
    of its threads take part), with the same bits as on the kernels' own team, torch's thread
    setting respected."""
    from softmax_multi.backends import fused

    k = fused.wait_ready()
    fused._openmp()  # starts loading the tasks, if no call has yet
    fused._omp_loading.join(120)
    omp = fused._openmp()
    assert omp is not None and omp.max_threads() == torch.get_num_threads()
    x = (rng.standard_normal((300, 700)) * 5).astype(dtype)
    x[7] = -np.inf
    x[8, 3] = np.nan
    joined = []
    real = fused._run_task
    monkeypatch.setattr(fused, "_run_task", lambda *args, **kw: joined.append(real(*args, **kw)) or joined[-1])
    ws = rng.random(700)
    ws[::5] = np.nan
    on_torch = [fused.run(func, x, (1,), parallel_min_size=1) for func in (k.SOFTMAX, k.LOG_SOFTMAX, k.LOGSUMEXP)]
    on_torch += [fused.row_stats(x), fused.row_stats(x, ws)]
    assert joined == [min(fused.THREADS, torch.get_num_threads())] * 5
    np.testing.assert_array_equal(smx.softmax(torch.from_numpy(x)).numpy(), on_torch[0])  # a tensor's call too
    assert len(joined) == 6
    monkeypatch.setattr(fused, "_openmp", lambda: None)
    on_ours = [fused.run(func, x, (1,), parallel_min_size=1) for func in (k.SOFTMAX, k.LOG_SOFTMAX, k.LOGSUMEXP)]
    on_ours += [fused.row_stats(x), fused.row_stats(x, ws)]
    assert len(joined) == 6
    for a, b in zip(on_torch, on_ours):
        np.testing.assert_array_equal(a, b)
    oracle.assert_close(on_torch[0], oracle.softmax(x, (1,)), np.dtype(dtype).name)
    oracle.assert_close(on_torch[1], oracle.log_softmax(x, (1,)), np.dtype(dtype).name, log_scale=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(fused, "_openmp", lambda: omp)
        np.testing.assert_array_equal(fused.run(k.SOFTMAX, x, (1,), parallel_min_size=1), on_ours[0])
        assert joined[-1] == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(sys.platform != "linux", reason="finds PyTorch's OpenMP runtime in /proc/self/maps")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_tensors_on_torchs_threads_skip_numpy_views(name, dtype, monkeypatch):
    """On PyTorch's OpenMP threads, a CPU tensor's rows run from its address, without NumPy views
    (fused.rows_at): into a new tensor, into out=, in place; an out= that overlaps x without
    being x is computed aside, through NumPy, as before. The same bits as the NumPy backend's."""
    from softmax_multi.backends import fused

    fused.wait_ready()
    fused._openmp()  # starts loading the tasks, if no call has yet
    fused._omp_loading.join(120)
    assert fused.openmp_threads() == min(fused.THREADS, torch.get_num_threads()) > 1
    f = getattr(smx, name)
    buf = torch.randn(300 * 700 + 1, dtype=dtype) * 5
    x = buf[1:].view(300, 700)
    x[7] = -torch.inf
    x[8, 3] = torch.nan
    x0 = x.clone()
    expected = f(x.numpy())
    twice = f(expected)
    real_run = fused.run
    with monkeypatch.context() as m:
        m.setattr(fused, "run", lambda *args, **kw: pytest.fail("went through NumPy views"))
        np.testing.assert_array_equal(f(x).numpy(), expected)
        out = torch.full_like(x, torch.nan)
        assert f(x, out=out) is out
        np.testing.assert_array_equal(out.numpy(), expected)
        torch.testing.assert_close(x, x0, equal_nan=True, rtol=0, atol=0)  # never the input
        assert f(out, out=out) is out  # in place
        np.testing.assert_array_equal(out.numpy(), twice)
    used = []
    monkeypatch.setattr(fused, "run", lambda *args, **kw: used.append(1) or real_run(*args, **kw))
    shifted = buf[:-1].view(300, 700)  # overlaps x, one entry before it
    assert f(x, out=shifted) is shifted and used
    np.testing.assert_array_equal(shifted.numpy(), expected)


FORK_SCRIPT = """
import multiprocessing, numpy as np, torch, softmax_multi as smx
from softmax_multi.backends import fused

def child(x):
    return smx.softmax(x), fused.openmp_threads()

if __name__ == "__main__":
    x = np.random.default_rng(0).standard_normal((400, 5000)).astype(np.float32)
    fused.wait_ready()
    mine = smx.softmax(x)
    assert fused.openmp_threads() == torch.get_num_threads() > 1  # on torch's threads here
    torch.softmax(torch.from_numpy(x), -1)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        theirs, threads = pool.apply_async(child, (x,)).get(timeout=60)
    assert np.array_equal(mine, theirs) and threads is None
    print("ok")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork, and PyTorch's OpenMP runtime found in /proc/self/maps")
def test_a_forked_child_leaves_torchs_openmp_threads():
    """A child forked after the kernels ran on PyTorch's OpenMP threads computes on the kernels'
    own team: there, the runtime still counts its parent's threads and would wait for them."""
    import os
    import subprocess

    # distributed's LocalCluster (tests/test_dask.py) leaves OMP_NUM_THREADS=1 in this process's
    # environment, which would give the child's PyTorch one thread
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["SOFTMAX_MULTI_FUSED"] = "wait"
    run = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_cpu_tensors_under_autograd_run_the_kernels_forward_and_torch_backward(name, rng):
    """The fused kernels forward (accurate), torch's own backward; gradcheck in float64."""
    x = torch.tensor(rng.standard_normal((64, 2048)) * 3, requires_grad=True)
    y = getattr(smx, name)(x)
    assert type(y.grad_fn).__name__.startswith("FusedFunction")
    with torch.no_grad():
        np.testing.assert_array_equal(y.detach().numpy(), getattr(smx, name)(x.detach().numpy()))
    g = torch.tensor(rng.standard_normal((64, 2048)))
    (got,) = torch.autograd.grad(y, x, g)
    (want,) = torch.autograd.grad(getattr(torch, name)(x, -1), x, g)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    small = torch.tensor(rng.standard_normal((3, 700)), requires_grad=True)
    assert torch.autograd.gradcheck(getattr(smx, name), (small,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_out_on_long_rows_that_torch_must_trace(name):
    """Under torch.compile the kernels cannot run: torch's softmax with the row fix, the reference
    for log_softmax; accurate either way."""
    from softmax_multi import registry
    from softmax_multi.conformance import oracle

    registry.list_backends()
    x = torch.randn(4, 100_000) * 3
    f = torch.compile(getattr(smx, name), fullgraph=True)
    oracle.assert_close(f(x).numpy(), getattr(oracle, name)(x.numpy(), (1,)), "float32", log_scale=name == "log_softmax")


@pytest.mark.parametrize(
    "call",
    [
        lambda x: smx.softmax(x, -1, where=torch.ones(5, 0, 0, dtype=torch.bool)),
        lambda x: smx.softmax(x, (1, 2)),
        lambda x: smx.log_softmax(x, -1),
        lambda x: smx.logsumexp(x, -1),
        lambda x: smx.logsumexp(x, -1, return_sign=True)[0],
    ],
    ids=["softmax-where", "softmax-tuple-axis", "log_softmax", "logsumexp", "logsumexp-sign"],
)
def test_empty_slices_keep_autograd(call):
    """As torch.masked.softmax does: an empty slice's result is still part of the graph."""
    x = torch.zeros(5, 0, 0, requires_grad=True)
    y = call(x)
    assert y.grad_fn is not None
    (g,) = torch.autograd.grad(y.sum(), x, allow_unused=False)
    assert g.shape == x.shape
    z = torch.zeros(0, requires_grad=True)
    assert smx.logsumexp(z, 0).grad_fn is not None


def test_logsumexp_weight_gradients(rng):
    """d/db of logsumexp: exp(x - value) times the sign; 0 where b == 0 and x is not finite;
    d/dx is 0 where b == 0. gradcheck in float64 on the smooth part."""
    x = torch.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    b = torch.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: smx.logsumexp(x, -1, b=b, return_sign=True)[0], (x, b), eps=1e-6, atol=1e-7)
    x2 = torch.tensor([[1.0, np.inf, 2.0, -np.inf, 0.5]], dtype=torch.float64, requires_grad=True)
    b2 = torch.tensor([[2.0, 0.0, -1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    value, sign = smx.logsumexp(x2, -1, b=b2, return_sign=True)
    gx, gb = torch.autograd.grad(value.sum(), (x2, b2))
    expected_b = (sign[:, None] * torch.exp(x2.detach() - value.detach()[:, None])).where(torch.isfinite(x2), 0.0)
    torch.testing.assert_close(gb, expected_b)
    assert gb[0, 4] != 0  # b = 0 at a finite x: the true derivative, not 0
    assert gx[0, 1] == 0 and gx[0, 3] == 0 and gx[0, 4] == 0 and not torch.isnan(gx).any()


def test_weighted_and_complex_logsumexp_compile_without_graph_breaks(rng):
    from softmax_multi import registry

    registry.list_backends()
    x = torch.tensor(rng.standard_normal((4, 6)))
    b = torch.tensor(rng.standard_normal((4, 6)))
    f = torch.compile(lambda x, b: smx.logsumexp(x, -1, b=b, return_sign=True), fullgraph=True)
    got = f(x, b)
    want = smx.logsumexp(x, -1, b=b, return_sign=True)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    z = torch.complex(x, b)
    g = torch.compile(lambda z: smx.logsumexp(z, -1), fullgraph=True)
    torch.testing.assert_close(g(z), smx.logsumexp(z, -1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: benchmarks/gpu_check.sh checks it instead")
def test_gpu_check_says_when_there_is_no_gpu():
    """Without a CUDA GPU the GPU check script checks nothing and says so, with its own exit status."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(__file__))
    run = subprocess.run(
        ["bash", os.path.join(root, "benchmarks", "gpu_check.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert run.returncode == 3, run.stdout + run.stderr
    assert "no CUDA GPU found" in run.stdout and "nothing checked" in run.stdout
