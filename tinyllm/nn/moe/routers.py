"""Token-choice routers: top-k gating (two orders), noisy top-k, DeepSeek-V3's
auxiliary-loss-free balancing, and hash routing. Each maps x [N, C] to a ``Routing``.

Each learned router is a bias-free ``Linear`` with weight [E, C] (Mixtral's ``gate``), so
``block_sparse_moe.gate.weight`` names match. logits = x W^T [N, E].

TopKRouter, order="softmax_topk" (Mixtral, Switch, DeepSeek-V2 with normalize=False):
    p = softmax(logits);  S = top-k(p);  g_i = p_i / sum_{j in S} p_j   (normalize=True)
                                         g_i = p_i                       (normalize=False)
TopKRouter, order="topk_softmax" (GShard/ST-MoE style as written in Shazeer et al.):
    S = top-k(logits);    g = softmax(logits_S)
With normalize=True the two orders give the same gates (exp(l_i) / sum_S exp(l_j) either
way): they differ in what the balancing losses see (``probs`` is always softmax(logits)).

NoisyTopKRouter (Shazeer et al. 2017, eq. 3-5), in training only:
    H = logits + eps * softplus(x W_noise^T),  eps ~ N(0, 1);   S = top-k(H);  g = softmax(H_S)

AuxFreeRouter (DeepSeek-V3, sec. 2.1.2): s = sigmoid(logits); selection by s + b where b [E]
is a buffer used for the choice only; g_i = s_i / sum_{j in S} s_j (independent of b given S).
After each training step (``update_bias``): b_e += rate * sign(mean_load - load_e).

HashRouter (Roller et al. 2021): expert = table[token_id] for a fixed random table
[vocab_size] -> [0, E); gate 1; no parameters (needs the token ids).
"""

from __future__ import annotations

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm import backend
from tinyllm.nn import init
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module
from tinyllm.nn.moe.routing import Routing, topk_indices

__all__ = ["AuxFreeRouter", "HashRouter", "NoisyTopKRouter", "TopKRouter"]


def _check(name: str, d_model: int, num_experts: int, top_k: int) -> None:
    for arg, v in (("d_model", d_model), ("num_experts", num_experts), ("top_k", top_k)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: {arg} must be a positive int, got {v!r}")
    if top_k > num_experts:
        raise ValueError(f"{name}: top_k={top_k} exceeds num_experts={num_experts}")


def _flat_input(name: str, x, d_model: int) -> None:
    if x.ndim != 2 or x.shape[1] != d_model:
        raise ValueError(f"{name}: x must be [N, {d_model}], got {tuple(x.shape)}")


class TopKRouter(Linear):
    """Top-k gating; ``order`` "softmax_topk" (Mixtral) or "topk_softmax"; see the module doc."""

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        top_k: int = 2,
        order: str = "softmax_topk",
        normalize: bool = True,
        dtype=None,
    ) -> None:
        _check(type(self).__name__, d_model, num_experts, top_k)
        if order not in ("softmax_topk", "topk_softmax"):
            raise ValueError(f"TopKRouter: order must be 'softmax_topk' or 'topk_softmax', "
                             f"got {order!r}")  # fmt: skip
        super().__init__(d_model, num_experts, bias=False, dtype=dtype)
        self.num_experts, self.top_k, self.order, self.normalize = (
            num_experts,
            top_k,
            order,
            normalize,
        )

    def forward(self, x, token_ids=None) -> Routing:
        _flat_input(type(self).__name__, x, self.in_features)
        logits = F.linear(x, self.weight)
        probs = F.softmax(logits, dim=-1)
        idx = topk_indices(logits.data, self.top_k)  # softmax is monotone: same choice
        it = tinyllm.tensor(idx)
        if self.order == "topk_softmax":
            gates = F.softmax(F.gather(logits, 1, it), dim=-1)
        else:
            gates = F.gather(probs, 1, it)
            if self.normalize:
                gates = gates / gates.sum(dim=-1, keepdim=True)
        return Routing(idx, gates, self.num_experts, logits, probs)

    def extra_repr(self) -> str:
        return (f"d_model={self.in_features}, num_experts={self.num_experts}, "
                f"top_k={self.top_k}, order={self.order!r}")  # fmt: skip


class NoisyTopKRouter(TopKRouter):
    """Shazeer's noisy top-k: trainable noise scale softplus(x W_noise^T), training only.

    ``noise`` [N, E] may be passed to fix eps (tests). Otherwise eps is drawn from tinyllm's
    global generator of x's device (``tinyllm.manual_seed``; ``backend.get_rng_state`` is in
    every training checkpoint, so a resumed run draws the noise the uninterrupted run drew),
    or, with ``seed`` an int, from a private NumPy generator ``self.generator`` (not saved
    by the training loop: its state is the caller's to keep)."""

    def __init__(self, d_model: int, num_experts: int, top_k: int = 2,
                 seed: int | None = None, dtype=None) -> None:  # fmt: skip
        super().__init__(d_model, num_experts, top_k, "topk_softmax", dtype=dtype)
        self.w_noise = Linear(d_model, num_experts, bias=False, dtype=dtype)
        init.zeros_(self.w_noise.weight)  # as the paper: start without noise scale
        self.generator = None if seed is None else np.random.default_rng(seed)

    def _draw(self, logits):
        """eps ~ N(0, 1) [N, E] on logits' device, in its dtype."""
        shape = tuple(logits.shape)
        if self.generator is not None:  # a private host stream, moved to the device
            return backend.xp_for(logits.device).asarray(self.generator.standard_normal(shape))
        gen = backend.generator(logits.device)
        return backend.normal(gen, 0.0, 1.0, shape, logits.dtype)

    def forward(self, x, token_ids=None, noise=None) -> Routing:
        _flat_input(type(self).__name__, x, self.in_features)
        logits = F.linear(x, self.weight)
        probs = F.softmax(logits, dim=-1)
        H = logits
        if self.training:
            if noise is None:
                noise = self._draw(logits)
            eps = tinyllm.tensor(backend.xp_for(logits.device).asarray(noise, dtype=logits.dtype))
            H = logits + eps * -F.logsigmoid(-self.w_noise(x))  # softplus(z) = -logsigmoid(-z)
        idx = topk_indices(H.data, self.top_k)
        gates = F.softmax(F.gather(H, 1, tinyllm.tensor(idx)), dim=-1)
        return Routing(idx, gates, self.num_experts, logits, probs)


class AuxFreeRouter(Linear):
    """DeepSeek-V3's auxiliary-loss-free balancing: sigmoid scores, a selection-only bias
    (buffer ``e_score_correction_bias``, V3's name), gates normalized over the chosen."""

    def __init__(self, d_model: int, num_experts: int, top_k: int = 2,
                 bias_update_rate: float = 1e-3, dtype=None) -> None:  # fmt: skip
        _check("AuxFreeRouter", d_model, num_experts, top_k)
        super().__init__(d_model, num_experts, bias=False, dtype=dtype)
        self.num_experts, self.top_k, self.bias_update_rate = num_experts, top_k, bias_update_rate
        self.register_buffer("e_score_correction_bias", tinyllm.zeros(num_experts))

    def forward(self, x, token_ids=None) -> Routing:
        _flat_input("AuxFreeRouter", x, self.in_features)
        logits = F.linear(x, self.weight)
        scores = F.sigmoid(logits)
        bias = self.e_score_correction_bias.data.astype(np.float64)
        idx = topk_indices(scores.data.astype(np.float64) + bias, self.top_k)
        chosen = F.gather(scores, 1, tinyllm.tensor(idx))
        gates = chosen / chosen.sum(dim=-1, keepdim=True)
        return Routing(idx, gates, self.num_experts, logits, F.softmax(logits, dim=-1))

    def update_bias(self, counts) -> None:
        """b_e += rate * sign(mean(counts) - counts_e): overloaded experts get chosen less."""
        counts = np.asarray(counts, dtype=np.float64)
        b = self.e_score_correction_bias
        step = self.bias_update_rate * np.sign(counts.mean() - counts)
        step = backend.get_array_module(b.data).asarray(step)  # to the bias's device
        b.data[...] = (b.data + step).astype(b.data.dtype)


class HashRouter(Module):
    """Hash layer routing: a fixed random expert per token id (``table`` buffer), gate 1."""

    def __init__(self, vocab_size: int, num_experts: int, seed: int = 0) -> None:
        super().__init__()
        for arg, v in (("vocab_size", vocab_size), ("num_experts", num_experts)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"HashRouter: {arg} must be a positive int, got {v!r}")
        self.num_experts, self.top_k = num_experts, 1
        table = np.random.default_rng(seed).integers(0, num_experts, vocab_size)
        self.register_buffer("table", tinyllm.tensor(table.astype(np.int64)))

    def forward(self, x, token_ids=None) -> Routing:
        if token_ids is None:
            raise ValueError("HashRouter: token_ids are required (hash routing reads the ids)")
        xp = backend.xp_for(x.device)  # the ids go where x is (a no-op when already there)
        ids = xp.asarray(token_ids.data if hasattr(token_ids, "data") else token_ids).reshape(-1)
        if ids.shape[0] != x.shape[0]:
            raise ValueError(f"HashRouter: {ids.shape[0]} token ids for {x.shape[0]} tokens")
        idx = self.table.data[ids][:, None]
        gates = tinyllm.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        return Routing(idx.astype(np.int64), gates, self.num_experts)
