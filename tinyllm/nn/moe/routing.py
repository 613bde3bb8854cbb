"""The routing decision of a mixture-of-experts layer, and capacity with token dropping.

A router maps tokens x [N, C] to ``Routing``: for each token its experts ``expert_index``
[N, k] (integers; -1 marks a dropped slot) and their gates [N, k] (a Tensor, differentiable
in the router's weights), plus the router ``logits`` and ``probs`` [N, E] that the balancing
losses read. ``rows`` turns it into expert-sorted rows for ``F.moe_dispatch``/``moe_combine``.

Capacity (Switch Transformer, GShard): each expert takes at most

    capacity = ceil(capacity_factor * N * k / E)

slots, in token order (earlier tokens first, slot j before slot j+1 of the same token not
guaranteed: priority is the flat order n * k + j). The slots over capacity are dropped
(expert_index -1); a token whose slots are all dropped gets a zero MoE output, so the
residual connection around the layer passes it through unchanged. Gates are not
renormalized after dropping (as Switch/GShard).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.backend import get_array_module
from tinyllm.functional.moe import expert_permutation
from tinyllm.tensor import Tensor

__all__ = ["Routing", "apply_capacity", "expert_capacity", "topk_indices"]


@dataclass
class Routing:
    """expert_index [N, k] (np int, -1 dropped), gates [N, k] Tensor, logits / probs [N, E]
    Tensors or None (hash routing has neither), num_experts E.

    Expert-choice routing has no per-token slots: it gives its rows directly
    (``expert_rows`` = (token_index [M], weights [M] Tensor, counts [E])) and no
    expert_index/gates."""

    expert_index: np.ndarray | None
    gates: Tensor | None
    num_experts: int
    logits: Tensor | None = None
    probs: Tensor | None = None
    expert_rows: tuple | None = None
    routed_index: np.ndarray | None = None  # expert_index before capacity dropped slots

    def rows(self):
        """(token_index [M], weights [M] Tensor, counts [E]): the kept slots sorted by expert."""
        if self.expert_rows is not None:
            return self.expert_rows
        k = self.expert_index.shape[1]
        order, counts = expert_permutation(self.expert_index, self.num_experts)
        weights = F.index(self.gates.reshape(-1), tinyllm.tensor(order))
        return order // k, weights, counts


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """The k largest entries of each row of scores [N, E], best first ([N, k] int64).

    Stable on ties: the lower expert index wins (as torch.topk on CPU in practice). On the
    scores' device (NumPy or CuPy)."""
    xp = get_array_module(scores)
    return xp.argsort(-scores, axis=-1, kind="stable")[:, :k].astype(np.int64)


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """ceil(capacity_factor * N * k / E), at least 1."""
    return max(1, math.ceil(capacity_factor * num_tokens * top_k / num_experts))


def apply_capacity(expert_index: np.ndarray, num_experts: int, capacity: int) -> np.ndarray:
    """expert_index with the slots beyond each expert's ``capacity`` set to -1 (token order)."""
    if capacity < 0:
        raise ValueError(f"apply_capacity: capacity must be >= 0, got {capacity}")
    xp = get_array_module(expert_index)
    out = expert_index.copy()
    flat = out.reshape(-1)
    order, counts = expert_permutation(expert_index, num_experts)  # stable: token order
    starts = xp.cumsum(counts) - counts  # first row of each expert
    rank = xp.arange(order.size) - xp.repeat(starts, counts)  # position in its expert's queue
    flat[order[rank >= capacity]] = -1
    return out
