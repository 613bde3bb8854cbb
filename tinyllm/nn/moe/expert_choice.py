"""Expert-choice routing (Zhou et al. 2022): each expert picks its top-c tokens.

    S = softmax(x W^T)  [N, E] (over experts);   c = ceil(capacity_factor * N / E)
    for each expert e:  I_e = top-c of S[:, e] over the tokens,  G_e = S[I_e, e]
    y_n = sum_{(e, j): I_e[j] = n} G_e[j] expert_e(x_n)

Balanced by construction (every expert takes c tokens); a token may get 0..E experts.
Not causal: the choice for token n depends on the other tokens of the batch (the paper's
own caveat for autoregressive decoding), so in a causal LM it leaks across positions.
capacity_factor is the paper's c: the average number of experts per token.
"""

from __future__ import annotations

import math

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.backend import get_array_module
from tinyllm.nn.layers import Linear
from tinyllm.nn.moe.routing import Routing

__all__ = ["ExpertChoiceRouter"]


class ExpertChoiceRouter(Linear):
    """weight [E, C] (``gate.weight``); forward(x [N, C]) -> Routing with expert_rows."""

    def __init__(
        self, d_model: int, num_experts: int, capacity_factor: float = 2.0, dtype=None
    ) -> None:
        if capacity_factor <= 0:
            raise ValueError(
                f"ExpertChoiceRouter: capacity_factor must be > 0, got {capacity_factor}"
            )
        super().__init__(d_model, num_experts, bias=False, dtype=dtype)
        self.num_experts, self.capacity_factor = num_experts, capacity_factor
        self.top_k = 1  # for the layer's bookkeeping; the choice is per expert

    def capacity(self, num_tokens: int) -> int:
        """c = ceil(capacity_factor * N / E), in [1, N]."""
        c = math.ceil(self.capacity_factor * num_tokens / self.num_experts)
        return min(num_tokens, max(1, c))

    def forward(self, x, token_ids=None) -> Routing:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"ExpertChoiceRouter: x must be [N, {self.in_features}], got {tuple(x.shape)}"
            )
        N, E = x.shape[0], self.num_experts
        logits = F.linear(x, self.weight)
        probs = F.softmax(logits, dim=-1)
        c = self.capacity(N)
        # per expert (column), the c best tokens; stable: the earlier token wins a tie
        xp = get_array_module(probs.data)
        picks = xp.argsort(-probs.data.T, axis=1, kind="stable")[:, :c].astype(np.int64)  # [E, c]
        flat = (picks * E + xp.arange(E)[:, None]).reshape(-1)  # positions in probs.reshape(-1)
        weights = F.index(probs.reshape(-1), tinyllm.tensor(flat))
        counts = np.full(E, c, np.int64)
        return Routing(None, None, E, logits, probs, (picks.reshape(-1), weights, counts))
