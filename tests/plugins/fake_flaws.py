"""Flaws a conformance suite must catch: each a plugin ``fake_<flaw>`` of an array class of its own
(a subclass of fakearr's), whose softmax is broken in one way (the other functions stay correct)."""

from __future__ import annotations

import numpy as np
from fakearr import FakeArray, spec_for


def _good(x, axes, where=None):
    """The correct softmax, on the NumPy data of any fake array."""
    from softmax_multi.backends import numpy_backend

    return type(x)(numpy_backend.softmax(x.data, axes, None if where is None else where.data))


def no_max_subtraction(x, axes, where=None):
    if where is not None:
        return _good(x, axes, where)
    e = np.exp(x.data)
    return type(x)(e / e.sum(axes, keepdims=True))


def sequential_float32_sum(x, axes, where=None):
    """The sum taken in order (a cumulative sum's last entry): float32 long rows drift."""
    if where is not None or len(axes) != 1:
        return _good(x, axes, where)
    e = np.exp(x.data - x.data.max(axes, keepdims=True))
    return type(x)(e / np.take(np.cumsum(e, axis=axes[0]), [-1], axis=axes[0]))


def masked_not_zeroed(x, axes, where=None):
    return _good(x, axes, None)


def fully_masked_nan(x, axes, where=None):
    y = _good(x, axes, where)
    if where is None:
        return y
    return type(x)(np.where(where.data.any(axis=axes, keepdims=True), y.data, np.nan))


def wrong_dtype(x, axes, where=None):
    return type(x)(_good(x, axes, where).data.astype(np.float64))


def input_mutated(x, axes, where=None):
    y = _good(x, axes, where)
    if x.data.flags.writeable:
        np.copyto(x.data, y.data)
    return y


def axis_ignored(x, axes, where=None):
    return _good(x, (x.ndim - 1,) if x.ndim else (), where)


def wrong_library(x, axes, where=None):
    return _good(x, axes, where).data  # a NumPy array in place of the library's own


def wrong_device(x, axes, where=None):
    return type(x)(_good(x, axes, where).data, device="elsewhere")


# flaw -> a check that must fail on it
FLAWS = {
    "no_max_subtraction": "large_inputs_do_not_overflow",
    "sequential_float32_sum": "float32_long_rows",
    "masked_not_zeroed": "where_masks_entries_and_fully_masked_slices",
    "fully_masked_nan": "where_masks_entries_and_fully_masked_slices",
    "wrong_dtype": "finite_input",
    "input_mutated": "input_is_never_mutated",
    "axis_ignored": "axis_forms",
    "wrong_library": "finite_input",
    "wrong_device": "finite_input",
}


def _flawed(flaw: str, name: str | None = None, **changes):
    name = name or flaw
    cls = type(f"FakeArray_{name}", (FakeArray,), {"__module__": __name__})
    globals()[cls.__name__] = cls  # where the registry finds it: (module, class name)
    return spec_for(cls, f"fake_{name}", softmax=globals()[flaw], **changes)


for _flaw in FLAWS:
    globals()[f"spec_{_flaw}"] = _flawed(_flaw)

# No max subtraction, declared for softmax alone: its softmax variants are expected to fail, while
# its log_softmax and logsumexp variants must keep passing (no strict XPASS); a stale name is
# warned about.
spec_known = _flawed(
    "no_max_subtraction",
    "known",
    known_failures={"large_inputs_do_not_overflow:softmax": "no max subtraction", "properties_of_unicorns": "stale"},
)
