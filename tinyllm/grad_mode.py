"""Gradient recording switches: ``no_grad``, ``enable_grad``, ``set_grad_enabled``.

The flag is thread-local (as in Chainer and PyTorch): one thread evaluating under
``no_grad`` does not stop another from recording its graph. Each works as a context manager
and as a decorator.
"""

from __future__ import annotations

import functools
import threading


class _State(threading.local):
    enabled = True  # the default of every thread, read without an AttributeError round trip


_state = _State()


def is_grad_enabled() -> bool:
    """True when ops record the graph for backward (the default)."""
    return _state.enabled


class set_grad_enabled:
    """Turn graph recording on or off; as a context manager, restore on exit."""

    def __init__(self, mode: bool) -> None:
        self.previous = is_grad_enabled()
        self.mode = bool(mode)
        _state.enabled = self.mode

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        _state.enabled = self.previous


class _GradMode:
    mode = True

    def __enter__(self) -> None:
        self.previous = is_grad_enabled()
        _state.enabled = self.mode

    def __exit__(self, *exc) -> None:
        _state.enabled = self.previous

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Context manager / decorator: ops inside record no graph (outputs need no grad)."""

    mode = False


class enable_grad(_GradMode):
    """Context manager / decorator: record the graph even inside ``no_grad``."""

    mode = True
