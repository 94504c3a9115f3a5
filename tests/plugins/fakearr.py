"""A throwaway third-party array library with its own softmax-multi plugin: NumPy data in a class of
its own, a namespace of the few functions softmax-multi needs, and native kernels that are the
NumPy backend's (each call recorded in ``calls``). ``spec_for`` makes the plugin of a subclass
(tests/plugins/fake_flaws.py gives each flawed plugin a class of its own)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np

from softmax_multi import BackendSpec, linear, reference
from softmax_multi.backends import numpy_backend

__version__ = "1.0"
calls: list[str] = []


class FakeArray:
    def __init__(self, data, device="cpu"):
        self.data = np.asarray(data)
        self.device = device

    dtype = property(lambda self: self.data.dtype)
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)

    def __getitem__(self, key):
        return type(self)(self.data[key], self.device)


def namespace_of(cls: type) -> SimpleNamespace:
    """The few array-API functions softmax-multi's core calls, making arrays of ``cls``."""
    return SimpleNamespace(
        isdtype=np.isdtype,
        finfo=np.finfo,
        float32=np.dtype("float32"),
        float64=np.dtype("float64"),
        astype=lambda a, dtype: cls(a.data.astype(dtype)),
        asarray=lambda obj, dtype=None, device=None: cls(np.asarray(obj, dtype=dtype)),
        broadcast_to=lambda a, shape: cls(np.broadcast_to(a.data, shape)),
        result_type=np.result_type,
        __array_namespace_info__=np.__array_namespace_info__,
    )


def _data(a):
    return None if a is None else a.data


def _plain(a, cls):
    """An argument as NumPy's loss takes it: the data of a fake array, also inside the options."""
    if isinstance(a, linear.Options):
        return a._replace(**{k: v.data for k, v in a._asdict().items() if isinstance(v, cls)})
    return a.data if isinstance(a, cls) else a


def spec_for(cls: type, name: str, **changes) -> BackendSpec:
    """The plugin of arrays of ``cls``, under ``name``; ``changes`` replace its fields."""
    namespace = namespace_of(cls)

    def native(func):
        def run(x, axes, where=None, *keepdims):
            calls.append(func)
            return cls(getattr(numpy_backend, func)(x.data, axes, _data(where), *keepdims))

        return run

    def weighted(x, axes, where, keepdims, b, return_sign):
        calls.append("weighted_logsumexp")
        r = reference.logsumexp(x.data, axes, _data(where), keepdims, _data(b), return_sign)
        return tuple(cls(v) for v in r) if return_sign else cls(r)

    def loss(func):
        def run(*args):
            calls.append(func)
            plain = getattr(numpy_backend.spec, func)(*(_plain(a, cls) for a in args))
            return cls(plain)

        return run

    spec = BackendSpec(
        name=name,
        array_types=((cls.__module__, cls.__qualname__),),
        module=cls.__module__,
        distribution="fakearr-plugin",
        namespace=lambda x: namespace,
        softmax=native("softmax"),
        log_softmax=native("log_softmax"),
        logsumexp=native("logsumexp"),
        weighted_logsumexp=weighted,
        cross_entropy=loss("cross_entropy"),
        linear_cross_entropy=loss("linear_cross_entropy"),
        from_numpy=lambda a, device=None: cls(np.array(a)),
        to_numpy=lambda x: x.data,
        dtypes=("float32", "float64"),
    )
    return dataclasses.replace(spec, **changes)


spec = spec_for(FakeArray, "fakearr")
