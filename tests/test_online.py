"""softmax_multi.online: the merge is associative and commutative, and chunked equals one-shot."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from softmax_multi import online
from softmax_multi.conformance import oracle

# Within 15 of each other, x - max stays below 32, where rounding it costs at most 8 eps: the
# formula's own accuracy (the reference's too), checked against the oracle. WIDE adds values
# far apart and non-finite ones, checked against the one-shot computation.
VALUES = st.one_of(st.floats(-15, 15, width=64), st.just(-np.inf))
WIDE = st.one_of(st.floats(-800, 800, width=64), st.sampled_from([-np.inf, np.inf, np.nan, 0.0]))


@st.composite
def rows_and_cuts(draw, elements=VALUES):
    """A (2, n) float64 input, a mask, and cut points splitting the last axis into chunks (some empty)."""
    n = draw(st.integers(1, 24))
    x = draw(hnp.arrays(np.float64, (2, n), elements=elements))
    where = draw(hnp.arrays(np.bool_, (2, n)))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=5)))
    return x, where, [0, *cuts, n]


def _chunks(x, where, edges):
    return [(x[:, a:b], where[:, a:b]) for a, b in itertools.pairwise(edges)]


def _stats(x, where, edges):
    return [online.chunk_stats(c, -1, where=w) for c, w in _chunks(x, where, edges)]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(rows_and_cuts())
def test_chunked_equals_one_shot(case):
    x, where, edges = case
    merged = online.merge_all(_stats(x, where, edges))
    oracle.assert_close(
        online.finish_logsumexp(merged), oracle.logsumexp(x, (1,), where, keepdims=True), "float64", log_scale=True
    )
    y = np.concatenate([online.finish_softmax(c, merged, where=w) for c, w in _chunks(x, where, edges)], axis=1)
    oracle.assert_close(y, oracle.softmax(x, (1,), where), "float64")
    z = np.concatenate([online.finish_log_softmax(c, merged, where=w) for c, w in _chunks(x, where, edges)], axis=1)
    oracle.assert_close(z, oracle.log_softmax(x, (1,), where), "float64", log_scale=True)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(rows_and_cuts(WIDE))
def test_chunked_equals_one_shot_far_apart_inf_and_nan(case):
    x, where, edges = case
    merged = online.merge_all(_stats(x, where, edges))
    whole = online.chunk_stats(x, where=where)
    oracle.assert_close(online.finish_logsumexp(merged), online.finish_logsumexp(whole), "float64", log_scale=True)
    y = np.concatenate([online.finish_softmax(c, merged, where=w) for c, w in _chunks(x, where, edges)], axis=1)
    oracle.assert_close(y, online.finish_softmax(x, whole, where=where), "float64")
    z = np.concatenate([online.finish_log_softmax(c, merged, where=w) for c, w in _chunks(x, where, edges)], axis=1)
    oracle.assert_close(z, online.finish_log_softmax(x, whole, where=where), "float64", log_scale=True)
    # The special values land where the semantics table puts them (the oracle decides those).
    special = ~np.isfinite(oracle.softmax(x, (1,), where))
    np.testing.assert_array_equal(np.isnan(y[special]), np.isnan(oracle.softmax(x, (1,), where)[special]))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(rows_and_cuts(WIDE), st.randoms(use_true_random=False))
def test_merge_is_associative_and_commutative(case, random):
    x, where, edges = case
    stats = _stats(x, where, edges)
    in_order = online.merge_all(stats)
    random.shuffle(stats)
    shuffled = stats[0]
    for s in stats[1:]:  # left to right, in another order: a different grouping too
        shuffled = online.merge(s, shuffled) if random.random() < 0.5 else online.merge(shuffled, s)
    np.testing.assert_array_equal(shuffled.m, in_order.m)
    np.testing.assert_array_equal(np.isnan(shuffled.s), np.isnan(in_order.s))
    ok = ~np.isnan(in_order.s)
    oracle.assert_close(shuffled.s[ok], in_order.s[ok], "float64")


def test_empty_and_fully_masked_chunks_change_nothing():
    x = np.array([[1.0, 2.0, 3.0]])
    base = online.chunk_stats(x)
    empty = online.chunk_stats(np.zeros((1, 0)))
    masked = online.chunk_stats(np.array([[5.0]]), where=np.array([[False]]))
    for other in (empty, masked):
        for merged in (online.merge(base, other), online.merge(other, base)):
            np.testing.assert_array_equal(merged.m, base.m)
            np.testing.assert_array_equal(merged.s, base.s)
    both = online.merge(empty, masked)
    assert both.m[0, 0] == -np.inf and both.s[0, 0] == 0.0  # no NaN from -inf - -inf
    assert online.finish_logsumexp(both)[0, 0] == -np.inf


def test_no_warnings_on_non_finite_input():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st_ = online.chunk_stats(np.array([[-np.inf, -np.inf], [np.inf, 1.0], [np.nan, 1.0]]))
        online.finish_softmax(np.array([[-np.inf, -np.inf], [np.inf, 1.0], [np.nan, 1.0]]), st_)
        online.finish_log_softmax(np.zeros((3, 2)), online.merge(st_, st_))
        online.finish_logsumexp(st_)


def test_any_backend(backend):
    """Written against the array API: the same on every backend."""
    x = np.random.default_rng(0).standard_normal((3, 10))
    a, b = online.chunk_stats(backend.asarray(x[:, :4])), online.chunk_stats(backend.asarray(x[:, 4:]))
    merged = online.merge(a, b)
    oracle.assert_close(
        backend.numpy(online.finish_logsumexp(merged)), oracle.logsumexp(x, (1,), keepdims=True), "float64", log_scale=True
    )
    y = online.finish_softmax(backend.asarray(x[:, 4:]), merged)
    assert backend.owns(y)
    oracle.assert_close(backend.numpy(y), oracle.softmax(x, (1,))[:, 4:], "float64")


def test_merge_all_needs_something():
    with pytest.raises(ValueError, match="at least one"):
        online.merge_all([])
