"""Data parallelism across processes (``tinyllm.distributed``), DDP's recipe on MPI.

    mpiexec -n 2 tinyllm train ...          # 2 ranks, each with --batch-size B of its own

- ``process_group.py``: who am I (rank, world size) from the launcher's environment; the
  single-process group when no MPI launcher started us (mpi4py is then never imported).
- ``mpi.py``: the group on mpi4py (CPU arrays): bucketed in-place all-reduce, broadcast.
- ``nccl.py``: the same group on NCCL through ``cupy.cuda.nccl`` for GPU arrays (untested
  here: no GPU on the development machine).
- ``data_parallel.py``: what a training step needs: parameters broadcast from rank 0, the
  rank's slice of a global batch, gradients all-reduced and averaged in buckets.
"""

from tinyllm.distributed.data_parallel import DataParallel
from tinyllm.distributed.process_group import ProcessGroup, SingleProcessGroup, init_process_group

__all__ = ["DataParallel", "ProcessGroup", "SingleProcessGroup", "init_process_group"]
