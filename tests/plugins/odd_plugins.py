"""Plugins that misbehave in the registry: not a spec, a thief of a built-in's class, a kernel that raises."""

from __future__ import annotations

import dataclasses

from fakearr import spec as good

spec = 42  # an entry point that gives something else than a BackendSpec
steal = None
thief = dataclasses.replace(good, name="thief", array_types=(("numpy", "ndarray"),))


def _boom(x, axes, where=None):
    raise RuntimeError("kernel exploded")


exploding = dataclasses.replace(good, name="exploding", softmax=_boom)

# a plugin for a library that is not installed here: listed as such, failing nothing
absent = dataclasses.replace(
    good, name="absent", array_types=(("nosuchlib", "Array"),), module="nosuchlib", distribution="nosuchlib"
)
