"""Expert parallelism over MPI: 2- and 4-rank runs equal the one-process run in float64.

The test launches ``mpiexec -n 2`` itself (mpi4py with the ``mpich`` wheel: no system MPI);
it is skipped, with the reason, when mpi4py or mpiexec is absent.
"""

import json
from pathlib import Path

import pytest

pytest.importorskip("mpi4py", reason="expert parallelism needs mpi4py (pip install mpi4py mpich)")

WORKER = Path(__file__).with_name("_ep_worker.py")


@pytest.mark.parametrize("ranks", [2, 4])
def test_ranks_equal_one_process_outputs_and_every_gradient(tmp_path, ranks, mpiexec_run):
    out = tmp_path / "ep.json"
    mpiexec_run([WORKER, out], ranks=ranks, timeout=120, single_thread=False)
    result = json.loads(out.read_text())
    assert result["ranks"] == ranks
    for rank in result["per_rank"]:
        # tokens really crossed ranks (each rank routes some rows to the other's experts)
        assert rank["remote_rows"] > 0
        # float64, the same rows through the same GEMMs in the same order: only the
        # summation order of the router gradient (two partial sums) differs, ~1e-16 relative
        for key in ("out", "dx", "d_router", "d_experts"):
            assert rank[key] <= 1e-12, (key, rank)
        assert rank["out_scale"] > 1e-3  # the compared outputs are not trivially zero
