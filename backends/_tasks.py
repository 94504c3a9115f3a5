"""The fused kernels as a C function, for threads that Python does not run: OpenMP's.

A *task* is an int64 array naming a kernel of :mod:`._kernels` (the rows of a 2-D array, or
their statistics for a loss), the addresses and shapes of its arrays, and the address of the
``state`` whose counters the threads share. Each thread of an OpenMP team calls :func:`task` with
the task's address (``GOMP_parallel``: see :class:`softmax_multi.backends.fused._OpenMP`), takes
work from those counters as the kernels' own threads do, and adds one to ``JOINED``.

A module of its own, imported only where PyTorch's OpenMP runtime is found: loading this Numba
``cfunc`` from the cache takes a few tenths of a second, which a process without PyTorch need
not spend.
"""

from __future__ import annotations

import numba
import numpy as np

from ._intrinsics import address, fetch_add
from ._kernels import _JIT, STATE_SIZE, row_stats, rows

ROWS_TASK, ROW_STATS_TASK = 0, 1
KIND, FUNC, ITEMSIZE, X, OUT, N_ROWS, N_COLS, OUT_COLS, STATE, STEP, WEIGHTS, N_WEIGHTS, JOINED = range(13)
TASK_SIZE = 13
STATE_OFFSET = 8 * TASK_SIZE  # where a task's fields are followed by its state: the state's offset in bytes


@numba.njit(**_JIT)
def _task(task, x, out):
    """Run the task's kernel on x and out (rows: out of x's dtype; row statistics: float64)."""
    fetch_add(task, JOINED, 1)
    state = numba.carray(address(task[STATE]), (STATE_SIZE,), np.int64)
    if task[KIND] == ROWS_TASK:
        rows(task[FUNC], x, out, state, task[STEP])
    else:
        stats = numba.carray(address(task[OUT]), (4, task[N_ROWS]), np.float64)
        ws = numba.carray(address(task[WEIGHTS]), (task[N_WEIGHTS],), np.float64)
        row_stats(x, ws, stats, state, task[STEP])


@numba.cfunc(numba.types.void(numba.types.voidptr), **_JIT)
def task(data):
    """The task at address ``data``: rows of float32 (``ITEMSIZE`` 4) or float64."""
    fields = numba.carray(data, (TASK_SIZE,), np.int64)
    x, out = address(fields[X]), address(fields[OUT])
    shape, out_shape = (fields[N_ROWS], fields[N_COLS]), (fields[N_ROWS], fields[OUT_COLS])
    if fields[ITEMSIZE] == 4:
        _task(fields, numba.carray(x, shape, np.float32), numba.carray(out, out_shape, np.float32))
    else:
        _task(fields, numba.carray(x, shape, np.float64), numba.carray(out, out_shape, np.float64))
