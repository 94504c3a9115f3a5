"""The cross-entropy rows of the semantics table (README "The loss"), on the backend under test,
against the long-double oracle, against ``torch.nn.functional.cross_entropy`` on shared cases,
and the loss's error contract; ``linear_cross_entropy`` against the loss of its whole logits."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

import softmax_multi as smx
from softmax_multi._args import dtype_name
from softmax_multi.conformance import oracle
from softmax_multi.registry import GRADIENT_TRANSFORMS

# An ignore_index every target may hold (torch's default).
IGNORE = -100


def _ints(backend, a):
    """Class indices as the backend's default integer arrays (JAX without x64: int32)."""
    return backend.asarray(np.asarray(a, dtype=np.int32 if backend.name == "jax" else np.int64))


def check_loss(backend, z_np, target_np, *, axis=-1, where=None, class_weight=None, measured=None, log_scale=True, **kw):
    """Run cross_entropy on backend data and compare with the oracle; return the result as NumPy."""
    index = np.asarray(target_np).dtype.kind in "iu"
    target = _ints(backend, target_np) if index else backend.asarray(target_np)
    y = smx.cross_entropy(
        backend.asarray(z_np),
        target,
        axis,
        where=None if where is None else backend.asarray(where),
        class_weight=None if class_weight is None else backend.asarray(class_weight),
        **kw,
    )
    assert backend.owns(y), f"{backend.name} returned a {type(y).__module__}.{type(y).__qualname__}"
    got = backend.numpy(y)
    assert got.dtype == z_np.dtype, f"dtype {got.dtype}, expected {z_np.dtype}"
    expected = oracle.cross_entropy(z_np, target_np, axis, where, class_weight, **kw)
    dtype = str(z_np.dtype)
    oracle.assert_close(got, expected, dtype, log_scale=log_scale, record=measured)
    return got


def _targets(rng, shape, n_classes, kind, dtype):
    if kind == "index":
        return rng.integers(0, n_classes, shape)
    q = rng.random((*shape, n_classes)) ** 3
    return (q / q.sum(-1, keepdims=True)).astype(dtype)


# -- finite input --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["index", "probabilities"])
@pytest.mark.parametrize("shape,n_classes", [((4, 3), 5), ((1,), 1), ((2,), 1000)])
def test_loss_finite_input(backend, float_dtype, rng, kind, shape, n_classes, measured):
    z = (rng.standard_normal((*shape, n_classes)) * 3).astype(float_dtype)
    got = check_loss(backend, z, _targets(rng, shape, n_classes, kind, float_dtype), measured=measured)
    assert got.shape == shape


@pytest.mark.parametrize("axis", [0, -2])
def test_loss_class_axis(backend, rng, axis, measured):
    z = (rng.standard_normal((3, 4, 5)) * 3).astype(np.float32)
    shape = tuple(s for i, s in enumerate(z.shape) if i != axis % 3)
    check_loss(backend, z, rng.integers(0, z.shape[axis], shape), axis=axis, measured=measured)
    q = np.moveaxis(_targets(rng, shape, z.shape[axis], "probabilities", "float32"), -1, axis)
    check_loss(backend, z, q, axis=axis, measured=measured)


# (reduction, target kind, label_smoothing, class weights): each option with each reduction and kind
OPTION_CASES = [
    ("none", "index", 0.25, True),
    ("none", "index", 1.0, False),
    ("mean", "index", 0.0, True),
    ("mean", "index", 0.25, False),
    ("sum", "index", 0.1, True),
    ("none", "probabilities", 1.0, True),
    ("sum", "probabilities", 0.25, True),
    ("mean", "probabilities", 0.0, False),
]


@pytest.mark.parametrize("reduction,kind,smoothing,weighted", OPTION_CASES, ids=["-".join(map(str, c)) for c in OPTION_CASES])
def test_loss_options(backend, rng, reduction, kind, smoothing, weighted, measured):
    z = (rng.standard_normal((6, 7)) * 3).astype(np.float32)
    target = _targets(rng, (6,), 7, kind, "float32")
    kw = {"ignore_index": IGNORE} if kind == "index" else {}
    if kind == "index":
        target[[1, 4]] = IGNORE
    weight = (rng.random(7) + 0.1).astype(np.float32) if weighted else None
    check_loss(backend, z, target, class_weight=weight, label_smoothing=smoothing, reduction=reduction, measured=measured, **kw)


# -- masks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,smoothing", [("index", 0.0), ("index", 0.3), ("probabilities", 0.3)])
def test_loss_where(backend, rng, kind, smoothing, measured):
    z = (rng.standard_normal((5, 6)) * 3).astype(np.float32)
    where = np.ones((5, 6), bool)
    where[:, 2] = False  # a class masked everywhere
    where[3] = False  # a fully masked example
    where[4, :4] = False
    target = _targets(rng, (5,), 6, kind, "float32")
    if kind == "index":
        target[:] = [0, 2, 5, 1, 5]  # 2 is masked: +inf; example 3 is fully masked: +inf
    else:
        target[:, 2] = 0
        target[4] = [0, 0, 0, 0, 0.5, 0.5]
        target /= target.sum(-1, keepdims=True)
    got = check_loss(backend, z, target, where=where, label_smoothing=smoothing, measured=measured)
    if kind == "index":
        assert np.isinf(got[1]) and np.isinf(got[3]) and np.isfinite(got[[0, 2, 4]]).all()


def test_loss_where_broadcasts(backend, rng, measured):
    z = (rng.standard_normal((3, 4, 5)) * 3).astype(np.float32)
    where = np.array([True, True, False, True, True])
    check_loss(backend, z, rng.integers(0, 2, (3, 4)), where=where, label_smoothing=0.2, measured=measured)


def test_loss_masked_classes_take_no_part(backend, rng):
    """Masking a class is dropping it: the same losses as the logits without that class."""
    z = (rng.standard_normal((4, 6)) * 3).astype(np.float32)
    keep = np.array([True, True, False, True, False, True])
    target = np.array([0, 3, 5, 1])
    masked = backend.numpy(
        smx.cross_entropy(backend.asarray(z), _ints(backend, target), where=backend.asarray(keep), label_smoothing=0.2)
    )
    dropped = backend.numpy(smx.cross_entropy(backend.asarray(z[:, keep]), _ints(backend, [0, 2, 3, 1]), label_smoothing=0.2))
    np.testing.assert_allclose(masked, dropped, rtol=1e-6)


# -- special values ------------------------------------------------------------------------------


def test_loss_special_values(backend, measured):
    inf, nan = np.inf, np.nan
    z = np.array(
        [
            [0.0, 1.0, 2.0],  # an index outside [0, C): NaN
            [0.0, 1.0, 2.0],  # ignored: 0
            [0.0, nan, 2.0],  # NaN in the slice: NaN
            [0.0, inf, 2.0],  # +inf in the slice: NaN
            [-inf, -inf, -inf],  # all -inf, no mask: NaN
            [0.0, -inf, 2.0],  # the target's logit is -inf: +inf
            [1e30, 0.0, -1e30],  # huge logits, no overflow
        ],
        dtype=np.float32,
    )
    target = np.array([3, IGNORE, 0, 0, 0, 1, 2])
    got = check_loss(backend, z, target, ignore_index=IGNORE, measured=measured)
    assert np.isnan(got[[0, 2, 3, 4]]).all() and got[1] == 0 and got[5] == inf and np.isfinite(got[6])
    with_negative = check_loss(backend, z[:1], np.array([-1]), measured=measured)
    assert np.isnan(with_negative).all()


def test_loss_dominant_entry_keeps_relative_precision(backend, float_dtype, measured):
    """A confident, right prediction's loss is log1p(rest), not lse - z[target] rounded to 0."""
    z = np.array([[0.0, -40.0], [30.0, 0.0]], dtype=float_dtype)
    got = check_loss(backend, z, np.array([0, 0]), log_scale=False, measured=measured)
    assert (got > 0).all()


def test_loss_low_precision(backend, low_dtype, rng, measured):
    """float16 and bfloat16 logits are computed in float32 and rounded once."""
    z32 = (rng.standard_normal((4, 300)) * 3).astype(np.float32)
    low = backend.asarray(z32)
    low = backend.namespace(low).astype(low, getattr(backend.namespace(low), low_dtype))
    target = rng.integers(0, 300, 4)
    y = smx.cross_entropy(low, _ints(backend, target), label_smoothing=0.1)
    assert dtype_name(y.dtype) == low_dtype
    exact = backend.numpy(backend.namespace(low).astype(low, backend.namespace(low).float32))
    expected = oracle.cross_entropy(exact, target, label_smoothing=0.1)
    got = backend.numpy(backend.namespace(y).astype(y, backend.namespace(y).float32)).astype(np.float64)
    relative = float(np.max(np.abs(got - expected.astype(np.float64)) / np.abs(expected.astype(np.float64))))
    err = measured(relative / float(oracle.finfo(low_dtype).eps))  # in eps of the low dtype, as the report says
    assert err <= oracle.ROUNDED_TOLERANCE_ULPS, f"{err:.3g} eps of {low_dtype}"


def test_loss_integer_logits_promote(backend):
    y = smx.cross_entropy(backend.asarray(np.array([[1, 2, 3]])), _ints(backend, [2]))
    assert backend.dtype_name(y) == backend.default_float()


def test_loss_inputs_not_mutated(backend, rng):
    z_np = (rng.standard_normal((3, 4)) * 3).astype(np.float32)
    q_np = _targets(rng, (3,), 4, "probabilities", "float32")
    z, q = backend.asarray(z_np), backend.asarray(q_np)
    smx.cross_entropy(z, q, label_smoothing=0.2, where=backend.asarray(np.array([True, False, True, True])))
    np.testing.assert_array_equal(backend.numpy(z), z_np)
    np.testing.assert_array_equal(backend.numpy(q), q_np)


# -- against torch.nn.functional.cross_entropy -----------------------------------------------------

# The peer's own numbers on shared cases: where torch is installed beside the backend under test.
TORCH_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("index", {}, "none"),
    ("index", {"label_smoothing": 0.1}, "sum"),
    ("index", {"ignore_index": IGNORE}, "mean"),
    ("index", {"ignore_index": IGNORE, "label_smoothing": 0.3, "weighted": True}, "mean"),
    ("index", {"ignore_index": IGNORE, "label_smoothing": 0.3, "weighted": True}, "none"),
    ("probabilities", {}, "none"),
    ("probabilities", {"label_smoothing": 0.2, "weighted": True}, "mean"),
]


@pytest.mark.parametrize(
    "kind,options,reduction", TORCH_CASES, ids=[f"{k}-{'-'.join(o) or 'plain'}-{r}" for k, o, r in TORCH_CASES]
)
def test_loss_matches_torch(backend, rng, kind, options, reduction, measured):
    import torch
    import torch.nn.functional as F

    z = (rng.standard_normal((8, 11)) * 3).astype(np.float64)
    target = _targets(rng, (8,), 11, kind, "float64")
    options = dict(options)
    weight = (rng.random(11) + 0.1) if options.pop("weighted", False) else None
    if "ignore_index" in options:
        target[[0, 5]] = IGNORE
    ours_dtype = "float64" if "float64" in backend.dtypes() else "float32"
    z_ours = z.astype(ours_dtype)
    t_ours = target if kind == "index" else target.astype(ours_dtype)
    w_ours = None if weight is None else weight.astype(ours_dtype)
    ours = smx.cross_entropy(
        backend.asarray(z_ours),
        _ints(backend, t_ours) if kind == "index" else backend.asarray(t_ours),
        class_weight=None if w_ours is None else backend.asarray(w_ours),
        reduction=reduction,
        **options,
    )
    theirs = F.cross_entropy(
        torch.from_numpy(z_ours.astype(np.float64)),
        torch.from_numpy(t_ours if kind == "index" else t_ours.astype(np.float64)),
        weight=None if w_ours is None else torch.from_numpy(w_ours.astype(np.float64)),
        reduction=reduction,
        **options,
    ).numpy()
    oracle.assert_close(backend.numpy(ours), theirs, ours_dtype, log_scale=True, record=measured)


if importlib.util.find_spec("torch") is None:  # the peer is not installed beside the backend: nothing to compare
    del test_loss_matches_torch


# -- gradients -----------------------------------------------------------------------------------


def test_loss_transform_equals_eager(backend, transform_name, rng, measured):
    """jit, vmap, compile: the transformed loss equals the oracle; grad, autograd: its gradient
    is softmax minus the target (the target here: probabilities made from the logits themselves,
    held constant, so that the loss keeps the shape vmap asks for)."""
    z_np = (rng.standard_normal((4, 6, 5)) * 3).astype(np.float32)
    q_np = oracle.softmax(0.5 * z_np.astype(np.float64), (2,)).astype(np.float32)
    q = backend.asarray(q_np)
    if transform_name in GRADIENT_TRANSFORMS:
        f = backend.spec.transforms[transform_name](lambda z: smx.cross_entropy(z, q, label_smoothing=0.1))
        g_np = rng.random((4, 6)).astype(np.float32)
        got = backend.numpy(f(backend.asarray(z_np), backend.asarray(g_np)))
        expected = oracle.cross_entropy_gradient(z_np, q_np, -1, None, None, 0.1, None, g_np).astype(np.float64)
        err = measured(float(np.abs(got - expected).max() / np.finfo(np.float32).eps))
        assert err <= oracle.GRADIENT_TOLERANCE_ULPS, f"gradient off by {err:.1f} eps"
    else:
        f = backend.spec.transforms[transform_name](lambda z: smx.cross_entropy(z, smx.softmax(0.5 * z), label_smoothing=0.1))
        got = backend.numpy(f(backend.asarray(z_np)))
        expected = oracle.cross_entropy(z_np, q_np, label_smoothing=0.1)
        oracle.assert_close(got, expected, "float32", log_scale=True, record=measured)


def test_loss_gradient(backend, gradient_name, rng, measured):
    """The gradient with respect to the logits is softmax minus the weighted, smoothed target:
    finite at masked classes and a masked target, zero for ignored examples and indices outside
    [0, C), even where their logits hold NaN."""
    z_np = (rng.standard_normal((6, 5)) * 3).astype(np.float32)
    z_np[1] = np.nan  # ignored
    z_np[5] = np.nan  # outside [0, C)
    where = np.array([True, True, False, True, True])
    target = np.array([2, IGNORE, 0, 4, 1, 7])  # example 0: its target is masked
    weight = np.array([1.0, 2.0, 0.5, 1.5, 1.0], np.float32)
    g_np = rng.random(6).astype(np.float32)
    w_b, t_b = backend.asarray(where), _ints(backend, target)
    cw = backend.asarray(weight)
    f = backend.spec.transforms[gradient_name](
        lambda z: smx.cross_entropy(z, t_b, where=w_b, class_weight=cw, label_smoothing=0.2, ignore_index=IGNORE)
    )
    got = backend.numpy(f(backend.asarray(z_np), backend.asarray(g_np)))
    assert np.isfinite(got).all(), got
    expected = oracle.cross_entropy_gradient(z_np, target, -1, where, weight, 0.2, IGNORE, g_np).astype(np.float64)
    err = measured(float(np.abs(got - expected).max() / np.finfo(np.float32).eps))
    assert err <= oracle.GRADIENT_TOLERANCE_ULPS, f"gradient off by {err:.1f} eps"


# -- the error contract --------------------------------------------------------------------------

LOSS_CONTRACT = [
    (
        "target of the wrong shape",
        lambda b: smx.cross_entropy(b.asarray(np.zeros((2, 3))), _ints(b, [0, 1, 2])),
        ValueError,
        r"^cross_entropy: target has shape \(3,\), expected \(2,\) \(class indices: logits' shape without the class axis\)",
    ),
    (
        "probabilities of the wrong shape",
        lambda b: smx.cross_entropy(b.asarray(np.zeros((2, 3))), b.asarray(np.zeros((2, 4)))),
        ValueError,
        r"^cross_entropy: target has shape \(2, 4\), expected \(2, 3\) \(probabilities: logits' shape\)",
    ),
    (
        "boolean target",
        lambda b: smx.cross_entropy(b.asarray(np.zeros((2, 3))), b.asarray(np.zeros(2, bool))),
        TypeError,
        r"^cross_entropy: target must hold class indices \(an integer dtype\) or probabilities \(a real floating dtype\), "
        r"got dtype bool",
    ),
    (
        "label_smoothing above 1",
        lambda b: smx.cross_entropy(b.asarray(np.zeros((2, 3))), _ints(b, [0, 1]), label_smoothing=1.5),
        ValueError,
        r"^cross_entropy: label_smoothing must lie in \[0, 1\], got 1.5",
    ),
    (
        "label_smoothing below 0",
        lambda b: smx.cross_entropy(b.asarray(np.zeros((2, 3))), _ints(b, [0, 1]), label_smoothing=-0.1),
        ValueError,
        r"^cross_entropy: label_smoothing must lie in \[0, 1\], got -0.1",
    ),
    (
        "ignore_index with probabilities",
        lambda b: smx.cross_entropy(b.asarray(np.zeros((2, 3))), b.asarray(np.full((2, 3), 1 / 3)), ignore_index=-100),
        ValueError,
        r"^cross_entropy: ignore_index applies to class-index targets only; target holds probabilities",
    ),
    (
        "unknown reduction",
        lambda b: smx.cross_entropy(b.asarray(np.zeros((2, 3))), _ints(b, [0, 1]), reduction="avg"),
        ValueError,
        r"^cross_entropy: reduction must be one of 'none', 'sum', 'mean', got 'avg'",
    ),
    (
        "class_weight of the wrong shape",
        lambda b: smx.cross_entropy(b.asarray(np.zeros((2, 3))), _ints(b, [0, 1]), class_weight=b.asarray(np.ones(4))),
        ValueError,
        r"^cross_entropy: class_weight has shape \(4,\), expected \(3,\) \(one weight per class\)",
    ),
    (
        "a tuple of class axes",
        lambda b: smx.cross_entropy(b.asarray(np.zeros((2, 3))), _ints(b, [0, 1]), axis=(0, 1)),  # type: ignore[arg-type]
        TypeError,
        r"^cross_entropy: axis must be one int \(the class axis\), got \(0, 1\)",
    ),
    (
        "no class axis",
        lambda b: smx.cross_entropy(b.asarray(np.array(1.0)), _ints(b, 0)),
        ValueError,
        r"^cross_entropy: logits must have a class axis, got a 0-d array",
    ),
    (
        "linear: weight of the wrong width",
        lambda b: smx.linear_cross_entropy(b.asarray(np.zeros((2, 3))), b.asarray(np.zeros((5, 4))), _ints(b, [0, 1])),
        ValueError,
        r"^linear_cross_entropy: weight has shape \(5, 4\), expected \(V, 3\) \(classes by h's last axis\)",
    ),
    (
        "linear: probability targets",
        lambda b: smx.linear_cross_entropy(b.asarray(np.zeros((2, 3))), b.asarray(np.zeros((5, 3))), b.asarray(np.zeros(2))),
        TypeError,
        r"^linear_cross_entropy: target must hold class indices \(an integer dtype\), got dtype float64",
    ),
    (
        "linear: bad chunk_size",
        lambda b: smx.linear_cross_entropy(
            b.asarray(np.zeros((2, 3))), b.asarray(np.zeros((5, 3))), _ints(b, [0, 1]), chunk_size=0
        ),
        ValueError,
        r"^linear_cross_entropy: chunk_size must be a positive int \(logits held at once\), got 0",
    ),
]


@pytest.mark.parametrize("case,call,exc,message", LOSS_CONTRACT, ids=[c[0] for c in LOSS_CONTRACT])
def test_loss_error_contract(backend, case, call, exc, message):
    if "float64" in message and "float64" not in backend.dtypes():
        message = message.replace("float64", "float32")
    with pytest.raises(exc, match=message):
        call(backend)


# -- the linear loss -----------------------------------------------------------------------------

LINEAR_CASES = [
    ("whole rows", {}, None, "none"),
    ("classes in chunks", {"label_smoothing": 0.2, "ignore_index": IGNORE}, 5, "mean"),
    ("one row at a time", {"bias": True, "weighted": True}, 13, "sum"),
    ("masked classes in chunks", {"where": True, "label_smoothing": 0.1, "weighted": True}, 7, "mean"),
]


@pytest.mark.parametrize("case,options,chunk_size,reduction", LINEAR_CASES, ids=[c[0] for c in LINEAR_CASES])
def test_linear_loss(backend, rng, case, options, chunk_size, reduction, measured):
    """linear_cross_entropy(h, W, y) is cross_entropy(h @ W.T + b, y), whatever the chunks."""
    options = dict(options)
    # few rows: on a lazy library each tile is more of the graph (Cubed plans every operation, and
    # took about 3 s a tile: chunks of classes are taken a row at a time)
    h = (rng.standard_normal((2, 2, 8)) * 0.7).astype(np.float32)
    weight = (rng.standard_normal((13, 8)) * 0.7).astype(np.float32)
    target = rng.integers(0, 13, (2, 2))
    target[0, 0] = IGNORE
    bias = rng.standard_normal(13).astype(np.float32) if options.pop("bias", False) else None
    cw = (rng.random(13) + 0.1).astype(np.float32) if options.pop("weighted", False) else None
    where = None
    if options.pop("where", False):
        where = np.ones(13, bool)
        where[[2, 7, 8, 9, 10, 11, 12]] = False  # the second chunk (7 to 13) holds one class taking part
        target[(target == 2) | (target >= 7)] = 3
    options.setdefault("ignore_index", IGNORE)
    y = smx.linear_cross_entropy(
        backend.asarray(h),
        backend.asarray(weight),
        _ints(backend, target),
        bias=None if bias is None else backend.asarray(bias),
        where=None if where is None else backend.asarray(where),
        class_weight=None if cw is None else backend.asarray(cw),
        reduction=reduction,
        chunk_size=chunk_size,
        **options,
    )
    assert backend.owns(y)
    z = h.astype(np.longdouble) @ weight.astype(np.longdouble).T + (0 if bias is None else bias)
    expected = oracle.cross_entropy(z, target, -1, where, cw, reduction=reduction, **options)
    oracle.assert_close(backend.numpy(y), expected, "float32", log_scale=True, record=measured)


def test_linear_loss_gradient(backend, gradient_name, rng, measured):
    """The gradient of the linear loss with respect to h: the logits' gradient (softmax minus
    target) carried through the product, whatever the chunks."""
    h = (rng.standard_normal((6, 4)) * 0.7).astype(np.float32)
    weight = (rng.standard_normal((9, 4)) * 0.7).astype(np.float32)
    target = np.array([0, IGNORE, 8, 3, 3, 5])
    g_np = rng.random(6).astype(np.float32)
    t_b = _ints(backend, target)
    w_b = backend.asarray(weight)
    f = backend.spec.transforms[gradient_name](
        lambda h_: smx.linear_cross_entropy(h_, w_b, t_b, label_smoothing=0.1, ignore_index=IGNORE, chunk_size=6)
    )
    got = backend.numpy(f(backend.asarray(h), backend.asarray(g_np)))
    z = h.astype(np.longdouble) @ weight.astype(np.longdouble).T
    dz = oracle.cross_entropy_gradient(z, target, -1, None, None, 0.1, IGNORE, g_np)
    expected = (dz @ weight.astype(np.longdouble)).astype(np.float64)
    err = measured(float(np.abs(got - expected).max() / np.abs(expected).max() / np.finfo(np.float32).eps))
    assert err <= oracle.GRADIENT_TOLERANCE_ULPS, f"gradient off by {err:.1f} eps"
