"""softmax-multi plugin for Cubed arrays (bounded-memory, chunked, lazy; the array API standard)."""

import math

import numpy as np

from softmax_multi import BackendSpec


def from_numpy(a, device=None):
    """A Cubed array cut in two along every axis that can be: the reductions cross chunks."""
    import cubed

    return cubed.from_array(np.array(a, copy=True), chunks=tuple(max(1, math.ceil(n / 2)) for n in a.shape))


def to_numpy(x):
    return np.asarray(x.compute())


spec = BackendSpec(
    name="cubed",
    array_types=(("cubed.array_api.array_object", "Array"),),
    module="cubed",
    from_numpy=from_numpy,
    to_numpy=to_numpy,
    dtypes=("float32", "float64", "complex64", "complex128"),
    accurate_sums=True,  # each chunk summed by NumPy (pairwise), the chunks' sums as a tree
)
