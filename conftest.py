"""Repository-wide pytest set-up: float64 is tested on every backend, JAX included.

JAX computes in float32 only unless told otherwise; certifying a backend with
``pytest -p softmax_multi.conformance.plugin --pyargs softmax_multi.conformance`` tests JAX as its
user has configured it. Without JAX installed, nothing is configured.
"""

import importlib.util
import os

# The fused NumPy kernels load on the first call that needs them, so that every test knows which
# path it runs; tests/test_numpy_backend.py checks the background loading in a fresh process.
os.environ.setdefault("SOFTMAX_MULTI_FUSED", "wait")

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)
