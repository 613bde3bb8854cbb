"""``MoE``: a sparse mixture-of-experts feed-forward layer (Mixtral's ``block_sparse_moe``,
with DeepSeekMoE's shared experts).

For x [..., C] flattened to N tokens:

    routing            = gate(x)                          (routers.py, expert_choice.py)
    expert_index       = apply_capacity(...)              (capacity_factor set: token dropping)
    token_index, w     = expert-sorted kept slots and their gates
    rows               = F.moe_dispatch(x, token_index)   [M, C], contiguous per expert
    out_rows[e-block]  = experts[e](rows[e-block])        one GEMM chain per expert
    y                  = F.moe_combine(out_rows, w, token_index, N)
    y                 += shared_experts(x)                (num_shared_experts > 0)

DeepSeekMoE's fine-grained experts are many small experts: set ``expert_hidden`` to a
fraction of the dense width and raise num_experts and top_k by the same factor. Shared
experts are one SwiGLU of width num_shared_experts * expert_hidden, always active.

After each forward, ``aux_loss`` holds aux_loss_coef * switch_load_balancing_loss(probs,
routed experts before dropping) + z_loss_coef * router_z_loss(logits) (a 0-d Tensor, or None
for a router without logits), and ``last_load`` the rows per expert (np int [E]). In
training with an ``AuxFreeRouter`` the router's bias is moved by this load.

Children: ``gate`` (the router; ``gate.weight`` [E, C] as Mixtral), ``experts.{i}.w1/w2/w3``,
``shared_experts`` (or None).
"""

from __future__ import annotations

import contextlib

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm import backend
from tinyllm.nn.containers import ModuleList
from tinyllm.nn.module import Module
from tinyllm.nn.moe.expert_choice import ExpertChoiceRouter
from tinyllm.nn.moe.experts import Expert
from tinyllm.nn.moe.routers import AuxFreeRouter, HashRouter, NoisyTopKRouter, TopKRouter
from tinyllm.nn.moe.routing import Routing, apply_capacity, expert_capacity

__all__ = ["MOE_ROUTERS", "MoE", "moe_aux_loss", "moe_modules", "routing_token_ids"]

MOE_ROUTERS = ("softmax_topk", "topk_softmax", "noisy_topk", "aux_free", "hash", "expert_choice")


class MoE(Module):
    """Sparse MoE FFN. Args: d_model C, num_experts E, top_k k, expert_hidden F (default 4C),
    router (one of ``MOE_ROUTERS``), capacity_factor (None: no dropping; for "expert_choice"
    the paper's c, default 2), num_shared_experts, aux_loss_coef, z_loss_coef,
    bias_update_rate (aux_free), vocab_size (hash), seed (hash routing's table, default 0;
    noisy top-k: None draws the noise from tinyllm's global generator, which training
    checkpoints save, an int from a private generator of that seed).
    x [..., C] -> [..., C]; ``forward(x, token_ids=None)`` (token ids for hash routing)."""

    def __init__(
        self,
        d_model: int,
        num_experts: int = 8,
        top_k: int = 2,
        expert_hidden: int | None = None,
        router: str = "softmax_topk",
        capacity_factor: float | None = None,
        num_shared_experts: int = 0,
        aux_loss_coef: float = 0.01,
        z_loss_coef: float = 0.0,
        bias_update_rate: float = 1e-3,
        vocab_size: int | None = None,
        seed: int | None = None,
        dtype=None,
    ) -> None:
        super().__init__()
        if router not in MOE_ROUTERS:
            raise ValueError(f"MoE: router must be one of {MOE_ROUTERS}, got {router!r}")
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"MoE: capacity_factor must be > 0 or None, got {capacity_factor}")
        if isinstance(num_shared_experts, bool) or num_shared_experts < 0:
            raise ValueError(f"MoE: num_shared_experts must be >= 0, got {num_shared_experts}")
        expert_hidden = expert_hidden or 4 * d_model
        self.d_model, self.num_experts, self.top_k = d_model, num_experts, top_k
        self.router, self.capacity_factor = router, capacity_factor
        self.aux_loss_coef, self.z_loss_coef = aux_loss_coef, z_loss_coef
        if router in ("softmax_topk", "topk_softmax"):
            self.gate = TopKRouter(d_model, num_experts, top_k, router, dtype=dtype)
        elif router == "noisy_topk":
            self.gate = NoisyTopKRouter(d_model, num_experts, top_k, seed=seed, dtype=dtype)
        elif router == "aux_free":
            self.gate = AuxFreeRouter(d_model, num_experts, top_k, bias_update_rate, dtype=dtype)
        elif router == "hash":
            if vocab_size is None:
                raise ValueError("MoE: router='hash' needs vocab_size")
            self.gate, self.top_k = HashRouter(vocab_size, num_experts, seed or 0), 1
        else:
            self.gate = ExpertChoiceRouter(d_model, num_experts, capacity_factor or 2.0, dtype)
        self.experts = ModuleList(
            [Expert(d_model, expert_hidden, dtype) for _ in range(num_experts)]
        )
        self.shared_experts = None
        if num_shared_experts:
            self.shared_experts = Expert(d_model, num_shared_experts * expert_hidden, dtype)
        self.aux_loss = None
        self.last_load = np.zeros(num_experts, np.int64)
        self.context_token_ids = None  # set by ``routing_token_ids`` (hash routing in a model)

    def route(self, x, token_ids=None) -> Routing:
        """The router's decision for x [N, C], with capacity applied (token choice only)."""
        routing = self.gate(x, token_ids)
        if self.capacity_factor is not None and routing.expert_index is not None:
            cap = expert_capacity(x.shape[0], self.num_experts, self.top_k, self.capacity_factor)
            routing.routed_index = routing.expert_index
            routing.expert_index = apply_capacity(routing.expert_index, self.num_experts, cap)
        return routing

    def forward(self, x, token_ids=None):
        if x.shape[-1] != self.d_model:
            raise ValueError(f"MoE: x must be [..., {self.d_model}], got {tuple(x.shape)}")
        if token_ids is None:
            token_ids = self.context_token_ids
        shape = tuple(x.shape)
        flat = x.reshape(-1, self.d_model)
        N = flat.shape[0]
        routing = self.route(flat, token_ids)
        routed = routing.expert_index if routing.routed_index is None else routing.routed_index
        token_index, weights, counts = routing.rows()
        counts = backend.to_numpy(counts).astype(np.int64)  # on a GPU the layer's one host sync
        rows = F.moe_dispatch(flat, tinyllm.tensor(token_index))
        outs, start = [], 0
        for e, n in enumerate(counts.tolist()):
            if n:
                outs.append(self.experts[e](rows[start : start + n]))
            start += n
        if outs:
            y = F.moe_combine(F.cat(outs, dim=0), weights, tinyllm.tensor(token_index), N)
        else:  # every slot dropped: the layer adds nothing
            y = flat * 0
        if self.shared_experts is not None:
            y = y + self.shared_experts(flat)
        self.last_load = counts
        self.aux_loss = self._aux_loss(routing, routed)
        if self.training and isinstance(self.gate, AuxFreeRouter):
            self.gate.update_bias(counts)
        return y.reshape(shape)

    def _aux_loss(self, routing: Routing, routed):
        loss = None
        if self.aux_loss_coef and routing.probs is not None and routed is not None:
            loss = self.aux_loss_coef * F.switch_load_balancing_loss(
                routing.probs, tinyllm.tensor(routed)
            )
        if self.z_loss_coef and routing.logits is not None:
            z = self.z_loss_coef * F.router_z_loss(routing.logits)
            loss = z if loss is None else loss + z
        return loss

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"router={self.router!r}, capacity_factor={self.capacity_factor}"
        )


def moe_modules(model: Module) -> list[MoE]:
    """The ``MoE`` layers of ``model``, in module order."""
    return [m for _, m in model.named_modules() if isinstance(m, MoE)]


@contextlib.contextmanager
def routing_token_ids(model: Module, token_ids):
    """Within the block, every hash-routed ``MoE`` of ``model`` reads ``token_ids`` (the
    model's input ids [B, T]) when its forward is given none: a model's blocks pass hidden
    states only, and hash routing needs the ids. ``with routing_token_ids(model, idx):
    model(idx)``."""
    layers = [m for m in moe_modules(model) if m.router == "hash"]
    for m in layers:
        m.context_token_ids = token_ids
    try:
        yield
    finally:
        for m in layers:
            m.context_token_ids = None


def moe_aux_loss(layers: list[MoE]):
    """The sum of the layers' ``aux_loss`` from their last forward (None when none has one)."""
    total = None
    for m in layers:
        if m.aux_loss is not None:
            total = m.aux_loss if total is None else total + m.aux_loss
    return total
