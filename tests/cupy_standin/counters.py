"""Counters of what crosses between host and device in the CuPy stand-in, with source lines."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_STANDIN_DIR = str(Path(__file__).resolve().parent)
_SKIP = (_STANDIN_DIR, str(Path(sys.modules["numpy"].__file__).resolve().parent))


def caller() -> str:
    """'path:line (function)' of the first frame outside the stand-in and NumPy."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP):
        frame = frame.f_back
    if frame is None:
        return "?"
    name = frame.f_code.co_filename
    for marker in ("/tinyllm/", "/kernels/", "/models/", "/tests/"):
        if marker in name:
            name = name[name.rindex(marker) + 1 :]
            break
    return f"{name}:{frame.f_lineno} ({frame.f_code.co_name})"


@dataclass
class Counters:
    """Host syncs (the host waits for the device: scalar reads, ``.get()``, sizes that depend
    on values) and transfers, each with the line that caused it."""

    syncs: Counter = field(default_factory=Counter)  # (kind, where) -> n
    h2d: Counter = field(default_factory=Counter)  # where -> n
    d2h: Counter = field(default_factory=Counter)  # where -> n
    launches: Counter = field(default_factory=Counter)  # kernel name -> n

    def sync(self, kind: str) -> None:
        self.syncs[(kind, caller())] += 1

    def to_device(self) -> None:
        self.h2d[caller()] += 1

    def to_host(self, kind: str) -> None:
        where = caller()
        self.d2h[where] += 1
        self.syncs[(kind, where)] += 1

    @property
    def n_syncs(self) -> int:
        return sum(self.syncs.values())

    @property
    def n_h2d(self) -> int:
        return sum(self.h2d.values())

    @property
    def n_d2h(self) -> int:
        return sum(self.d2h.values())

    def reset(self) -> None:
        for c in (self.syncs, self.h2d, self.d2h, self.launches):
            c.clear()

    def report(self) -> str:
        """One line per sync site, most frequent first."""
        lines = [f"{n:4d}  {kind:10s} {where}" for (kind, where), n in self.syncs.most_common()]
        return "\n".join(lines) or "(no host syncs)"


COUNTERS = Counters()

# libraries whose absence the stand-in simulates: "driver", "nvrtc", "cublas", "curand"
FAIL: set[str] = set()


def fail_if_missing(library: str, message: str) -> None:
    """Raise ``message`` when ``library`` is marked missing in ``FAIL``."""
    if library in FAIL:
        raise RuntimeError(message)
