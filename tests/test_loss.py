"""The losses beyond the conformance suite's rows: lean gradients, torch.compile without graph
breaks, JAX's transforms and compiled memory, Dask's laziness, the linear loss's tiles, the mixed
library errors, and the benchmark group."""

from __future__ import annotations

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi import linear
from softmax_multi.conformance import oracle
from softmax_multi.conformance.plugin import Backend

from .conftest import BACKENDS

IGNORE = -100


def _problem(rng, n=6, c=5):
    z = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    target = rng.integers(0, c, n)
    target[1] = IGNORE
    return z, target


# -- PyTorch ---------------------------------------------------------------------------------------


def test_torch_backward_keeps_one_tensor_of_the_logits_size(rng):
    """What autograd saves for the backward: the gradient (softmax minus target) alone, not the
    forward's temporaries (max, exponentials, masks)."""
    import torch

    z_np, target = _problem(rng, 64, 1000)
    z = torch.from_numpy(z_np).requires_grad_(True)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = smx.cross_entropy(z, torch.from_numpy(target), ignore_index=IGNORE, label_smoothing=0.1, reduction="mean")
    assert sum(saved) <= z.numel() * z.element_size() + 64 * 8 * 4, saved
    (grad,) = torch.autograd.grad(loss, z)
    expected = oracle.cross_entropy_gradient(z_np, target, -1, None, None, 0.1, IGNORE) / (target != IGNORE).sum()
    np.testing.assert_allclose(grad.numpy(), expected.astype(np.float64), atol=1e-6)


def test_torch_compile_has_no_graph_break_and_the_same_gradient(rng):
    import torch

    z_np, target = _problem(rng)
    z_np[1] = np.nan  # ignored: zero gradient all the same
    where = torch.tensor([True, True, False, True, True])
    y = torch.from_numpy(target)
    y[0] = 2  # a masked target: +inf, its gradient still softmax - one-hot
    smx.list_backends()  # discovery is not traced (as for softmax)

    def f(z):
        return smx.cross_entropy(z, y, where=where, ignore_index=IGNORE, label_smoothing=0.2)

    compiled = torch.compile(f, fullgraph=True)
    eager_z = torch.from_numpy(z_np).requires_grad_(True)
    compiled_z = torch.from_numpy(z_np).requires_grad_(True)
    g = torch.rand(6)
    eager, traced = f(eager_z), compiled(compiled_z)
    np.testing.assert_array_equal(eager.detach().numpy(), traced.detach().numpy())
    assert traced[0] == torch.inf
    (eager * g).sum().backward()
    (traced * g).sum().backward()
    assert torch.isfinite(compiled_z.grad).all()
    np.testing.assert_allclose(compiled_z.grad.numpy(), eager_z.grad.numpy(), atol=1e-6)
    expected = oracle.cross_entropy_gradient(z_np, y.numpy(), -1, where.numpy(), None, 0.2, IGNORE, g.numpy())
    np.testing.assert_allclose(eager_z.grad.numpy(), expected.astype(np.float64), atol=1e-6)


def test_torch_class_weight_and_probability_gradients(rng):
    import torch

    z = torch.tensor(rng.standard_normal((5, 4)), requires_grad=True)
    q = torch.softmax(torch.tensor(rng.standard_normal((5, 4))), -1).requires_grad_(True)
    w = torch.tensor(rng.random(4) + 0.5, requires_grad=True)
    y = torch.tensor([0, IGNORE, 3, 1, 1])
    assert torch.autograd.gradcheck(lambda z, q, w: smx.cross_entropy(z, q, class_weight=w, label_smoothing=0.3), (z, q, w))
    assert torch.autograd.gradcheck(
        lambda z, w: smx.cross_entropy(z, y, class_weight=w, ignore_index=IGNORE, label_smoothing=0.3, reduction="mean"), (z, w)
    )


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("chunk_size", [None, 26, 7])  # whole rows (two rows per tile), classes in chunks
def test_torch_linear_loss_never_holds_the_logits(monkeypatch, rng, reduction, chunk_size):
    import torch

    from softmax_multi.backends import torch_loss

    tiles = []  # (rows, classes) of every tile of logits made
    tile, column_tile, logits = torch_loss._Problem.tile, torch_loss._Problem.column_tile, linear.logits

    def recorded_tile(self, hb):
        z = tile(self, hb)
        tiles.append(tuple(z.shape))
        return z

    def recorded_column_tile(self, hb, c0, c1, buffer):
        z = column_tile(self, hb, c0, c1, buffer)
        tiles.append(tuple(z.shape))
        return z

    def recorded_logits(*args):
        z = logits(*args)
        tiles.append(tuple(z.shape))
        return z

    monkeypatch.setattr(torch_loss._Problem, "tile", recorded_tile)
    monkeypatch.setattr(torch_loss._Problem, "column_tile", recorded_column_tile)
    monkeypatch.setattr(linear, "logits", recorded_logits)
    h = torch.tensor(rng.standard_normal((9, 4)), requires_grad=True)
    weight = torch.tensor(rng.standard_normal((13, 4)), requires_grad=True)
    bias = torch.tensor(rng.standard_normal(13), requires_grad=True)
    y = torch.from_numpy(rng.integers(0, 13, 9))
    loss = smx.linear_cross_entropy(h, weight, y, bias=bias, reduction=reduction, chunk_size=chunk_size or 26)
    naive = torch.nn.functional.cross_entropy(h @ weight.T + bias, y, reduction=reduction)
    g = torch.rand(loss.shape, dtype=torch.float64)
    ours_grads = torch.autograd.grad((loss * g).sum(), (h, weight, bias))
    naive_grads = torch.autograd.grad((naive * g).sum(), (h, weight, bias))
    torch.testing.assert_close(loss, naive)
    for a, b in zip(ours_grads, naive_grads):
        torch.testing.assert_close(a, b)
    assert tiles and all(r * c <= (chunk_size or 26) for r, c in tiles), tiles


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernels", [True, False], ids=["kernels read the tiles", "torch reads the tiles"])
@pytest.mark.parametrize("v", [11, 600], ids=["11 classes", "600 classes"])
def test_torch_linear_loss_of_whole_rows_by_kernels_and_by_torch(monkeypatch, rng, v, kernels, dtype, reduction):
    """Tiles of whole rows (blocks of 5 rows, each product in parts of 2 rows at most), their
    statistics read by the fused kernels or by torch's operations, against the long-double oracle:
    masked classes, class weights (one of them 0), smoothing, a bias, ignored and out-of-range
    targets and a row of NaN (its loss NaN); the gradients, where every loss is finite. Of 600
    classes, the forward of "none" reads tiles of 11 rows and 272, 272 and 56 classes (the
    backward's, :func:`softmax_multi.linear.column_plan`), their statistics merged."""
    import torch

    from softmax_multi.backends import fused, torch_loss

    assert fused.wait_ready() is not None
    monkeypatch.setattr(torch_loss, "PRODUCT_ROWS", 2)
    read, row_stats = [], fused.row_stats
    monkeypatch.setattr(fused, "row_stats", lambda z, w=None: read.append(z.shape) or row_stats(z, w))
    if not kernels:
        monkeypatch.setattr(torch_loss, "_kernels_read", lambda *args: False)
    n, d = 12, 6
    h_np = (rng.standard_normal((n, d)) * 0.8).astype(dtype)
    w_np = (rng.standard_normal((v, d)) * 0.8).astype(dtype)
    b_np = rng.standard_normal(v).astype(dtype)
    where = np.ones(v, bool)
    where[[1, 6, 7]] = False
    cw = (rng.random(v) + 0.2).astype(dtype)
    cw[4] = 0.0
    y_np = rng.choice(np.flatnonzero(where), n)
    y_np[2] = IGNORE
    options = {"where": where, "class_weight": cw, "label_smoothing": 0.15, "ignore_index": IGNORE}
    kw = {k: torch.from_numpy(a) if isinstance(a, np.ndarray) else a for k, a in options.items()}
    tensors = [torch.from_numpy(a).requires_grad_(True) for a in (h_np, w_np, b_np)]

    def ours(h, w, b, y):
        return smx.linear_cross_entropy(h, w, torch.from_numpy(y), bias=b, reduction=reduction, chunk_size=5 * v, **kw)

    def exact(h, y):
        z = h.astype(np.longdouble) @ w_np.astype(np.longdouble).T + b_np
        return z, oracle.cross_entropy(z, y, -1, where, cw, 0.15, IGNORE, reduction)

    bad_h, bad_y = h_np.copy(), y_np.copy()
    bad_h[7], bad_y[9] = np.nan, v  # NaN: the row of NaN, and the target outside [0, C)
    got = ours(torch.from_numpy(bad_h), *tensors[1:], bad_y).detach().numpy()
    if reduction == "none":
        assert np.isnan(got[[7, 9]]).all() and got[2] == 0
        keep = np.ones(n, bool)
        keep[[7, 9]] = False
        oracle.assert_close(got[keep], exact(bad_h, bad_y)[1][keep], dtype, log_scale=True)
    else:
        assert np.isnan(got)
    wide_none = v > 256 and reduction == "none"  # blocks of 11 and 1 rows, 3 chunks each; else 5, 5 and 2 rows
    assert len(read) == (0 if not kernels else 6 if wide_none else 3), read

    loss = ours(*tensors, y_np)
    z, expected = exact(h_np, y_np)
    oracle.assert_close(loss.detach().numpy(), expected, dtype, log_scale=True)
    g = rng.random(loss.shape).astype(dtype)
    grads = torch.autograd.grad(loss, tensors, torch.from_numpy(g))
    share = np.where(y_np == IGNORE, 0.0, cw[np.where(y_np == IGNORE, 0, y_np)]).sum()
    scale = g.astype(np.longdouble) / (share if reduction == "mean" else 1)
    dz = oracle.cross_entropy_gradient(z, y_np, -1, where, cw, 0.15, IGNORE, scale if reduction == "none" else None)
    dz = dz if reduction == "none" else dz * scale
    tolerance = {"float32": 2e-6, "float64": 1e-14}[dtype]
    for got_grad, exact_grad in zip(grads, (dz @ w_np, dz.T @ h_np, dz.sum(0))):
        expected_grad = np.asarray(exact_grad, dtype=np.float64)
        np.testing.assert_allclose(got_grad.numpy(), expected_grad, rtol=0, atol=tolerance * np.max(np.abs(expected_grad)))


def test_torch_linear_loss_refuses_a_class_weight_gradient():
    import torch

    with pytest.raises(TypeError, match=r"^linear_cross_entropy: class_weight takes no gradient here"):
        smx.linear_cross_entropy(
            torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 1]), class_weight=torch.ones(4, requires_grad=True)
        )


def test_torch_linear_loss_of_bfloat16_accumulates_in_float32(rng):
    import torch

    h = torch.tensor(rng.standard_normal((8, 16)), dtype=torch.bfloat16, requires_grad=True)
    weight = torch.tensor(rng.standard_normal((50, 16)) * 0.3, dtype=torch.bfloat16, requires_grad=True)
    y = torch.from_numpy(rng.integers(0, 50, 8))
    loss = smx.linear_cross_entropy(h, weight, y, reduction="sum")
    assert loss.dtype == torch.bfloat16
    loss.backward()
    assert h.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.bfloat16
    exact = oracle.cross_entropy(h.detach().float().numpy().astype(np.longdouble) @ weight.detach().float().numpy().T, y.numpy())
    assert abs(float(loss.detach()) - float(exact.sum())) <= float(exact.sum()) * 2**-8


# -- JAX -------------------------------------------------------------------------------------------


def test_jax_cross_entropy_under_jit_vmap_grad_and_jacfwd(rng):
    import jax
    import jax.numpy as jnp

    z_np, target = _problem(rng)
    z, y = jnp.asarray(z_np), jnp.asarray(target, dtype=jnp.int32)

    def f(z):
        return smx.cross_entropy(z, y, ignore_index=IGNORE, label_smoothing=0.1, reduction="mean")

    np.testing.assert_allclose(jax.jit(f)(z), f(z), rtol=1e-6)
    reverse, forward = jax.grad(f)(z), jax.jacfwd(f)(z)
    np.testing.assert_allclose(reverse, forward, atol=1e-7)
    expected = oracle.cross_entropy_gradient(z_np, target, -1, None, None, 0.1, IGNORE) / 5
    np.testing.assert_allclose(reverse, expected.astype(np.float64), atol=1e-6)
    batched = jax.vmap(lambda z: smx.cross_entropy(z, y, ignore_index=IGNORE))(jnp.stack([z, 2 * z]))
    np.testing.assert_allclose(batched[1], smx.cross_entropy(2 * z, y, ignore_index=IGNORE), rtol=1e-6)
    # an index outside [0, C) under jit: NaN for its example, no exception
    outside = jax.jit(lambda z: smx.cross_entropy(z, jnp.asarray([7, 0, 1, 2, 3, 4], dtype=jnp.int32)))(z)
    assert np.isnan(outside[0]) and np.isfinite(outside[1:]).all()


def test_jax_backward_keeps_one_array_of_the_logits_size(rng):
    import jax
    import jax.numpy as jnp

    z = jnp.asarray(rng.standard_normal((64, 1000)), dtype=jnp.float32)
    y = jnp.asarray(rng.integers(0, 1000, 64), dtype=jnp.int32)
    _, residuals = jax.vjp(lambda z: smx.cross_entropy(z, y, label_smoothing=0.1, reduction="sum"), z)
    sizes = [leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(residuals) if hasattr(leaf, "dtype")]
    big = [s for s in sizes if s >= z.size * 4]
    assert len(big) == 1, sizes


@pytest.mark.parametrize("tile_rows", [64, 128], ids=["four products", "one pass"])
def test_jax_linear_loss_compiled_memory_is_a_tile_not_the_logits(rng, tile_rows):
    import jax
    import jax.numpy as jnp

    from softmax_multi.backends import jax_loss

    n, d, v = 4096, 64, 8192
    assert (jax_loss.one_pass_plan(n, v, d, tile_rows * v) is None) == (tile_rows < jax_loss.ONE_PASS_MIN_ROWS)
    h = jnp.asarray(rng.standard_normal((n, d)), dtype=jnp.float32)
    weight = jnp.asarray(rng.standard_normal((v, d)) * 0.1, dtype=jnp.float32)
    y = jnp.asarray(rng.integers(0, v, n), dtype=jnp.int32)

    def naive(h, w):
        z = h @ w.T
        return jnp.sum(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0])

    def ours(h, w):
        return smx.linear_cross_entropy(h, w, y, reduction="sum", chunk_size=tile_rows * v)

    def temp(f):
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(h, weight).compile().memory_analysis().temp_size_in_bytes

    assert temp(ours) <= temp(naive) / 8, (temp(ours), temp(naive))
    (value, grads), (naive_value, naive_grads) = (jax.value_and_grad(f, argnums=(0, 1))(h, weight) for f in (ours, naive))
    np.testing.assert_allclose(value, naive_value, rtol=1e-5)
    for a, b in zip(grads, naive_grads):
        np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(
    "chunk_size, update_entries",
    [(None, None), (130 * 97, 8 * 30), (20 * 97, None)],
    ids=["one pass, one block", "one pass, row blocks and class chunks with remainders", "four products"],
)
def test_jax_linear_loss_gradients_of_sum_and_mean(monkeypatch, rng, reduction, chunk_size, update_entries):
    """The one-pass gradients of "sum" and "mean" (blocks of whole rows, dW updated a chunk of
    classes at a time; rows and classes with remainders) and the four-product path they fall back
    to, against the long-double oracle's gradient of the logits carried through the products."""
    import jax
    import jax.numpy as jnp

    from softmax_multi.backends import jax_loss

    if update_entries is not None:
        monkeypatch.setattr(jax_loss, "UPDATE_ENTRIES", update_entries)
    n, d, v = 211, 8, 97
    h_np = rng.standard_normal((n, d)).astype(np.float32)
    w_np = rng.standard_normal((v, d)).astype(np.float32)
    b_np = rng.standard_normal(v).astype(np.float32)
    y_np = rng.integers(0, v, n)
    y_np[::7] = IGNORE
    where = np.ones(v, bool)
    where[3::10] = False
    y_np[y_np % 10 == 3] = 0  # no target on a masked class: its loss is +inf
    class_weight = rng.uniform(0.5, 2.0, v).astype(np.float32)
    options = {"where": where, "class_weight": class_weight, "label_smoothing": 0.1, "ignore_index": IGNORE}
    rows = jax_loss.one_pass_plan(n, v, d, chunk_size)
    assert (rows is None) == (chunk_size == 20 * 97), rows

    kw = {k: jnp.asarray(a) if isinstance(a, np.ndarray) else a for k, a in options.items()}
    y = jnp.asarray(y_np, dtype=jnp.int32)

    def f(h, w, b):
        return smx.linear_cross_entropy(h, w, y, bias=b, reduction=reduction, chunk_size=chunk_size, **kw)

    value, (dh, dw, db) = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(*map(jnp.asarray, (h_np, w_np, b_np)))
    z = h_np.astype(np.float64) @ w_np.T.astype(np.float64) + b_np
    losses = oracle.cross_entropy(z, y_np, -1, where, class_weight, 0.1, IGNORE)
    g = oracle.cross_entropy_gradient(z, y_np, -1, where, class_weight, 0.1, IGNORE).astype(np.float64)
    share = np.where(y_np == IGNORE, 0.0, class_weight[np.where(y_np == IGNORE, 0, y_np)]).sum()
    scale = 1 / share if reduction == "mean" else 1.0
    np.testing.assert_allclose(float(value), float(np.sum(losses)) * scale, rtol=1e-5)
    for got, unscaled in ((dh, g @ w_np), (dw, g.T @ h_np), (db, g.sum(0))):
        expected = unscaled * scale
        np.testing.assert_allclose(np.asarray(got), expected, atol=2e-5 * np.max(np.abs(expected)))


def test_jax_linear_loss_has_no_forward_mode():
    import jax
    import jax.numpy as jnp

    h, w, y = jnp.zeros((2, 3)), jnp.zeros((4, 3)), jnp.asarray([0, 1])
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jacfwd(lambda h: smx.linear_cross_entropy(h, w, y))(h)


# -- Dask and NumPy --------------------------------------------------------------------------------


@pytest.mark.parametrize("weight_kind", ["numpy", "dask"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_dask_linear_loss_is_lazy_and_takes_numpy_weights(rng, weight_kind, reduction):
    import dask.array as da

    h = rng.standard_normal((20, 6))
    weight = rng.standard_normal((11, 6))
    bias = rng.standard_normal(11)
    y = rng.integers(0, 11, 20)
    y[3] = IGNORE
    w = weight if weight_kind == "numpy" else da.from_array(weight, chunks=(4, 3))
    lazy = smx.linear_cross_entropy(
        da.from_array(h, chunks=(7, 3)),
        w,
        da.from_array(y, chunks=7),
        bias=bias,
        ignore_index=IGNORE,
        label_smoothing=0.1,
        reduction=reduction,
        chunk_size=30,
    )
    assert isinstance(lazy, da.Array)
    expected = oracle.cross_entropy(h @ weight.T + bias, y, -1, None, None, 0.1, IGNORE, reduction)
    oracle.assert_close(lazy.compute(), expected, "float64", log_scale=True)


def test_dask_cross_entropy_is_lazy_across_class_blocks(rng):
    import dask.array as da

    z_np, target = _problem(rng, 8, 12)
    lazy = smx.cross_entropy(da.from_array(z_np, chunks=(4, 5)), da.from_array(target, chunks=4), ignore_index=IGNORE)
    assert isinstance(lazy, da.Array)
    oracle.assert_close(lazy.compute(), oracle.cross_entropy(z_np, target, ignore_index=IGNORE), "float32", log_scale=True)


@pytest.mark.parametrize("chunk_size", [None, 40, 7])  # one tile; blocks of 3 rows; a row at a time in chunks of 7 and 6 classes
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_linear_loss_kernels_take_tiles_of_rows_and_classes(monkeypatch, rng, chunk_size, dtype):
    """The kernels' per-row statistics of each tile, merged over the chunks of classes, against the
    long-double oracle: masked classes (a chunk of them), class weights (one of them 0), smoothing,
    ignored and out-of-range targets, a row of NaN."""
    from softmax_multi.backends import fused

    assert fused.wait_ready() is not None
    tiles = []
    row_stats = fused.row_stats
    monkeypatch.setattr(fused, "row_stats", lambda z, w=None: tiles.append(z.shape) or row_stats(z, w))
    n, v = 9, 13
    h = (rng.standard_normal((n, 8)) * 0.7).astype(dtype)
    h[4] = np.nan
    weight = (rng.standard_normal((v, 8)) * 0.7).astype(dtype)
    bias = rng.standard_normal(v).astype(dtype)
    where = np.ones(v, bool)
    where[[2, 7, 8, 9, 10, 11]] = False  # the second chunk of 7 holds one class taking part
    cw = (rng.random(v) + 0.1).astype(dtype)
    cw[5] = 0.0
    y = rng.choice(np.flatnonzero(where), n)
    y[1], y[6] = IGNORE, v  # ignored; outside [0, C): NaN
    options = {"bias": bias, "where": where, "class_weight": cw, "label_smoothing": 0.2, "ignore_index": IGNORE}
    got = smx.linear_cross_entropy(h, weight, y, chunk_size=chunk_size, **options)
    assert tiles and all(r * c <= (chunk_size or linear.DEFAULT_CHUNK) for r, c in tiles), tiles
    assert len(tiles) == {None: 1, 40: 3, 7: 2 * n}[chunk_size], tiles
    z = h.astype(np.longdouble) @ weight.astype(np.longdouble).T + bias
    expected = oracle.cross_entropy(z, y, -1, where, cw, 0.2, IGNORE)
    assert np.isnan(got[[4, 6]]).all() and got[1] == 0
    oracle.assert_close(got, expected, np.dtype(dtype).name, log_scale=True)
    mean = smx.linear_cross_entropy(h[[0, 2, 3]], weight, y[[0, 2, 3]], chunk_size=chunk_size, reduction="mean", **options)
    expected_mean = oracle.cross_entropy(z[[0, 2, 3]], y[[0, 2, 3]], -1, where, cw, 0.2, IGNORE, reduction="mean")
    oracle.assert_close(mean, expected_mean, np.dtype(dtype).name, log_scale=True)


@pytest.mark.parametrize("chunk_size", [None, 3, 40])  # one tile; a row at a time in chunks of 3; blocks of 2 rows
def test_numpy_linear_loss_of_float16(rng, chunk_size):
    h = rng.standard_normal((10, 8)).astype(np.float16)
    weight = (rng.standard_normal((20, 8)) * 0.5).astype(np.float16)
    y = rng.integers(0, 20, 10)
    got = smx.linear_cross_entropy(h, weight, y, chunk_size=chunk_size, label_smoothing=0.1)
    assert got.dtype == np.float16
    exact = oracle.cross_entropy(h.astype(np.longdouble) @ weight.astype(np.longdouble).T, y, label_smoothing=0.1)
    oracle.assert_close(got, exact, "float16", ulps=oracle.ROUNDED_TOLERANCE_ULPS)


def test_ignore_index_inside_the_classes(backend, rng):
    """ignore_index may name a real class: its examples are ignored, the others are not."""
    z_np, _ = _problem(rng)
    target = np.array([0, 1, 0, 2, 3, 0])
    ints = np.int32 if backend.name == "jax" else np.int64
    got = backend.numpy(
        smx.cross_entropy(backend.asarray(z_np), backend.asarray(target.astype(ints)), ignore_index=0, reduction="none")
    )
    expected = oracle.cross_entropy(z_np, target, ignore_index=0)
    oracle.assert_close(got, expected, "float32", log_scale=True)
    assert (got[target == 0] == 0).all()


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_linear_loss_of_no_rows(backend, reduction):
    """A batch of no rows: no losses, a sum of 0, a mean of NaN (0 / 0, as torch's), as the loss of
    its (empty) logits gives them (on Dask, whose own max of no rows raises, by NumPy's)."""
    h, w = backend.asarray(np.zeros((0, 3), np.float32)), backend.asarray(np.ones((4, 3), np.float32))
    y = backend.asarray(np.zeros(0, np.int32))
    got = backend.numpy(smx.linear_cross_entropy(h, w, y, label_smoothing=0.1, reduction=reduction))
    expected = backend.numpy(smx.cross_entropy(backend.asarray(np.zeros((0, 4), np.float32)), y, reduction=reduction))
    assert got.shape == expected.shape == ((0,) if reduction == "none" else ())
    np.testing.assert_array_equal(got, {"none": np.zeros(0), "sum": 0.0, "mean": np.nan}[reduction])


def test_torch_linear_loss_of_no_rows_has_zero_gradients():
    import torch

    h = torch.zeros(0, 3, requires_grad=True)
    w, b = torch.ones(4, 3, requires_grad=True), torch.ones(4, requires_grad=True)
    for reduction in ("none", "sum", "mean"):
        loss = smx.linear_cross_entropy(h, w, torch.zeros(0, dtype=torch.long), bias=b, reduction=reduction)
        dh, dw, db = torch.autograd.grad(loss.sum(), (h, w, b))
        assert dh.shape == (0, 3) and not dw.any() and not db.any()


def test_mean_over_no_weight_is_nan(backend):
    """A "mean" when every example is ignored: 0 / 0, NaN, for the loss and for the linear loss."""
    y = backend.asarray(np.full(3, IGNORE, np.int32))
    z = backend.asarray(np.ones((3, 5), np.float32))
    h, w = backend.asarray(np.ones((3, 4), np.float32)), backend.asarray(np.ones((5, 4), np.float32))
    for value in (
        smx.cross_entropy(z, y, ignore_index=IGNORE, label_smoothing=0.1, reduction="mean"),
        smx.linear_cross_entropy(h, w, y, ignore_index=IGNORE, reduction="mean"),
    ):
        assert np.isnan(backend.numpy(value))


def test_torch_mean_over_no_weight_passes_no_gradient():
    """As torch's own loss: every example ignored, the mean is NaN and every gradient 0 (not
    0 * inf = NaN), eagerly, compiled, and through the linear loss (whole rows, chunked classes)."""
    import torch

    y = torch.full((3,), IGNORE)
    z_eager, z_compiled = (torch.randn(3, 5, generator=torch.Generator().manual_seed(0)).requires_grad_(True) for _ in range(2))

    def f(z):
        return smx.cross_entropy(z, y, ignore_index=IGNORE, label_smoothing=0.1, reduction="mean")

    for z, g in ((z_eager, f), (z_compiled, torch.compile(f))):
        value = g(z)
        value.backward()
        assert torch.isnan(value) and not z.grad.any() and not z.grad.isnan().any()
    h, w = torch.randn(3, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    for chunk_size in (None, 5):
        value = smx.linear_cross_entropy(h, w, y, ignore_index=IGNORE, reduction="mean", chunk_size=chunk_size)
        dh, dw = torch.autograd.grad(value, (h, w))
        assert torch.isnan(value) and not dh.any() and not dw.any() and not dw.isnan().any()


@pytest.mark.parametrize("chunk_size", [None, 5], ids=["one pass", "four products"])
def test_jax_mean_over_no_weight_passes_no_gradient(chunk_size):
    import jax
    import jax.numpy as jnp

    y = jnp.full((3,), IGNORE)
    grad_z = jax.grad(lambda z: smx.cross_entropy(z, y, ignore_index=IGNORE, reduction="mean"))(jnp.ones((3, 5)))
    assert not np.asarray(grad_z).any()

    def f(h, w):
        return smx.linear_cross_entropy(h, w, y, ignore_index=IGNORE, reduction="mean", chunk_size=chunk_size)

    value, (dh, dw) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(jnp.ones((3, 4)), jnp.ones((5, 4)))
    assert np.isnan(value) and not np.asarray(dh).any() and not np.asarray(dw).any()


PAIRS = [(mine, other) for mine in BACKENDS for other in BACKENDS if other != mine]


@pytest.mark.parametrize("mine,other", PAIRS, ids=[f"{m}-{o}" for m, o in PAIRS])
def test_loss_arrays_of_two_libraries(mine, other):
    logits = Backend.named(mine).asarray(np.zeros((2, 3)))
    target = Backend.named(other).asarray(np.zeros(2, np.int32))
    with pytest.raises(
        TypeError, match=f"^cross_entropy: logits is a {mine} array but target is a {other} array; pass target from the same"
    ):
        smx.cross_entropy(logits, target)


# dask.array's matmul takes NumPy weights, and so does the Dask backend's linear loss
LINEAR_PAIRS = [pair for pair in PAIRS if pair != ("dask", "numpy")]


@pytest.mark.parametrize("mine,other", LINEAR_PAIRS, ids=[f"{m}-{o}" for m, o in LINEAR_PAIRS])
def test_linear_loss_arrays_of_two_libraries(mine, other):
    h = Backend.named(mine).asarray(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=f"^linear_cross_entropy: h is a {mine} array but weight is a {other} array"):
        smx.linear_cross_entropy(
            h, Backend.named(other).asarray(np.zeros((4, 3))), Backend.named(mine).asarray(np.zeros(2, np.int32))
        )


# -- the benchmark group ---------------------------------------------------------------------------


def test_cross_entropy_group_measures_every_framework_small():
    from softmax_multi.bench import loss as bench_loss

    results = bench_loss.run_cross_entropy(rounds=1, scale=0.02)
    seen = {(r["framework"], r["reduction"], r["method"]) for r in results}
    for framework, reductions in (("torch", ("sum", "none")), ("jax", ("sum", "none")), ("numpy", ("sum",))):
        for reduction in reductions:
            assert (framework, reduction, bench_loss.OURS) in seen and (framework, reduction, bench_loss.NAIVE) in seen
    assert ("torch", "sum", bench_loss.TORCH_CHUNKED) in seen and ("torch", "none", bench_loss.NAIVE_COMPILED) in seen
    assert all(r["seconds"] > 0 and r["error_eps"] <= 16 for r in results if r["method"] != bench_loss.TORCH_CHUNKED)
    assert all((r["memory_mib"] is None) == (r["method"] == bench_loss.NAIVE_COMPILED) for r in results)
    _, rows, targets = bench_loss.loss_table(results)
    assert len(rows) == len(results) and len(targets) - 1 == len(bench_loss.LOSS_TARGETS)
