"""Repository-wide pytest set-up: float64 is tested on every backend, JAX included.

JAX computes in float32 only unless told otherwise; certifying a backend with
``pytest --pyargs softmax_multi.conformance`` tests JAX as its user has configured it.
"""

import jax

jax.config.update("jax_enable_x64", True)
