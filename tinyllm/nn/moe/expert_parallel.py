"""Expert parallelism over MPI: each of n ranks holds E/n experts; rows travel by all-to-all.

Each rank has its own tokens x_r [N_r, C] and routes them with a replicated router (the
same weights on every rank), giving expert-sorted rows (``token_index``, gates ``w``,
``counts`` [E]; see ``F.moe_dispatch``). Expert e lives on rank e // (E/n). Then

    R      = F.moe_dispatch(x_r, token_index)            rows sorted by expert = by owner rank
    R'     = all_to_all(R)                               rows for my experts, by source rank
    R''    = R'[perm]                                    regrouped by (local expert, source)
    Y''    = expert_j(R''[block j])                      one GEMM chain per local expert
    Y      = all_to_all(Y''[perm^-1])  (counts swapped)  back to the rows' home ranks
    out_r  = F.moe_combine(Y, w, token_index, N_r)

``all_to_all`` is an autograd ``Function``: the backward of sending row blocks to their
destinations is sending the gradient blocks back (the same exchange with send and receive
counts swapped), so gradients of x, the gates and the expert weights are exact. The
replicated router's weight gradients are per-rank partial sums: ``allreduce_grads`` sums
them (data parallelism). With contiguous token shards (rank 0 the first N/n tokens, ...)
each expert sees its rows in the single-process order, so outputs and gradients equal the
one-process run to rounding (tests/moe/test_expert_parallel.py, float64, 2 ranks).

Run:  mpiexec -n 2 python your_script.py   (``pip install mpi4py mpich``: no system MPI)
"""

from __future__ import annotations

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.function import Function

__all__ = ["AllToAll", "all_to_all", "allreduce_grads", "expert_parallel_moe", "local_experts"]


def _alltoallv(comm, send: np.ndarray, send_rows, recv_rows, width: int) -> np.ndarray:
    """Rows of ``send`` [sum send_rows, width] to each rank; returns [sum recv_rows, width]."""
    send = np.ascontiguousarray(send).reshape(-1)
    recv = np.empty(int(sum(recv_rows)) * width, dtype=send.dtype)

    def layout(rows):
        counts = [int(r) * width for r in rows]
        return counts, [int(d) for d in np.concatenate([[0], np.cumsum(counts)[:-1]])]

    comm.Alltoallv([send, layout(send_rows)], [recv, layout(recv_rows)])
    return recv.reshape(-1, width)


class AllToAll(Function):
    """Row blocks to ranks: block d of x (send_rows[d] rows) goes to rank d; the result is
    the blocks received, in source-rank order. Backward: the reverse exchange."""

    @staticmethod
    def forward(ctx, x, send_rows, recv_rows, comm):
        ctx.rows, ctx.comm, ctx.width = (send_rows, recv_rows), comm, x.shape[1]
        return _alltoallv(comm, x, send_rows, recv_rows, x.shape[1])

    @staticmethod
    def backward(ctx, dy):
        send_rows, recv_rows = ctx.rows
        # y = P x for the exchange P; dx = P^T dy: the same blocks, sent back to their source
        return _alltoallv(ctx.comm, dy, recv_rows, send_rows, ctx.width), None, None, None


def all_to_all(x, send_rows, comm):
    """Send ``send_rows[d]`` consecutive rows of x [M, C] to rank d (differentiable)."""
    if x.ndim != 2:
        raise ValueError(f"all_to_all: x must be [M, C], got {tuple(x.shape)}")
    send_rows = [int(r) for r in send_rows]
    if len(send_rows) != comm.Get_size() or sum(send_rows) != x.shape[0]:
        raise ValueError(
            f"all_to_all: send_rows {send_rows} must have one entry per rank "
            f"({comm.Get_size()}) and sum to the {x.shape[0]} rows of x"
        )
    recv_rows = comm.alltoall(send_rows)
    return AllToAll.apply(x, tuple(send_rows), tuple(recv_rows), comm)


def local_experts(num_experts: int, comm) -> range:
    """The global ids of this rank's experts: E/n consecutive ones."""
    n = comm.Get_size()
    if num_experts % n:
        raise ValueError(f"expert parallelism: {num_experts} experts do not split over {n} ranks")
    per = num_experts // n
    return range(comm.Get_rank() * per, (comm.Get_rank() + 1) * per)


def expert_parallel_moe(x, token_index, weights, counts, experts, num_experts: int, comm):
    """The routed MoE output for this rank's tokens x [N_r, C] (module docstring).

    token_index [M], weights [M] (Tensor), counts [E]: this rank's expert-sorted kept slots;
    experts: this rank's E/n expert modules, for ``local_experts(num_experts, comm)``.
    """
    n, per = comm.Get_size(), num_experts // comm.Get_size()
    mine = local_experts(num_experts, comm)
    if len(experts) != per:
        raise ValueError(f"expert_parallel_moe: {len(experts)} local experts, expected {per}")
    counts = np.asarray(counts, dtype=np.int64)
    ti = tinyllm.tensor(np.asarray(token_index, dtype=np.int64))
    rows = F.moe_dispatch(x, ti)
    send = [int(counts[d * per : (d + 1) * per].sum()) for d in range(n)]
    all_counts = np.stack(comm.allgather(counts))  # [n, E]: rows each source sends per expert
    received = all_to_all(rows, send, comm)  # by source rank, then expert
    # regroup: for local expert j, its block from each source s (sources in rank order)
    mine_counts = all_counts[:, mine.start : mine.stop]  # [n, per]
    src_start = np.concatenate([[0], np.cumsum(mine_counts.sum(1))[:-1]])
    within = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(mine_counts, 1)[:, :-1]], 1)
    perm = np.concatenate([np.arange(c) + src_start[s] + within[s, j]
                           for j in range(per) for s in range(n)
                           for c in [mine_counts[s, j]]]).astype(np.int64)  # fmt: skip
    grouped = F.index(received, tinyllm.tensor(perm)) if perm.size else received
    outs, start = [], 0
    for j, expert in enumerate(experts):
        c = int(mine_counts[:, j].sum())
        if c:
            outs.append(expert(grouped[start : start + c]))
        start += c
    if outs:
        y = F.cat(outs, dim=0)
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(perm.size)
        y = F.index(y, tinyllm.tensor(inverse))  # back to source-then-expert order
    else:
        y = received * 0
    back = all_to_all(y, [int(c) for c in mine_counts.sum(1)], comm)
    return F.moe_combine(back, weights, ti, x.shape[0])


def allreduce_grads(params, comm) -> None:
    """Sum each parameter's .grad over the ranks (replicated parameters: the router)."""
    from mpi4py import MPI

    for p in params:
        if p.grad is not None:
            g = np.ascontiguousarray(p.grad.data)
            total = np.empty_like(g)
            comm.Allreduce(g, total, op=MPI.SUM)
            p.grad.data[...] = total
