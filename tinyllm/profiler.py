"""``tinyllm.profile()``: where the time and the memory of a forward and backward go, per op.

::

    with tinyllm.profile() as prof:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    print(prof.table())            # sorted by total time; prof.rows() gives the same as dicts

For every op (``Function`` name) the profiler counts forward and backward calls, sums their
times (``time.perf_counter`` around ``forward``/``backward``, so the time of the engine's own
bookkeeping is not included) and sums the bytes each forward saved for backward — the memory
that a training step holds between its forward and its backward. It also measures the wall
time inside the ``with`` block; the difference between that and the op time is Python
overhead, data preparation, the optimizer, and so on.

The engine calls the profiler through ``tinyllm.profiler_state.active``. Entering a profiler
installs it there and exiting restores the previous one. Profilers nest: an inner profiler
passes every record on to the one it replaced, so an outer profiler sees all the ops of its
block, inner blocks included. A profiler may be entered again after it exited; its counts
accumulate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from tinyllm import profiler_state

__all__ = ["OpStats", "Profiler", "profile"]

SORT_KEYS = ("total", "forward", "backward", "calls", "saved", "name")


@dataclass
class OpStats:
    """What one op cost inside a profiled block (times in seconds)."""

    op: str
    forward_calls: int = 0
    backward_calls: int = 0
    forward_seconds: float = 0.0
    backward_seconds: float = 0.0
    saved_bytes: int = 0

    @property
    def total_seconds(self) -> float:
        return self.forward_seconds + self.backward_seconds


class Profiler:
    """Per-op counts, times and saved bytes of the ops run while it is active.

    Use it through ``tinyllm.profile()``. Attributes: ``stats`` (op name -> OpStats) and
    ``wall_seconds`` (time spent inside the ``with`` block).
    """

    def __init__(self, print_on_exit: bool = False) -> None:
        self.print_on_exit = print_on_exit
        self.stats: dict[str, OpStats] = {}
        self.wall_seconds = 0.0
        self._previous = None
        self._entered_at: float | None = None

    # -- the hook the engine calls (see tinyllm.profiler_state) ----------------------------
    def record_forward(self, op_name: str, seconds: float, saved_bytes: int) -> None:
        entry = self.stats.get(op_name)
        if entry is None:
            entry = self.stats[op_name] = OpStats(op_name)
        entry.forward_calls += 1
        entry.forward_seconds += seconds
        entry.saved_bytes += int(saved_bytes)
        if self._previous is not None:
            self._previous.record_forward(op_name, seconds, saved_bytes)

    def record_backward(self, op_name: str, seconds: float) -> None:
        entry = self.stats.get(op_name)
        if entry is None:
            entry = self.stats[op_name] = OpStats(op_name)
        entry.backward_calls += 1
        entry.backward_seconds += seconds
        if self._previous is not None:
            self._previous.record_backward(op_name, seconds)

    # -- the context manager -----------------------------------------------------------------
    def __enter__(self) -> Profiler:
        if self._entered_at is not None:
            raise RuntimeError(
                "profile: this profiler is already active; use a new tinyllm.profile() to nest"
            )
        self._previous = profiler_state.active
        profiler_state.active = self
        self._entered_at = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.wall_seconds += time.perf_counter() - self._entered_at
        self._entered_at = None
        profiler_state.active = self._previous
        self._previous = None
        if self.print_on_exit:
            print(self.table())

    # -- results ------------------------------------------------------------------------------
    @property
    def op_seconds(self) -> float:
        """Forward plus backward time of all ops."""
        return sum(s.total_seconds for s in self.stats.values())

    def rows(self, sort_by: str = "total") -> list[dict]:
        """One dict per op (the OpStats fields plus ``total_seconds``), sorted by ``sort_by``.

        ``sort_by``: ``total``, ``forward``, ``backward`` (time, largest first), ``calls``
        (forward calls), ``saved`` (bytes) or ``name``.
        """
        if sort_by not in SORT_KEYS:
            raise ValueError(f"profile: sort_by must be one of {SORT_KEYS}, got {sort_by!r}")
        keys = {
            "total": lambda s: (-s.total_seconds, s.op),
            "forward": lambda s: (-s.forward_seconds, s.op),
            "backward": lambda s: (-s.backward_seconds, s.op),
            "calls": lambda s: (-s.forward_calls, -s.backward_calls, s.op),
            "saved": lambda s: (-s.saved_bytes, s.op),
            "name": lambda s: s.op,
        }
        ordered = sorted(self.stats.values(), key=keys[sort_by])
        return [dict(asdict(s), total_seconds=s.total_seconds) for s in ordered]

    def table(self, sort_by: str = "total") -> str:
        """The rows as a text table ready to print, with totals and the wall time."""
        from tinyllm.viz import format_bytes

        op_total = self.op_seconds
        header = (
            f"{'op':<28} {'fwd calls':>9} {'bwd calls':>9} {'fwd ms':>10} {'bwd ms':>10} "
            f"{'total ms':>10} {'% ops':>6} {'saved':>10}"
        )
        lines = [header, "-" * len(header)]
        for r in self.rows(sort_by):
            share = 100 * r["total_seconds"] / op_total if op_total > 0 else 0.0
            lines.append(
                f"{r['op'][:28]:<28} {r['forward_calls']:>9} {r['backward_calls']:>9} "
                f"{1e3 * r['forward_seconds']:>10.3f} {1e3 * r['backward_seconds']:>10.3f} "
                f"{1e3 * r['total_seconds']:>10.3f} {share:>6.1f} "
                f"{format_bytes(r['saved_bytes']):>10}"
            )
        lines.append("-" * len(header))
        forward_calls = sum(s.forward_calls for s in self.stats.values())
        backward_calls = sum(s.backward_calls for s in self.stats.values())
        lines.append(
            f"{'all ops':<28} {forward_calls:>9} {backward_calls:>9} "
            f"{1e3 * sum(s.forward_seconds for s in self.stats.values()):>10.3f} "
            f"{1e3 * sum(s.backward_seconds for s in self.stats.values()):>10.3f} "
            f"{1e3 * op_total:>10.3f} {100.0 if op_total > 0 else 0.0:>6.1f} "
            f"{format_bytes(sum(s.saved_bytes for s in self.stats.values())):>10}"
        )
        wall = self.wall_seconds
        if self._entered_at is not None:  # asked from inside the block
            wall += time.perf_counter() - self._entered_at
        outside = max(wall - op_total, 0.0)
        lines.append(
            f"wall time {1e3 * wall:.3f} ms: ops {1e3 * op_total:.3f} ms, "
            f"other (Python, data, optimizer) {1e3 * outside:.3f} ms"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Profiler: {len(self.stats)} ops, wall {self.wall_seconds:.4f} s>"


def profile(print_on_exit: bool = False) -> Profiler:
    """A profiler to use as ``with tinyllm.profile() as prof:`` (see the module docstring).

    With ``print_on_exit`` the table is printed when the block ends.
    """
    return Profiler(print_on_exit=print_on_exit)
