"""tinyllm.profile(): exact per-op counts and saved bytes, nesting, restoring, the table."""

import numpy as np
import pytest

import tinyllm
from tinyllm import profiler_state
from tinyllm.profiler import profile


def test_counts_and_saved_bytes_equal_the_ops_executed():
    x = tinyllm.tensor(np.ones((3, 4)), requires_grad=True)
    w = tinyllm.tensor(np.full((3, 4), 0.5))
    with profile() as prof:
        y = x
        for _ in range(5):
            y = y * w  # Mul saves both [3, 4] float64 arrays: 2 * 96 bytes
        y.tanh().sum().backward()
        with tinyllm.no_grad():
            x * w  # a forward without recording: counted, saves nothing
    stats = prof.stats
    assert set(stats) == {"Mul", "Tanh", "Sum"}
    assert (stats["Mul"].forward_calls, stats["Mul"].backward_calls) == (6, 5)
    assert (stats["Tanh"].forward_calls, stats["Tanh"].backward_calls) == (1, 1)
    assert (stats["Sum"].forward_calls, stats["Sum"].backward_calls) == (1, 1)
    assert stats["Mul"].saved_bytes == 5 * 2 * 96
    assert stats["Tanh"].saved_bytes == 96
    assert stats["Sum"].saved_bytes == 0
    assert all(s.forward_seconds > 0 and s.backward_seconds > 0 for s in stats.values())
    assert prof.wall_seconds >= prof.op_seconds > 0


def test_no_recording_outside_the_block():
    x = tinyllm.tensor(np.ones(3), requires_grad=True)
    with profile() as prof:
        y = (x * 2).sum()
    y.backward()  # after the block: not recorded
    assert prof.stats["Mul"].backward_calls == 0
    assert profiler_state.active is None


def test_nested_profilers_pass_records_outward_and_restore():
    x = tinyllm.tensor(np.ones(3), requires_grad=True)
    with profile() as outer:
        x * 2
        with profile() as inner:
            assert profiler_state.active is inner
            x * 3
            x.exp()
        assert profiler_state.active is outer
        x * 4
    assert profiler_state.active is None
    assert inner.stats["Mul"].forward_calls == 1 and inner.stats["Exp"].forward_calls == 1
    assert outer.stats["Mul"].forward_calls == 3 and outer.stats["Exp"].forward_calls == 1


def test_previous_profiler_restored_after_an_error_and_reentry_refused():
    with pytest.raises(ZeroDivisionError):
        with profile():
            1 / 0
    assert profiler_state.active is None
    prof = profile()
    with prof:
        with pytest.raises(RuntimeError, match="already active"):
            prof.__enter__()
    with prof:  # entering again after exit accumulates
        pass
    assert profiler_state.active is None


def test_rows_table_and_sorting(capsys):
    x = tinyllm.tensor(np.ones((50, 50)), requires_grad=True)
    with profile(print_on_exit=True) as prof:
        (x @ x).tanh().sum().backward()
    assert capsys.readouterr().out == prof.table() + "\n"  # fixed once the block ended
    rows = prof.rows()
    totals = [r["total_seconds"] for r in rows]
    assert totals == sorted(totals, reverse=True)
    assert len(rows) == 3 and {"Tanh", "Sum"} < {r["op"] for r in rows}
    assert set(rows[0]) == {
        "op", "forward_calls", "backward_calls", "forward_seconds", "backward_seconds",
        "saved_bytes", "total_seconds",
    }  # fmt: skip
    assert [r["op"] for r in prof.rows("name")] == sorted(r["op"] for r in rows)
    table = prof.table()
    assert table.splitlines()[0].split()[:3] == ["op", "fwd", "calls"]
    for r in rows:
        assert r["op"] in table
    assert "all ops" in table and "wall time" in table
    with pytest.raises(ValueError, match="sort_by must be one of"):
        prof.rows("speed")


def test_exported_as_tinyllm_profile_when_wired():
    if not hasattr(tinyllm, "profile"):
        pytest.skip("tinyllm.profile is not exported from tinyllm/__init__.py yet")
    assert tinyllm.profile is profile
