"""The JAX backend under jit, vmap, grad and jacfwd, with low-precision dtypes and sharding."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi.conformance import oracle

FUNCS = [smx.softmax, smx.log_softmax, smx.logsumexp]


@pytest.mark.parametrize("f", FUNCS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("kwargs", [{}, {"axis": 0}, {"axis": (0, 1)}, {"axis": None}, {"dtype": "float32"}, {"where": True}])
def test_jit_and_vmap_equal_eager(f, data, kwargs):
    x_np, w_np = data
    x = jnp.asarray(x_np)
    if kwargs.get("where") is True:
        kwargs = {"where": jnp.asarray(w_np)}
    eager = f(x, **kwargs)
    np.testing.assert_array_equal(jax.jit(lambda x: f(x, **kwargs))(x), eager)
    if "axis" not in kwargs and "where" not in kwargs:  # a vmapped row is a slice along the last axis
        np.testing.assert_allclose(jax.vmap(lambda r: f(r, axis=-1))(x), f(x, axis=-1), rtol=1e-14)


def test_logsumexp_keepdims_under_jit(data):
    x = jnp.asarray(data[0])
    got = jax.jit(lambda x: smx.logsumexp(x, axis=1, keepdims=True))(x)
    assert got.shape == (4, 1)


@pytest.mark.parametrize("f", FUNCS, ids=lambda f: f.__name__)
def test_grad_and_jacfwd_match_finite_differences(f, data):
    x = jnp.asarray(data[0][0])
    weights = jnp.arange(1.0, 7.0)
    loss = lambda x: jnp.sum(f(x, axis=-1) * weights) if f is not smx.logsumexp else f(x, axis=-1)
    g = jax.grad(loss)(x)
    h = 1e-6
    fd = np.array([(loss(x.at[i].add(h)) - loss(x.at[i].add(-h))) / (2 * h) for i in range(6)])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    jac = jax.jacfwd(lambda x: f(x, axis=-1))(x)
    np.testing.assert_allclose(jac, jax.jacrev(lambda x: f(x, axis=-1))(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("f", FUNCS, ids=lambda f: f.__name__)
def test_masked_gradients_hold_no_nan(f, data):
    x_np, w_np = data
    x = jnp.asarray(np.where(w_np, x_np, np.nan))  # masked entries hold NaN: they must not leak
    w = jnp.asarray(w_np)

    def loss(x):
        y = f(x, axis=-1, where=w)
        return jnp.sum(jnp.where(jnp.isfinite(y), y, 0.0) * jnp.arange(y.size).reshape(y.shape))

    g = jax.grad(loss)(x)
    assert not jnp.isnan(g).any()
    assert (g[~w_np] == 0).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("f", FUNCS, ids=lambda f: f.__name__)
def test_low_precision_accumulates_in_float32(f, dtype, rng):
    x32 = (rng.standard_normal((2, 3000)) * 2).astype(np.float32)
    x = jnp.asarray(x32).astype(dtype)
    y = f(x, axis=-1)
    assert y.dtype == jnp.dtype(dtype)
    expected = getattr(oracle, f.__name__)(np.asarray(x.astype(jnp.float32)), (1,))
    oracle.assert_close(
        np.asarray(y.astype(jnp.float32)),
        np.asarray(jnp.asarray(expected.astype(np.float32)).astype(dtype).astype(jnp.float32)),
        dtype,
        log_scale=f is not smx.softmax,
        ulps=oracle.ROUNDED_TOLERANCE_ULPS,
    )


def test_float32_default_without_x64():
    code = "import jax.numpy as jnp, softmax_multi as smx; y = smx.softmax(jnp.arange(3)); assert y.dtype == jnp.float32, y.dtype"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_ENABLE_X64": "0"})


SHARDING_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import softmax_multi as smx
    jax.config.update("jax_enable_x64", True)
    assert len(jax.devices()) == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("rows", "cols"))
    x_np = np.random.default_rng(0).standard_normal((16, 64)) * 3
    sharding = NamedSharding(mesh, P("rows", "cols"))
    x = jax.device_put(x_np, sharding)
    for f in (smx.softmax, smx.log_softmax):
        for axis in (-1, 0):  # -1 is sharded over "cols", 0 over "rows"
            y = f(x, axis=axis)
            assert y.sharding.is_equivalent_to(x.sharding, 2), (f, axis, y.sharding)
            np.testing.assert_allclose(np.asarray(y), np.asarray(f(x_np, axis=axis)), rtol=1e-13, atol=1e-300)
            yj = jax.jit(lambda x: f(x, axis=axis))(x)
            assert yj.sharding.is_equivalent_to(x.sharding, 2)
            np.testing.assert_allclose(np.asarray(yj), np.asarray(y), rtol=1e-13)
    lse = smx.logsumexp(x, axis=1)
    np.testing.assert_allclose(np.asarray(lse), smx.logsumexp(x_np, axis=1), rtol=1e-13)
    hlo = jax.jit(lambda x: smx.softmax(x, axis=-1)).lower(x).compile().as_text()
    print("all-reduce", hlo.count("all-reduce("), "all-gather", hlo.count("all-gather("))
    """
)


def test_sharded_arrays_keep_their_sharding():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = out.stdout.split()
    assert counts[0] == "all-reduce" and int(counts[1]) >= 1 and counts[3] == "0", out.stdout


def test_readme_sharding_example_runs(readme_example):
    """The README's sharding example, as written there: sharding kept, 2 all-reduces, 0 all-gathers."""
    code = readme_example("# XLA_FLAGS=")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    sharding, counts = run.stdout.strip().splitlines()
    assert "P(None, 'd')" in sharding
    assert counts == "2 0"


def test_weighted_and_complex_logsumexp_under_jit_vmap_grad(rng):
    x = jnp.asarray(rng.standard_normal((4, 6)))
    b = jnp.asarray(rng.standard_normal((4, 6)))
    eager = smx.logsumexp(x, -1, b=b, return_sign=True)
    jitted = jax.jit(lambda x, b: smx.logsumexp(x, -1, b=b, return_sign=True))(x, b)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-14)
    np.testing.assert_array_equal(jitted[1], eager[1])
    mapped = jax.vmap(lambda r, w: smx.logsumexp(r, b=w, return_sign=True))(x, b)
    np.testing.assert_allclose(mapped[0], eager[0], rtol=1e-14)
    # d/db: exp(x - value) times the sign
    value, sign = eager
    gb = jax.grad(lambda b: smx.logsumexp(x, -1, b=b, return_sign=True)[0].sum())(b)
    np.testing.assert_allclose(gb, sign[:, None] * np.exp(x - value[:, None]), rtol=1e-12)
    z = x + 1j * b
    np.testing.assert_allclose(jax.jit(lambda z: smx.logsumexp(z, -1))(z), smx.logsumexp(z, -1), rtol=1e-14)


def test_gh18295_precision_under_jit():
    x = jnp.asarray([0.0, -40.0])
    np.testing.assert_allclose(jax.jit(smx.logsumexp)(x), np.logaddexp(0.0, -40.0), rtol=1e-15)


def _residual_bytes(f, x):
    """Bytes that reverse mode keeps from the forward pass of f at x (the VJP's closure)."""
    _, backward = jax.vjp(f, x)
    return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(backward) if hasattr(leaf, "nbytes"))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_gradient_of_a_slice_with_nothing_finite(name):
    """A slice that is all -inf, unmasked, is NaN, and so is its gradient, as jax.nn's (the JVP
    shifts it by its max unguarded); the other slices' gradients are jax.nn's."""
    x = jnp.asarray([[-jnp.inf, -jnp.inf], [0.0, 1.0]])
    w = jnp.asarray([[1.0, 2.0], [3.0, -1.0]])
    ours, native = getattr(smx, name), getattr(jax.nn, name)
    g, g_native = (jax.grad(lambda x, f=f: jnp.sum(f(x) * w))(x) for f in (ours, native))
    assert jnp.isnan(ours(x)[0]).all() and jnp.isnan(g[0]).all() and jnp.isnan(g_native[0]).all()
    np.testing.assert_allclose(g[1], g_native[1], rtol=1e-6)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "where"])
def test_gradient_keeps_only_the_output(name, masked):
    """Reverse mode saves one array of the output's size (softmax, and log_softmax without where=:
    the exps, and one number per row, 1 / their sum; log_softmax with where=: its output) and,
    with where=, the mask and one array of zeros; jax.nn saves the forward's temporaries too. The
    gradients are jax.nn's, and NaN-free with a fully masked row."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 1000)) * 3, jnp.float32)
    w = jnp.asarray(rng.standard_normal((64, 1000)), jnp.float32)
    where = jnp.asarray(rng.random((64, 1000)) > 0.3).at[0].set(False) if masked else None
    ours, native = getattr(smx, name), getattr(jax.nn, name)
    kept = _residual_bytes(lambda x: ours(x, where=where), x)
    per_row = x.shape[0] * x.itemsize if name == "softmax" or where is None else 0
    limit = x.nbytes + per_row + (0 if where is None else where.nbytes + x.nbytes) + 64  # and a few scalars
    assert kept <= limit, (kept, limit)
    assert kept < _residual_bytes(lambda x: native(x, where=where), x) or where is None

    def loss(f):
        def value(x):
            y = f(x, where=where)
            return jnp.sum((y if where is None else jnp.where(where, y, 0.0)) * w)

        return value

    g, g_native = jax.grad(loss(ours))(x), jax.grad(loss(native))(x)
    assert not jnp.isnan(g).any()
    np.testing.assert_allclose(g, g_native, rtol=1e-5, atol=1e-6)
