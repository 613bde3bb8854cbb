"""Run under ``mpiexec -n R``: expert-parallel MoE vs the one-process MoE, float64.

Every rank builds the same tokens, router and E experts (same seeds), runs the one-process
reference on all N tokens, then the expert-parallel forward/backward on its contiguous shard
of N/R tokens with its E/R experts. Rank 0 gathers the largest differences (output, dx, the
router's all-reduced gradient, every expert weight's gradient) and writes them as JSON to
argv[1].
"""

import json
import sys

import numpy as np
from mpi4py import MPI

import tinyllm
import tinyllm.functional as F
from tinyllm.functional.moe import expert_permutation
from tinyllm.nn.moe.expert_parallel import allreduce_grads, expert_parallel_moe, local_experts
from tinyllm.nn.moe.experts import Expert

N, C, E, K, H = 16, 6, 4, 2, 5


def route(x, wg):
    """Mixtral top-k: softmax, top-k, renormalize; rows sorted by expert."""
    logits = F.linear(x, wg)
    probs = F.softmax(logits, dim=-1)
    idx = np.argsort(-logits.data, axis=1, kind="stable")[:, :K]
    g = F.gather(probs, 1, tinyllm.tensor(idx))
    g = g / g.sum(dim=-1, keepdim=True)
    order, counts = expert_permutation(idx, E)
    return order // K, F.index(g.reshape(-1), tinyllm.tensor(order)), counts


def main(out_path: str) -> None:
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(0)
    X, Wg, V = (rng.standard_normal(s) for s in ((N, C), (E, C), (N, C)))
    tinyllm.manual_seed(0)
    experts = [Expert(C, H).to(dtype="float64") for _ in range(E)]

    # the one-process reference on every token with every expert
    x = tinyllm.tensor(X, requires_grad=True)
    wg = tinyllm.tensor(Wg, requires_grad=True)
    ti, w, counts = route(x, wg)
    tit = tinyllm.tensor(ti)
    rows = F.moe_dispatch(x, tit)
    starts = np.concatenate([[0], np.cumsum(counts)])
    outs = [experts[e](rows[int(starts[e]) : int(starts[e + 1])]) for e in range(E) if counts[e]]
    y = F.moe_combine(F.cat(outs, dim=0), w, tit, N)
    (y * tinyllm.tensor(V)).sum().backward()
    ref_params = {(e, n): p.grad.data.copy() for e in range(E)
                  for n, p in experts[e].named_parameters()}  # fmt: skip
    for e in range(E):
        for p in experts[e].parameters():
            p.grad = None

    # expert parallel: my contiguous shard of tokens, my E/size experts
    shard = slice(rank * N // size, (rank + 1) * N // size)
    xr = tinyllm.tensor(X[shard].copy(), requires_grad=True)
    wgr = tinyllm.tensor(Wg.copy(), requires_grad=True)
    tir, wr, cr = route(xr, wgr)
    mine = local_experts(E, comm)
    yr = expert_parallel_moe(xr, tir, wr, cr, [experts[e] for e in mine], E, comm)
    (yr * tinyllm.tensor(V[shard])).sum().backward()
    allreduce_grads([wgr], comm)

    per = E // size
    remote_rows = int(sum(cr[e] for e in range(E) if e // per != rank))
    errs = {
        "out": float(np.abs(yr.data - y.data[shard]).max()),
        "dx": float(np.abs(xr.grad.data - x.grad.data[shard]).max()),
        "d_router": float(np.abs(wgr.grad.data - wg.grad.data).max()),
        "d_experts": max(
            float(np.abs(p.grad.data - ref_params[(e, n)]).max())
            for e in mine
            for n, p in experts[e].named_parameters()
        ),  # fmt: skip
        "remote_rows": remote_rows,
        "out_scale": float(np.abs(y.data).max()),
    }
    gathered = comm.gather(errs, root=0)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump({"ranks": size, "per_rank": gathered}, f)


if __name__ == "__main__":
    main(sys.argv[1])
