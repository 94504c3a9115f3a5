"""CuPy backend: ``cupy.ndarray`` on NVIDIA GPUs, through the array-API reference implementation.

The reference runs on CuPy's array-API namespace (array-api-compat's wrapper): every step is one
of CuPy's elementwise kernels or tree reductions on the device, with no host synchronisation.
Installed without a usable GPU (or without CUDA's libraries), the backend is listed
``unavailable`` with the reason, and nothing is tested or failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from softmax_multi.registry import BackendSpec


def _namespace(x: Any = None) -> Any:
    import array_api_compat.cupy

    return array_api_compat.cupy


def _unavailable() -> str | None:
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA libraries missing, no driver: CuPy raises its own errors
        return f"CuPy cannot reach a GPU here ({type(err).__name__}: {err})"
    return None if count else "no CUDA device"


def _devices() -> list[str]:
    import cupy

    return [f"cuda:{i}" for i in range(cupy.cuda.runtime.getDeviceCount())]


def _from_numpy(a: np.ndarray, device: str | None = None) -> Any:
    import cupy

    index = int(device.split(":")[1]) if device and ":" in device else 0
    with cupy.cuda.Device(index):
        return cupy.asarray(np.array(a, copy=True))


def _to_numpy(x: Any) -> np.ndarray:
    import cupy

    return cupy.asnumpy(x)


spec = BackendSpec(
    name="cupy",
    array_types=(("cupy", "ndarray"),),
    module="cupy",
    distribution=None,  # cupy-cuda12x, cupy-cuda11x...: the version comes from cupy.__version__
    namespace=_namespace,
    from_numpy=_from_numpy,
    to_numpy=_to_numpy,
    devices=_devices,
    dtypes=("float16", "float32", "float64", "complex64", "complex128"),
    unavailable=_unavailable,
    accurate_sums=True,  # CuPy's reductions are trees (CUB)
)
