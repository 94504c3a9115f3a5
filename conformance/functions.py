"""The three functions under test beside their oracles: one table for every test module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import softmax_multi as smx

from . import oracle


class Function(NamedTuple):
    ours: Callable[..., Any]
    truth: Callable[..., Any]
    log_scale: bool
    """Errors are absolute, scaled by max(1, |y|) (log_softmax, logsumexp), not relative."""


FUNCTIONS = {
    "softmax": Function(smx.softmax, oracle.softmax, False),
    "log_softmax": Function(smx.log_softmax, oracle.log_softmax, True),
    "logsumexp": Function(smx.logsumexp, oracle.logsumexp, True),
}


def axes_of(axis: Any, ndim: int) -> tuple[int, ...]:
    """The sorted non-negative axes an ``axis`` argument names, for the oracle."""
    if axis is None or ndim == 0:
        return tuple(range(ndim))
    return tuple(sorted(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,))))
