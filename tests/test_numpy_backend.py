"""NumPy-only behaviour: dtype spellings, read-only and strided views, Python inputs."""

from __future__ import annotations

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi.backends import fused
from softmax_multi.conformance import oracle
from softmax_multi.conformance.functions import FUNCTIONS as FUNCS

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


# --- the fused kernels (Numba) ------------------------------------------------------------------


SHAPES = [  # (shape, axis): each kind of work split the kernels have
    ((300, 5000), -1),  # rows, split over threads
    ((1, 300_000), -1),  # one long row, split within the row
    ((40_000, 7), -1),  # short rows, a chunk of rows at a time
    ((2000, 300), 0),  # the axis is not the last one: column tiles
    ((20, 30, 40), (1, 2)),  # adjacent axes
    ((50_000,), None),
]


def test_fused_kernels_are_in_use():
    assert fused.wait_ready() is not None, "Numba is installed by the test extra: the fused kernels must load"


@ALL_FUNCS
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=[str(s) for s, _ in SHAPES])
def test_fused_matches_oracle(rng, func, dtype, shape, axis):
    f, o, log = FUNCS[func]
    x = (rng.standard_normal(shape) * 8).astype(dtype)  # wide: x - max reaches -70
    flat = x.reshape(-1)
    flat[5] = -np.inf  # a -inf entry in a finite slice
    axes = tuple(range(x.ndim)) if axis is None else tuple(a % x.ndim for a in np.atleast_1d(axis))
    oracle.assert_close(f(x, axis=axis), o(x, axes), dtype, log_scale=log)


@ALL_FUNCS
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_special_slices(func, dtype):
    f, o, log = FUNCS[func]
    x = np.random.default_rng(3).standard_normal((64, 5000)).astype(dtype)
    x[1] = -np.inf
    x[2, 7] = np.inf
    x[3, 9] = np.nan
    x[4, 11:13] = np.inf
    x[5, 100] = np.finfo(dtype).max
    x[5, 200] = -np.finfo(dtype).max
    x[6, :4000] = -np.inf
    oracle.assert_close(f(x, axis=-1), o(x, (1,)), dtype, log_scale=log)
    oracle.assert_close(f(x.T.copy(), axis=0), o(x.T, (0,)), dtype, log_scale=log)


@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
def test_fused_and_ufunc_paths_agree(rng, monkeypatch, func):
    f, o, log = FUNCS[func]
    x = rng.standard_normal((100, 2000)).astype(np.float32)
    through_kernels = f(x)
    monkeypatch.setattr(fused, "_module", None)  # as without Numba
    monkeypatch.setattr(fused, "_off", True)
    plain = f(x)
    oracle.assert_close(through_kernels, o(x, (1,)), "float32", log_scale=log)
    oracle.assert_close(plain, o(x, (1,)), "float32", log_scale=log)


@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(7,), (300, 5000), (2000, 300)], ids=str)
def test_out_is_written_and_returned(rng, func, shape):
    f = FUNCS[func][0]
    x = rng.standard_normal(shape).astype(np.float32)
    x0 = x.copy()
    out = np.full_like(x, np.nan)
    assert f(x, axis=0, out=out) is out
    np.testing.assert_array_equal(out, f(x, axis=0))
    np.testing.assert_array_equal(x, x0)  # never the input
    assert f(x, axis=0, out=x) is x  # in place, when asked for
    np.testing.assert_array_equal(x, out)


def test_out_overlapping_x_and_strided_out(rng):
    buf = rng.standard_normal(300 * 5000 + 1).astype(np.float32)
    x = buf[1:].reshape(300, 5000)
    expected = smx.softmax(x.copy())
    smx.softmax(x, out=buf[:-1].reshape(300, 5000))  # overlaps x, shifted by one entry
    np.testing.assert_array_equal(buf[:-1].reshape(300, 5000), expected)
    out = np.empty((300, 10000), np.float32)[:, ::2]
    np.testing.assert_array_equal(smx.softmax(expected, out=out), smx.softmax(expected))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
@pytest.mark.parametrize(
    "shape,axis",
    [((300, 700), 1), ((40, 3000), 1), ((6, 20000), 1), ((3, 50000), 1), ((7, 300, 300), 1)],
    ids=["rows", "longer-rows", "long-rows", "shared-long-rows", "columns"],
)
def test_in_place_gives_the_bits_of_out_of_place(rng, func, dtype, shape, axis):
    """out=x reads each chunk, block or tile from a copy: the loops that read x and write out
    vectorise only where the two are apart. Before, in place ran their scalar versions: 3-6x
    slower, and float32 rows summed in another order (rows of 700: other bits)."""
    f = FUNCS[func][0]
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    x[0, 1] = -np.inf
    expected = f(x, axis=axis)
    assert f(x, axis=axis, out=x) is x
    np.testing.assert_array_equal(x, expected)


HUGE_ROW_SCRIPT = """
import numpy as np, softmax_multi as smx
from softmax_multi.backends import fused
fused.wait_ready()
n = 70_000_000  # past MAX_BLOCKS * BLOCK = 67 108 864: blocks longer than BLOCK
x = np.linspace(-3.0, 3.0, n)
h = np.longdouble(6.0) / (n - 1)  # x[i] = -3 + i h: a geometric sum of exps
exact = float(-3 + np.log(np.expm1(n * h)) - np.log(np.expm1(h)))
eps = np.finfo(np.float64).eps
assert abs(smx.logsumexp(x) - exact) <= 4 * eps * exact, (smx.logsumexp(x), exact)
y = smx.log_softmax(x)
assert np.abs(y - (x - exact)).max() <= 16 * eps * 25
x2 = x.reshape(1, n)  # the rows kernel on one thread, the shared long row on more
assert np.array_equal(smx.log_softmax(x2, axis=1)[0], y)
assert smx.log_softmax(x, out=x) is x and np.array_equal(x, y)
print("ok")
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_rows_of_more_than_max_blocks_blocks(threads):
    """A row of more than MAX_BLOCKS * BLOCK entries takes blocks longer than BLOCK, and the
    scratch for their exps must be as long (a 70e6-entry float64 logsumexp wrote past it, and
    the process aborted: "free(): invalid next size"). In a subprocess, for that."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "SOFTMAX_MULTI_NUM_THREADS": threads}
    run = subprocess.run([sys.executable, "-c", HUGE_ROW_SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


@pytest.mark.parametrize(
    "func,out",
    [("softmax", False), ("softmax", True), ("log_softmax", False), ("log_softmax", True), ("logsumexp", False)],
    ids=["softmax", "softmax-out=", "log_softmax", "log_softmax-out=", "logsumexp"],
)
def test_fused_peak_memory(rng, func, out):
    """Peak extra memory: the output and a few cache-sized blocks, never a copy of the input."""
    import tracemalloc

    f = FUNCS[func][0]
    x = rng.standard_normal((1024, 4096)).astype(np.float32)  # 16 MiB
    y = np.empty_like(x) if out else None
    kwargs = {"out": y} if out else {}
    f(x, axis=-1, **kwargs)  # warm: compiled, thread pool started
    tracemalloc.start()
    try:
        f(x, axis=-1, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    result = 0 if out or func == "logsumexp" else x.nbytes
    blocks = 2 * fused.THREADS * 256 * 1024  # scratch of each thread: under 256 KiB, twice over
    assert peak <= result + blocks, f"peak {peak} bytes; output {result}, allowed extra {blocks}"


def test_fused_threads_from_many_callers(rng):
    from concurrent.futures import ThreadPoolExecutor

    xs = [rng.standard_normal((200, 3000)).astype(np.float32) for _ in range(8)]
    expected = [oracle.softmax(x, (1,)) for x in xs]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(smx.softmax, xs * 4))
    for y, e in zip(results, expected * 4):
        oracle.assert_close(y, e, "float32")


FORK_SCRIPT = """
import multiprocessing, numpy as np, softmax_multi as smx

def child(x):
    return smx.softmax(x)

if __name__ == "__main__":
    x = np.random.default_rng(0).standard_normal((400, 5000)).astype(np.float32)
    mine = smx.softmax(x)  # the parent's thread pool is running now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        theirs = pool.apply_async(child, (x,)).get(timeout=60)
    assert np.array_equal(mine, theirs)
    print("ok")
"""


def test_fused_after_fork():
    """A forked child inherits the thread pool object but not its threads: it must start its own.
    (In a fresh interpreter with NumPy only: forking a process that runs JAX's threads is unsafe.)"""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


# The suite's own run sends every non-empty input through the kernels, on one thread below
# PARALLEL_MIN_SIZE; these runs send every input through the threads, and none through the kernels.
PATHS = {
    "kernels on threads": {"SOFTMAX_MULTI_PARALLEL_MIN_SIZE": "1", "SOFTMAX_MULTI_FUSED": "wait"},
    "ufuncs only": {"SOFTMAX_MULTI_FUSED": "off"},
}


@pytest.mark.parametrize("path", PATHS)
def test_conformance_suite_through_each_path(path):
    """The whole conformance suite on the NumPy backend, every input sent down one path."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, **PATHS[path])
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "softmax_multi.conformance.plugin",
            "--pyargs",
            "softmax_multi.conformance",
            "--smx-backend",
            "numpy",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout


LAYOUTS = [((2, 400_000), -1), ((300, 5000), -1), ((40_000, 7), -1), ((2000, 300), 0)]  # long rows, rows, short rows, columns


def _in_thread(f, timeout=120):
    """f() on a daemon thread: its result, or a test failure (not a hung run) if it blocks."""
    import threading

    box = {}

    def run():
        try:
            box["result"] = f()
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"no result after {timeout} s: the threads sharing the work are stuck"
    if "error" in box:
        raise box["error"]
    return box["result"]


@pytest.mark.parametrize("func", ["softmax", "log_softmax", "logsumexp"])
def test_shared_work_with_a_busy_team(rng, monkeypatch, func):
    """Each call asks for more threads than the team has, while 8 callers share it: the work must
    still finish (a caller that finds the team busy works alone), and give the same bits as alone."""
    from concurrent.futures import ThreadPoolExecutor

    f = FUNCS[func][0]
    xs = [(rng.standard_normal(shape) * 4).astype(np.float32) for shape, _ in LAYOUTS]
    alone = [f(x, axis=axis) for x, (_, axis) in zip(xs, LAYOUTS)]
    assert fused._team(fused.wait_ready()) is not None  # the team exists, with its THREADS - 1 threads
    monkeypatch.setattr(fused, "THREADS", 6)

    def crowd():
        with ThreadPoolExecutor(8) as callers:
            return list(callers.map(lambda i: f(xs[i % 4], axis=LAYOUTS[i % 4][1]), range(32)))

    for i, y in enumerate(_in_thread(crowd)):
        np.testing.assert_array_equal(y, alone[i % 4])


def test_a_failing_thread_fails_the_call(monkeypatch):
    """An error in a pool thread that holds part of a row reaches the caller; nobody waits forever."""
    import threading

    k = fused.wait_ready()
    real = k.long_row
    started = threading.Event()

    def long_row(func, row, res, state, step, *args):
        if not threading.current_thread().name.startswith("softmax-multi"):  # the caller
            started.wait(10)  # let the pool thread claim its first blocks
            return real(func, row, res, state, step, *args)
        k._claim(state, k.CLAIMED, step, len(args[1]))  # args: block, ms, ...: claims blocks, never does them
        started.set()
        raise ValueError("boom in a pool thread")

    monkeypatch.setattr(fused, "THREADS", 2)
    monkeypatch.setattr(k, "long_row", long_row)
    x = np.random.default_rng(0).standard_normal(500_000)
    with pytest.raises(ValueError, match="boom in a pool thread"):
        _in_thread(lambda: smx.softmax(x), timeout=60)


def _plain_exps():
    """A loop of the kernels' exp_diff alone, compiled with its own fast-math flags."""
    import numba

    from softmax_multi.backends import _exp

    @numba.njit(fastmath=_exp.EXP_FLAGS)
    def exps(x, m, out):
        for j in range(x.shape[0]):
            out[j] = _exp.exp_diff(x[j], m)

    return exps


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_exp_is_within_one_and_a_quarter_ulp(dtype):
    """The kernels' exp(x - m), for x - m over its whole range, against float64/long double exp:
    at most 1.25 ulp where the result is normal; 0 below the range, at x = -inf; NaN at NaN."""
    exps = _plain_exps()
    rng = np.random.default_rng(11)
    lowest = -104.0 if dtype == "float32" else -746.0
    wide = np.longdouble if dtype == "float64" else np.float64
    worst = 0.0
    for shift in (0.0, 3.7, -20.0, 1000.5, 1e-3, 2.0**60):
        m = np.dtype(dtype).type(shift)
        x = np.minimum((wide(m) + rng.random(2_000_000) * lowest).astype(dtype), m)
        y = np.empty_like(x)
        exps(x, m, y)
        exact = np.exp(x.astype(wide) - wide(m))
        normal = exact > np.finfo(dtype).tiny
        ulp = np.spacing(exact[normal].astype(dtype)).astype(wide)
        worst = max(worst, float(np.max(np.abs(y[normal] - exact[normal]) / ulp)))
        assert np.all(y[exact < np.finfo(dtype).smallest_subnormal / 2] == 0)
    assert worst <= 1.25, worst
    special = np.array([-np.inf, np.nan, lowest * 2, -np.finfo(dtype).max], dtype)
    y = np.empty_like(special)
    exps(special, np.dtype(dtype).type(1.0), y)
    assert y[0] == 0 and np.isnan(y[1]) and y[2] == 0 and y[3] == 0
    one = np.empty(1, dtype)
    exps(np.array([3.25], dtype), np.dtype(dtype).type(3.25), one)
    assert one[0] == 1.0  # exactly: the kernels count the max's entries by it


def test_float32_sums_keep_exp_diff_bits(rng):
    """float32 exps are summed in the pass that computes them, a loop compiled to reassociate its
    sums: each exp must still be exp_diff's to the bit (reassociation would undo the exact
    x - m it carries), for a block and for a chunk of rows, in every run."""
    k = fused.wait_ready()
    x = (rng.standard_normal((3, 2 * k.RUN + 77)) * 20).astype(np.float32)
    ms = x.max(axis=1)
    want = np.empty_like(x)
    exps = _plain_exps()
    for i in range(3):
        exps(x[i], ms[i], want[i])
    block = np.empty_like(x[0])
    k._exp_sums32(k.SOFTMAX, x[0], ms[0], block)
    rows = np.empty_like(x)
    k._chunk_exp_sums32(k.SOFTMAX, x, ms.astype(np.float64), rows, np.empty(3), np.empty(3))
    assert np.array_equal(block.view(np.int32), want[0].view(np.int32))
    assert np.array_equal(rows.view(np.int32), want.view(np.int32))


@pytest.mark.parametrize("n", [100, 255, 300, 1023, 2048, 8192, 100_000])
def test_float32_sums_of_many_equal_terms(n):
    """One 0 and n - 1 equal entries in float32, the worst case for a sum taken in order: the
    kernels sum float32 exps in float32 partial sums, short rows in a pass of their own, longer
    ones in runs of RUN entries (measured: 3.8 eps at worst)."""
    fused.wait_ready()
    for c in (-0.1, -3.0, -20.0):
        x = np.full((2, n), c, np.float32)
        x[:, 17] = 0.0
        for f, o, log in FUNCS.values():
            oracle.assert_close(f(x, axis=-1), o(x, (1,)), "float32", log_scale=log)


def test_the_kernels_load_in_the_background_while_ufuncs_serve():
    """A fresh process: the first call does not wait for Numba (ufunc path, kernels loading in a
    background thread); once they are ready, the same call runs them, with the same answer."""
    import subprocess
    import sys

    code = """
import os, time, sys
os.environ.pop("SOFTMAX_MULTI_FUSED", None)
import numpy as np, softmax_multi as smx
from softmax_multi.backends import fused
x = np.random.default_rng(0).standard_normal((1000, 1000)).astype(np.float32)
first = smx.softmax(x)
assert not fused.ready(), "the first call waited for the kernels"
fused.wait_ready(120)
assert fused.ready()
again = smx.softmax(x)
err = np.abs(first.astype(np.float64) - again).max()
assert err < 1e-6, err
print("ok")
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "SOFTMAX_MULTI_FUSED"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr[-3000:]


@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize("order", ["big", "little"])
def test_any_byte_order_through_the_kernels(func, order, rng):
    """(300, 1000) big-endian data, as read from FITS or HDF5: large enough for the fused kernels."""
    f, o, log = FUNCS[func]
    x = (rng.standard_normal((300, 1000)) * 3).astype(">f4" if order == "big" else "<f4")
    y = f(x, axis=-1)
    assert y.dtype == np.float32 and y.dtype.isnative
    oracle.assert_close(y, o(x.astype(np.float32), (1,)), "float32", log_scale=log)


def test_numpy_bfloat16_is_served_like_float16(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = (rng.standard_normal((4, 3000)) * 2).astype(ml_dtypes.bfloat16)
    for name, (f, o, log) in FUNCS.items():
        y = f(x, axis=-1)
        assert y.dtype == x.dtype, name
        expected = o(x.astype(np.float32), (1,)).astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)
        oracle.assert_close(y.astype(np.float32), expected, "bfloat16", log_scale=log, ulps=oracle.ROUNDED_TOLERANCE_ULPS)
    assert smx.softmax(np.zeros(3, np.float32), dtype="bfloat16").dtype == x.dtype
    assert smx.softmax(np.zeros(3, np.float32), dtype=ml_dtypes.bfloat16).dtype == x.dtype


@pytest.mark.parametrize("n", [5000, 8192, 20000])
def test_float64_sums_of_many_equal_small_terms(n):
    """One 0 and n - 1 entries of -45 in float64: the logsumexp, 8191 * exp(-45) for n = 8192, is
    judged by its relative error. A chunk's rows once summed float64 in one plain loop (29 eps)."""
    fused.wait_ready()
    x = np.full((2, n), -45.0)
    x[:, 17] = 0.0
    for func in ("logsumexp", "log_softmax"):
        got = FUNCS[func].ours(x, axis=-1)
        want = FUNCS[func].truth(x, (1,))
        if func == "log_softmax":
            got, want = got[:, 17], want[:, 17]
        oracle.assert_close(got, want, "float64", log_scale=False)
