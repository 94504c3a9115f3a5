"""The Dask backend: lazy, every input block read twice (once), bounded memory, LocalCluster."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections import Counter

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback

import softmax_multi as smx
from softmax_multi.conformance import oracle

FUNCS = {"softmax": (smx.softmax, oracle.softmax, False), "log_softmax": (smx.log_softmax, oracle.log_softmax, True)}


class Computes(Callback):
    """Counts how many times anything is computed while it is active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def _start(self, dsk):
        self.count += 1


@pytest.mark.parametrize("func", ["softmax", "log_softmax", "logsumexp"])
def test_lazy_with_every_argument(func):
    f = getattr(smx, func)
    x = da.random.default_rng(0).standard_normal((60, 80), chunks=(20, 20))
    where = da.random.default_rng(1).random((60, 80), chunks=(20, 20)) < 0.7
    with Computes() as c:
        results = [
            f(x),
            f(x, axis=0),
            f(x, axis=(0, 1)),
            f(x, axis=None),
            f(x, where=where),
            f(x, dtype="float32"),
            f(x.astype("float32"), axis=1, where=where[0]),
        ]
        if func == "logsumexp":
            results.append(f(x, axis=1, keepdims=True))
    assert c.count == 0, "a hidden compute()"
    assert all(isinstance(r, da.Array) for r in results)


def _counting(shape, chunks, counter, lock):
    """A lazy float32 input whose every block records each time it is produced."""

    def block(block_info=None):
        loc = tuple(block_info[None]["chunk-location"])
        with lock:
            counter[loc] += 1
        (r0, _), (c0, _) = block_info[None]["array-location"]
        shape = block_info[None]["chunk-shape"]
        rows = np.arange(r0, r0 + shape[0], dtype=np.float32)[:, None]
        cols = np.arange(c0, c0 + shape[1], dtype=np.float32)[None, :]
        return np.sin(rows * 0.7 + cols * 0.01).astype(np.float32) * 4

    return da.map_blocks(block, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))


@pytest.mark.parametrize("func", ["softmax", "log_softmax", "logsumexp"])
def test_each_block_is_read_twice_across_blocks_and_once_within(func):
    f = getattr(smx, func)
    lock = threading.Lock()
    across, within = Counter(), Counter()
    x = _counting((40, 400), ((10,) * 4, (50,) * 8), across, lock)
    y = _counting((40, 400), ((10,) * 4, (400,)), within, lock)
    reference = _counting((40, 400), ((10,) * 4, (50,) * 8), Counter(), lock).compute()
    got = f(x, axis=1).compute()
    assert set(across.values()) == ({1} if func == "logsumexp" else {2}) and len(across) == 32
    f(y, axis=1).compute()
    assert set(within.values()) == {1} and len(within) == 4
    expected = getattr(oracle, func)(reference, (1,))
    oracle.assert_close(got, expected, "float32", log_scale=func != "softmax")


def test_results_equal_the_numpy_backend():
    x = np.random.default_rng(0).standard_normal((30, 70)) * 5
    w = np.random.default_rng(1).random((30, 70)) < 0.6
    w[3] = False
    d, dw = da.from_array(x, chunks=(7, 9)), da.from_array(w, chunks=(7, 9))
    for axis in (0, 1, (0, 1)):
        for name in ("softmax", "log_softmax", "logsumexp"):
            f = getattr(smx, name)
            ours, theirs = f(d, axis=axis, where=dw).compute(), f(x, axis=axis, where=w)
            oracle.assert_close(ours, theirs, "float64", log_scale=name != "softmax")


def test_store_a_result_into_a_memory_map(tmp_path):
    """A result too big to hold is streamed block by block to storage with da.store."""
    x = da.random.default_rng(2).standard_normal((64, 20000), chunks=(16, 2500), dtype=np.float32)
    target = np.lib.format.open_memmap(tmp_path / "softmax.npy", mode="w+", dtype=np.float32, shape=x.shape)
    da.store(smx.softmax(x, axis=1), target)
    target.flush()
    stored = np.load(tmp_path / "softmax.npy", mmap_mode="r")
    oracle.assert_close(stored, oracle.softmax(x.compute(), (1,)), "float32")


def test_bytes_held_by_the_scheduler_stay_a_few_blocks():
    """Deterministic memory bound: the synchronous scheduler's cache, summed after every task."""

    class Held(Callback):
        def __init__(self):
            super().__init__()
            self.peak = 0

        def _posttask(self, key, result, dsk, state, id):
            self.peak = max(self.peak, sum(getattr(v, "nbytes", 0) for v in state["cache"].values()))

    block = 4 * 262_144 * 4  # 4 MiB blocks: (4, 262144) float32
    x = _counting(None, ((4,) * 4, (262_144,) * 32), Counter(), threading.Lock())  # 128 MiB in all
    with Held() as held, dask.config.set(scheduler="synchronous"):
        sums = smx.softmax(x, axis=1).sum(axis=1).compute()
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    assert held.peak <= 3 * block, f"the scheduler held {held.peak / 2**20:.1f} MiB at once (blocks of {block / 2**20:.0f} MiB)"


MEMORY_SCRIPT = textwrap.dedent(
    """
    import numpy as np, dask, dask.array as da
    import softmax_multi as smx

    def block(block_info=None):
        (r0, _), (c0, c1) = block_info[None]["array-location"]
        rows = np.arange(r0, r0 + 4, dtype=np.float32)[:, None]
        cols = (np.arange(c0, c1) % 1000).astype(np.float32)[None, :]
        return rows * 0.5 + cols * 0.003

    # 8 x 67 108 864 float32 = 2 GiB, generated block by block, 64 blocks along the softmax axis
    x = da.map_blocks(block, chunks=((4, 4), (1 << 20,) * 64), dtype=np.float32, meta=np.empty((0, 0), np.float32))
    assert x.nbytes == 2 * 2**30
    with dask.config.set(scheduler="threads", num_workers=2):
        sums = smx.softmax(x, axis=1).sum(axis=1, dtype=np.float64).compute()
    # VmHWM: this program's peak RSS (ru_maxrss would also count the parent's pages before exec)
    peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(float(np.abs(sums - 1).max()), peak_kib // 1024)
    """
)


def test_two_gib_lazy_input_in_bounded_memory():
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    worst, peak_mib = run.stdout.split()
    assert float(worst) < 1e-5, f"row sums off by {worst}"
    assert int(peak_mib) < 600, f"peak RSS {peak_mib} MiB for a 2 GiB input"


def test_local_cluster_worker_processes_without_spilling():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="400MiB", dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        x = da.random.default_rng(3).standard_normal((32, 1 << 22), chunks=(4, 1 << 19), dtype=np.float32)  # 0.5 GiB
        assert x.nbytes == 2**29
        y = smx.softmax(x, axis=1)
        sums = y.sum(axis=1, dtype=np.float64).compute()
        first = y[:2].compute()
        spilled = client.run(lambda dask_worker: dask_worker.data.cumulative_metrics.get(("disk-write", "bytes"), 0))
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    oracle.assert_close(first, oracle.softmax(x[:2].compute(), (1,)), "float32")
    assert sum(spilled.values()) == 0, f"spilled to disk: {spilled}"


def test_out_is_refused():
    x = da.zeros((4, 4), chunks=2)
    with pytest.raises(TypeError, match="out= is not supported for dask arrays: Dask arrays are lazy"):
        smx.softmax(x, out=da.zeros((4, 4)))


def test_readme_example_runs(tmp_path, readme_example):
    """The README's LocalCluster example, as written there."""
    run = subprocess.run(
        [sys.executable, "-c", readme_example("# bigger than memory")], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[1. 1. 1.]"
    stored = da.from_npy_stack(tmp_path / "softmax-npy")
    assert stored.shape == (32, 1 << 22)
    np.testing.assert_allclose(stored[:4].sum(axis=1, dtype=np.float64).compute(), 1.0, rtol=1e-5)
