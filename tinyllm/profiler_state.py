"""The hook the engine calls when a profiler is running (``tinyllm.profile()``).

``active`` is None, or an object with ``record_forward(op, seconds, saved_bytes)`` and
``record_backward(op, seconds)``. Function.apply and the backward loop read it once per op,
so a program that never profiles pays one attribute lookup per op.
"""

active = None
