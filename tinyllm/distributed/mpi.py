"""The process group on mpi4py, for NumPy arrays: in-place sums and broadcasts.

Each collective is non-blocking (``Iallreduce`` / ``Ibcast``) and all requests are waited
for together, so the transfer of one buffer overlaps the posting (and, in ``DataParallel``,
the packing) of the next.
"""

from __future__ import annotations

import numpy as np

from tinyllm.distributed.process_group import ProcessGroup


class MpiProcessGroup(ProcessGroup):
    backend = "mpi"

    def __init__(self, comm) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    @staticmethod
    def _check(buffers: list, op: str) -> None:
        for i, b in enumerate(buffers):
            if not isinstance(b, np.ndarray) or not b.flags.c_contiguous:
                raise TypeError(
                    f"{op}: buffer {i} must be a C-contiguous NumPy array, got "
                    f"{type(b).__name__} (mpi works on host arrays; use the nccl group for "
                    "GPU arrays)"
                )

    def allreduce_sum_(self, buffers: list) -> None:
        self._check(buffers, "allreduce_sum_")
        MPI = self._MPI
        requests = [self.comm.Iallreduce(MPI.IN_PLACE, b, op=MPI.SUM) for b in buffers]
        MPI.Request.Waitall(requests)

    def broadcast_(self, buffers: list, root: int = 0) -> None:
        if not 0 <= root < self.size:
            raise ValueError(f"broadcast_: root {root} is not a rank of a world of {self.size}")
        self._check(buffers, "broadcast_")
        requests = [self.comm.Ibcast(b, root=root) for b in buffers]
        self._MPI.Request.Waitall(requests)

    def allreduce_max_int_(self, values) -> None:
        self.comm.Allreduce(self._MPI.IN_PLACE, values, op=self._MPI.MAX)

    def barrier(self) -> None:
        self.comm.Barrier()
