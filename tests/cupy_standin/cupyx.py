"""``cupyx``: ``scatter_add`` and ``cupyx.scipy.special`` (what tinyllm imports)."""

from __future__ import annotations

import types

import numpy as np
import scipy.special

from .core import _index, ndarray, unsupported, unwrap, wrap


def scatter_add(a, slices, value) -> None:
    """``a[slices] += value`` with repeated indices accumulated, in place on the device.

    ``slices`` is read as ``a[slices]`` reads it (CuPy's ``_prepare_slice_list``): host
    index arrays are copied in (an H2D), device ones used as they are.
    """
    if not isinstance(a, ndarray):
        raise unsupported(a)
    np.add.at(a._a, _index(slices), unwrap(value))


def scatter_max(a, slices, value) -> None:
    np.maximum.at(a._a, _index(slices), unwrap(value))


def scatter_min(a, slices, value) -> None:
    np.minimum.at(a._a, _index(slices), unwrap(value))


def _special(name: str):
    fn = getattr(scipy.special, name)

    def special(*args, **kwargs):
        for arg in args:
            if isinstance(arg, np.ndarray):
                raise unsupported(arg)
        return wrap(np.asarray(fn(*unwrap(args), **kwargs)))

    special.__name__ = name
    return special


special = types.ModuleType("cupyx.scipy.special")
for _name in ("erf", "erfc", "erfinv", "erfcinv", "gammaln", "digamma", "ndtr", "ndtri",
              "log_ndtr", "expit", "logit", "logsumexp", "softmax", "log_softmax", "xlogy"):  # fmt: skip
    setattr(special, _name, _special(_name))
scipy_ns = types.ModuleType("cupyx.scipy")
scipy_ns.special = special


def build() -> types.ModuleType:
    """The ``cupyx`` module object."""
    module = types.ModuleType("cupyx")
    module.__doc__ = "CuPy stand-in: cupyx"
    module.scatter_add = scatter_add
    module.scatter_max = scatter_max
    module.scatter_min = scatter_min
    module.scipy = scipy_ns
    return module
