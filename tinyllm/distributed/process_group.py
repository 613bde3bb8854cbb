"""The process group: this process's rank among ``size`` processes, and the collectives.

``init_process_group(device)`` reads the launcher's environment, as ``torch.distributed``'s
``env://`` does:

    MPICH (hydra, the ``mpich`` wheel)   PMI_RANK, PMI_SIZE
    Open MPI                             OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE
    PMIx launchers (srun --mpi=pmix)     PMIX_RANK and ... _SIZE from MPI itself

No such variable (or a world of 1): the ``SingleProcessGroup``, whose collectives do nothing,
and mpi4py is never imported (initializing MPI costs time and may print warnings). Under a
launcher with more than one process, mpi4py is required: each process would otherwise train
alone and all of them would write the same run folder, so its absence is an error.

Collectives work in place on lists of contiguous arrays (NumPy for ``mpi``, CuPy for
``nccl``); sums only, since averaging is the caller's (``DataParallel``) business.
"""

from __future__ import annotations

import os

RANK_VARIABLES = (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"))


class ProcessGroup:
    """``rank`` in ``[0, size)``; ``backend`` 'single', 'mpi' or 'nccl'."""

    rank: int = 0
    size: int = 1
    backend: str = "single"

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes logs and checkpoints."""
        return self.rank == 0

    def allreduce_sum_(self, buffers: list) -> None:
        """Replace each array of ``buffers`` by its sum over the ranks (every rank passes
        arrays of the same shapes and dtypes, in the same order)."""
        raise NotImplementedError

    def broadcast_(self, buffers: list, root: int = 0) -> None:
        """Overwrite each array of ``buffers`` with rank ``root``'s."""
        raise NotImplementedError

    def allreduce_max_int_(self, values) -> None:
        """Elementwise max over the ranks of a small host int32 array (flags), in place."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class SingleProcessGroup(ProcessGroup):
    """One process: every collective is the identity."""

    def allreduce_sum_(self, buffers: list) -> None:
        return None

    def broadcast_(self, buffers: list, root: int = 0) -> None:
        if root != 0:
            raise ValueError(f"broadcast_: root {root} does not exist in a world of 1")

    def allreduce_max_int_(self, values) -> None:
        return None

    def barrier(self) -> None:
        return None


def launched_world() -> tuple[int, int] | None:
    """(rank, size) from an MPI launcher's environment, or None outside one."""
    for rank_var, size_var in RANK_VARIABLES:
        if rank_var in os.environ and size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    if "PMIX_RANK" in os.environ:
        return int(os.environ["PMIX_RANK"]), -1  # the size comes from MPI itself
    return None


def init_process_group(device: str = "cpu", backend: str | None = None) -> ProcessGroup:
    """The group this process belongs to: 'single' outside an MPI launcher, 'mpi' for CPU
    arrays under one, 'nccl' (CuPy's NCCL, set up over MPI) for device 'cuda'."""
    if backend not in (None, "single", "mpi", "nccl"):
        raise ValueError(f"init_process_group: backend must be 'mpi' or 'nccl', got {backend!r}")
    world = launched_world()
    if backend == "single" or (backend is None and (world is None or world[1] == 1)):
        return SingleProcessGroup()
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(
            f"init_process_group: started by an MPI launcher ({world[1] if world else '?'} "
            "processes) but mpi4py is not installed: pip install mpi4py mpich (or "
            "pip install tinyllm[mpi]); without it every process would train alone"
        ) from exc
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return SingleProcessGroup()
    if backend == "nccl" or (backend is None and device == "cuda"):
        from tinyllm.distributed.nccl import NcclProcessGroup

        return NcclProcessGroup(comm)
    from tinyllm.distributed.mpi import MpiProcessGroup

    return MpiProcessGroup(comm)
