"""array-api-strict backend: the reference implementation alone, proving it uses only the standard."""

from __future__ import annotations

from typing import Any

import numpy as np

from softmax_multi import reference
from softmax_multi.registry import BackendSpec


def _namespace(x: Any) -> Any:
    import array_api_strict

    return array_api_strict


def _from_numpy(a: np.ndarray, device: str | None = None) -> Any:
    import array_api_strict

    return array_api_strict.asarray(np.array(a, copy=True))


def _to_numpy(x: Any) -> np.ndarray:
    return np.from_dlpack(x)


spec = BackendSpec(
    name="array_api_strict",
    array_types=(("array_api_strict._array_object", "Array"),),
    module="array_api_strict",
    distribution="array-api-strict",
    namespace=_namespace,
    softmax=reference.softmax,
    log_softmax=reference.log_softmax,
    logsumexp=reference.logsumexp,
    from_numpy=_from_numpy,
    to_numpy=_to_numpy,
    dtypes=("float32", "float64", "complex64", "complex128"),
    accurate_sums=True,  # NumPy underneath: pairwise sums
)
