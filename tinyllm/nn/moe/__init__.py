"""Mixture-of-experts layers: routers, capacity, the sparse ``MoE`` FFN, ``SoftMoE``, and
expert parallelism over MPI (``tinyllm.nn.moe.expert_parallel``, imported on demand: it
needs mpi4py)."""

from tinyllm.nn.moe.expert_choice import ExpertChoiceRouter
from tinyllm.nn.moe.experts import Expert
from tinyllm.nn.moe.layer import MOE_ROUTERS, MoE, moe_aux_loss, moe_modules, routing_token_ids
from tinyllm.nn.moe.routers import AuxFreeRouter, HashRouter, NoisyTopKRouter, TopKRouter
from tinyllm.nn.moe.routing import Routing, apply_capacity, expert_capacity, topk_indices
from tinyllm.nn.moe.soft_moe import SoftMoE

__all__ = [
    "MOE_ROUTERS", "AuxFreeRouter", "Expert", "ExpertChoiceRouter", "HashRouter", "MoE",
    "NoisyTopKRouter", "Routing", "SoftMoE", "TopKRouter", "apply_capacity", "expert_capacity",
    "moe_aux_loss", "moe_modules", "routing_token_ids", "topk_indices",
]  # fmt: skip
