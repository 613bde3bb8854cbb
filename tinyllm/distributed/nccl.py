"""The process group on NCCL through ``cupy.cuda.nccl``, for CuPy arrays (one GPU per rank).

UNTESTED: the development machine has no GPU and the CuPy stand-in used by the tests has no
NCCL, so this path has never run. It follows CuPy's documented NCCL API:

- rank 0 makes the communicator id (``nccl.get_unique_id()``) and MPI broadcasts it (MPI is
  the launcher and the rendezvous; the data then moves over NCCL);
- each rank picks GPU ``local_rank % device_count`` (``MPI_LOCALRANKID`` from MPICH, or
  ``OMPI_COMM_WORLD_LOCAL_RANK``) before creating ``NcclCommunicator(size, id, rank)``;
- ``allReduce(send_ptr, recv_ptr, count, dtype, NCCL_SUM, stream)`` in place
  (send = recv is allowed by NCCL) and ``bcast(ptr, count, dtype, root, stream)`` on the
  current stream, grouped with ``groupStart/groupEnd`` so several buffers are one launch.

What to check on a GPU first: ``mpiexec -n 2 python -c "from tinyllm.distributed import
init_process_group; g = init_process_group('cuda'); ..."`` with an all-reduce of
``cupy.full(4, g.rank + 1.0)`` giving 3.0 on both ranks.
"""

from __future__ import annotations

import os

import numpy as np

from tinyllm.distributed.process_group import ProcessGroup

_NCCL_TYPES = {np.dtype(np.float16): "NCCL_FLOAT16", np.dtype(np.float32): "NCCL_FLOAT32",
               np.dtype(np.float64): "NCCL_FLOAT64", np.dtype(np.int32): "NCCL_INT32",
               np.dtype(np.int64): "NCCL_INT64"}  # fmt: skip


def local_rank() -> int:
    for name in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "LOCAL_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


class NcclProcessGroup(ProcessGroup):
    backend = "nccl"

    def __init__(self, comm) -> None:
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as exc:
            raise RuntimeError(
                "NcclProcessGroup: device 'cuda' needs CuPy built with NCCL "
                "(pip install cupy-cuda12x; python -m cupyx.tools.install_library "
                "--library nccl)"
            ) from exc
        self._cupy, self._nccl, self.mpi_comm = cupy, nccl, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        cupy.cuda.Device(local_rank() % cupy.cuda.runtime.getDeviceCount()).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def _type(self, b, op: str):
        if not isinstance(b, self._cupy.ndarray) or not b.flags.c_contiguous:
            raise TypeError(f"{op}: buffers must be C-contiguous CuPy arrays, got {type(b)}")
        name = _NCCL_TYPES.get(np.dtype(b.dtype))
        if name is None:
            raise TypeError(f"{op}: dtype {b.dtype} has no NCCL type")
        return getattr(self._nccl, name)

    def allreduce_sum_(self, buffers: list) -> None:
        stream = self._cupy.cuda.get_current_stream().ptr
        self._nccl.groupStart()
        for b in buffers:
            kind = self._type(b, "allreduce_sum_")
            self.comm.allReduce(b.data.ptr, b.data.ptr, b.size, kind, self._nccl.NCCL_SUM, stream)
        self._nccl.groupEnd()

    def broadcast_(self, buffers: list, root: int = 0) -> None:
        stream = self._cupy.cuda.get_current_stream().ptr
        self._nccl.groupStart()
        for b in buffers:
            self.comm.bcast(b.data.ptr, b.size, self._type(b, "broadcast_"), root, stream)
        self._nccl.groupEnd()

    def allreduce_max_int_(self, values) -> None:
        from mpi4py import MPI

        self.mpi_comm.Allreduce(MPI.IN_PLACE, values, op=MPI.MAX)  # host flags: over MPI

    def barrier(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()
        self.mpi_comm.Barrier()
