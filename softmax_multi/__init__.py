"""softmax, log_softmax, logsumexp and the cross-entropy loss with one meaning on every array library.

>>> import softmax_multi as smx
>>> smx.softmax([5.0, 7.0, 10.0]).round(4)
array([0.0064, 0.0471, 0.9465])

Importing this package imports no array framework but NumPy; backends are discovered through
the ``softmax_multi.backends`` entry-point group on first use.
"""

from ._api import log_softmax, logsumexp, softmax
from ._args import AxisError
from ._loss_api import cross_entropy, linear_cross_entropy
from .registry import (
    BackendLoadWarning,
    BackendSpec,
    BackendStatus,
    get_backend,
    list_backends,
    register_backend,
)

__all__ = [
    "AxisError",
    "BackendLoadWarning",
    "BackendSpec",
    "BackendStatus",
    "cross_entropy",
    "get_backend",
    "linear_cross_entropy",
    "list_backends",
    "log_softmax",
    "logsumexp",
    "register_backend",
    "softmax",
]
__version__ = "0.2.0"
