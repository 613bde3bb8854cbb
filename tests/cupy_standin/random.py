"""``cupy.random``: CuPy's ``Generator`` (no ``normal``, ``uniform``, ``permutation``,
``choice``, ``shuffle``) and the legacy ``RandomState`` and module functions.

Draws come from NumPy generators (other streams than cuRAND's) and land on the device:
no transfer is counted.
"""

from __future__ import annotations

import numpy as np

from .core import ndarray, unwrap, wrap
from .counters import fail_if_missing


def _size(size):
    return () if size is None else size


class BitGenerator:
    """CuPy's XORWOW stand-in: a seed; no host-readable state (as in CuPy)."""

    def __init__(self, seed=None) -> None:
        fail_if_missing("curand", "CuPy failed to load libcurand.so.10")
        if isinstance(seed, ndarray):
            raise TypeError("seed must be a host integer")
        self._rng = np.random.default_rng(seed)


XORWOW = MRG32k3a = Philox4x3210 = BitGenerator


class Generator:
    """CuPy's ``Generator``: exactly its methods and keyword arguments."""

    def __init__(self, bit_generator: BitGenerator) -> None:
        self.bit_generator = bit_generator
        self._rng = bit_generator._rng

    def random(self, size=None, dtype=np.float64, out=None):
        y = self._rng.random(_size(size), dtype=np.float64)
        return _into(out, wrap(np.asarray(y)).astype(dtype, copy=False))

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        if np.dtype(dtype).char not in "fd":
            raise TypeError(f"Unsupported dtype {np.dtype(dtype).name} for standard_normal")
        return _into(out, wrap(np.asarray(self._rng.standard_normal(_size(size), dtype=dtype))))

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        for v in (low, high):
            if isinstance(v, ndarray):
                int(v)  # CuPy reads the bound on the host (counted as a sync)
        low, high = (unwrap(low), unwrap(high))
        return wrap(
            np.asarray(self._rng.integers(low, high, _size(size), dtype=dtype, endpoint=endpoint))
        )

    def standard_exponential(self, size=None, dtype=np.float64, method="inv", out=None):
        y = np.asarray(self._rng.standard_exponential(_size(size)))
        return _into(out, wrap(y).astype(dtype, copy=False))

    def exponential(self, scale=1.0, size=None):
        return self.standard_exponential(size) * scale

    def beta(self, a, b, size=None, dtype=np.float64):
        return wrap(np.asarray(self._rng.beta(a, b, _size(size)))).astype(dtype, copy=False)

    def poisson(self, lam=1.0, size=None):
        return wrap(np.asarray(self._rng.poisson(lam, _size(size))))

    def gamma(self, shape, scale=1.0, size=None):
        return wrap(np.asarray(self._rng.gamma(unwrap(shape), scale, _size(size))))

    def standard_gamma(self, shape, size=None, dtype=np.float64, out=None):
        y = np.asarray(self._rng.standard_gamma(unwrap(shape), _size(size)))
        return _into(out, wrap(y).astype(dtype, copy=False))


def _into(out, y):
    if out is None:
        return y
    out[...] = y
    return out


def default_rng(seed=None) -> Generator:
    return Generator(BitGenerator(seed))


class RandomState:
    """The legacy API (cuRAND's host library in CuPy)."""

    def __init__(self, seed=None, method=None) -> None:
        fail_if_missing("curand", "CuPy failed to load libcurand.so.10")
        self._rs = np.random.RandomState(seed)

    def seed(self, seed=None) -> None:
        self._rs.seed(seed)

    def _draw(self, name, *args, dtype=None, **kwargs):
        y = np.asarray(getattr(self._rs, name)(*args, **kwargs))
        return wrap(y if dtype is None else y.astype(dtype))

    def rand(self, *size, dtype=float):
        return self._draw("random_sample", size, dtype=dtype)

    def randn(self, *size, dtype=float):
        return self._draw("standard_normal", size, dtype=dtype)

    def random_sample(self, size=None, dtype=float):
        return self._draw("random_sample", size, dtype=dtype)

    def standard_normal(self, size=None, dtype=float):
        return self._draw("standard_normal", size, dtype=dtype)

    def normal(self, loc=0.0, scale=1.0, size=None, dtype=float):
        return self._draw("normal", unwrap(loc), unwrap(scale), size, dtype=dtype)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=float):
        return self._draw("uniform", low, high, size, dtype=dtype)

    def randint(self, low, high=None, size=None, dtype="l"):
        return self._draw("randint", low, high, size, dtype=dtype)

    def permutation(self, num):
        return self._draw("permutation", num)

    def choice(self, a, size=None, replace=True, p=None):
        return self._draw("choice", unwrap(a), size, replace, unwrap(p))

    def shuffle(self, a) -> None:
        self._rs.shuffle(a._a)


_global: RandomState | None = None


def get_random_state() -> RandomState:
    """The module-level RandomState (made at first use, as CuPy does)."""
    global _global
    if _global is None:
        _global = RandomState()
    return _global


def seed(seed=None) -> None:
    get_random_state().seed(seed)


def rand(*size, dtype=float):
    return _global.rand(*size, dtype=dtype)


def randn(*size, dtype=float):
    return _global.randn(*size, dtype=dtype)


def random(size=None, dtype=float):
    return _global.random_sample(size, dtype=dtype)


random_sample = random


def standard_normal(size=None, dtype=float):
    return _global.standard_normal(size, dtype=dtype)


def normal(loc=0.0, scale=1.0, size=None, dtype=float):
    return _global.normal(loc, scale, size, dtype=dtype)


def uniform(low=0.0, high=1.0, size=None, dtype=float):
    return _global.uniform(low, high, size, dtype=dtype)


def randint(low, high=None, size=None, dtype="l"):
    return _global.randint(low, high, size, dtype=dtype)


def permutation(a):
    return _global.permutation(a)


def choice(a, size=None, replace=True, p=None):
    return _global.choice(a, size, replace, p)


def shuffle(a) -> None:
    get_random_state().shuffle(a)
