"""Anomaly mode: stop at the first op whose forward or backward makes a NaN or an Inf.

Inside ``with tinyllm.detect_anomaly():`` every op records the stack where it was created,
and the engine checks each forward output and each backward gradient. The error names the op
and shows where it was created, which is where a learner needs to look.
"""

from __future__ import annotations

import os
import threading
import traceback

from tinyllm.backend import get_array_module


class _State(threading.local):
    enabled = False  # the default of every thread (a class attribute: a cheap lookup)


_state = _State()


def is_anomaly_enabled() -> bool:
    return _state.enabled


class detect_anomaly:
    """Context manager: raise at the first NaN/Inf produced by an op, forward or backward."""

    def __enter__(self) -> detect_anomaly:
        self.previous = is_anomaly_enabled()
        _state.enabled = True
        return self

    def __exit__(self, *exc) -> None:
        _state.enabled = self.previous


def creation_stack() -> str:
    """The user's stack at op creation (the engine's own frames dropped)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith(package)]
    return "".join(traceback.format_list(frames[-6:]))


def check_finite(op_name: str, phase: str, arrays, where: str | None) -> None:
    """Raise FloatingPointError if any of ``arrays`` holds a NaN or Inf."""
    for i, array in enumerate(arrays):
        if array is None or array.dtype.kind != "f":
            continue
        xp = get_array_module(array)
        if not bool(xp.isfinite(array).all()):
            bad = "NaN" if bool(xp.isnan(array).any()) else "Inf"
            label = "output" if phase == "forward" else "gradient for input"
            msg = f"anomaly: {op_name}.{phase} produced {bad} in its {label} {i}"
            if where:
                msg += f"; the op was created at:\n{where}"
            raise FloatingPointError(msg)
