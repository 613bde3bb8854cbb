"""Attention patterns for long inputs over ``F.scaled_dot_product_attention``: sliding-window
and StreamingLLM (attention sinks) masks, and a KV cache that evicts what they never read.

Query at absolute position p, key at absolute position j (causal: j <= p):

    sliding window w (Mistral):                   key j visible iff  p - w < j <= p
    attention sinks s + window w (StreamingLLM,   key j visible iff  j <= p  and
      Xiao et al. 2023):                                             (j < s  or  p - w < j)

The masks are boolean (True = attend, PyTorch's convention) and are handed to the existing
attention as ``attn_mask``: nothing here computes attention itself. ``SinkKVCache`` keeps,
before each new block of tokens, the first ``sinks`` tokens and the last ``window - 1``; the
new queries then see every key they may see (the one before the oldest kept recent token is
at p - w for the first new query p, outside its window) and the mask built from the kept
tokens' absolute positions hides the rest, so cached decoding equals attention over the full
sequence with the same mask, with memory bounded by sinks + window - 1 + (new tokens).

Positions: the cache records the absolute position of every kept token (``positions``).
StreamingLLM applies RoPE with positions *inside the cache* (0 .. len - 1) so that relative
distances never exceed the cache size; to do that, store keys before RoPE and rotate the
returned keys with ``cache_positions()``. With absolute positions (keys rotated before
caching) the cache is the plain sliding-window/sink cache.
"""

from __future__ import annotations

import numpy as np

import tinyllm
from tinyllm.functional import cat, scaled_dot_product_attention, sigmoid, softmax
from tinyllm.nn.module import Module
from tinyllm.tensor import Tensor

__all__ = [
    "KNNMemory",
    "KNNMemoryAttention",
    "SinkKVCache",
    "attach_knn_memory",
    "attention_sink_mask",
    "long_context_mask",
    "longformer_mask",
    "sliding_window_attention",
    "sliding_window_mask",
]


def long_context_mask(
    query_positions, key_positions, window: int, sinks: int = 0, device=None
) -> Tensor:
    """Boolean mask [Tq, Tk]: key at absolute position j visible to the query at p iff
    j <= p and (j < sinks or p - window < j). ``window`` >= 1 counts the query itself.
    ``device``: where the mask lives (default the CPU)."""
    if int(window) < 1 or int(sinks) < 0:
        raise ValueError(
            f"long_context_mask: window must be >= 1 and sinks >= 0, got window={window}, "
            f"sinks={sinks}"
        )
    p = np.asarray(query_positions)[:, None]
    j = np.asarray(key_positions)[None, :]
    allowed = (j <= p) & ((j < sinks) | (j > p - window))
    return Tensor(allowed) if device is None else tinyllm.tensor(allowed, device=device)


def sliding_window_mask(Tq: int, Tk: int | None = None, window: int = 1) -> Tensor:
    """[Tq, Tk] mask of causal sliding-window attention, queries bottom-right aligned (the
    last query is at position Tk - 1, as when decoding after a cache): query i at position
    p = Tk - Tq + i sees keys p - window < j <= p. With Tq == Tk it equals
    ``scaled_dot_product_attention(..., window=window)``.

    >>> sliding_window_mask(3, window=2).numpy().astype(int)
    array([[1, 0, 0],
           [1, 1, 0],
           [0, 1, 1]])
    """
    Tk = Tq if Tk is None else Tk
    if Tk < Tq:
        raise ValueError(f"sliding_window_mask: Tk={Tk} must be >= Tq={Tq}")
    return long_context_mask(np.arange(Tk - Tq, Tk), np.arange(Tk), window)


def attention_sink_mask(Tq: int, Tk: int | None = None, sinks: int = 4, window: int = 1) -> Tensor:
    """[Tq, Tk] mask of StreamingLLM: query at position p = Tk - Tq + i sees the first
    ``sinks`` keys and the keys p - window < j <= p (causal).

    >>> attention_sink_mask(4, sinks=1, window=2).numpy().astype(int)
    array([[1, 0, 0, 0],
           [1, 1, 0, 0],
           [1, 1, 1, 0],
           [1, 0, 1, 1]])
    """
    Tk = Tq if Tk is None else Tk
    if Tk < Tq:
        raise ValueError(f"attention_sink_mask: Tk={Tk} must be >= Tq={Tq}")
    return long_context_mask(np.arange(Tk - Tq, Tk), np.arange(Tk), window, sinks)


def longformer_mask(T: int, window: int, global_tokens=()) -> Tensor:
    """[T, T] mask of Longformer (Beltagy et al. 2020), bidirectional: token i sees j with
    |i - j| <= window // 2 (``attention_window`` = window, half on each side, as in
    HuggingFace's LongformerConfig); a global token sees every token and every token sees
    it.

    >>> longformer_mask(4, 2, global_tokens=[0]).numpy().astype(int)
    array([[1, 1, 1, 1],
           [1, 1, 1, 0],
           [1, 1, 1, 1],
           [1, 0, 1, 1]])
    """
    if int(window) < 0 or int(window) % 2:
        raise ValueError(f"longformer_mask: window must be even and >= 0, got {window}")
    g = np.zeros(T, dtype=bool)
    idx = np.asarray(list(global_tokens), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= T):
        raise ValueError(f"longformer_mask: global_tokens {idx.tolist()} must lie in [0, {T})")
    g[idx] = True
    i = np.arange(T)
    allowed = np.abs(i[:, None] - i[None, :]) <= window // 2
    return Tensor(allowed | g[:, None] | g[None, :])


class SinkKVCache:
    """A KV cache that evicts: keeps the first ``sinks`` tokens and a recent ``window``
    (``sinks=0``: Mistral's rolling sliding-window cache). Tensors are [..., T, D] with
    time on dim -2, like ``tinyllm.nn.KVCache``.

    ``update(k, v)`` appends new keys and values and returns (k, v, mask) to attend with:
    ``F.scaled_dot_product_attention(q_new, k, v, attn_mask=mask)``. Before appending it drops
    every token that no new query can see (all but the sinks and the last ``window - 1``), so
    after a one-token step the cache holds at most sinks + window tokens.
    """

    def __init__(self, window: int, sinks: int = 0) -> None:
        if int(window) < 1 or int(sinks) < 0:
            raise ValueError(
                f"SinkKVCache: window must be >= 1 and sinks >= 0, got window={window}, "
                f"sinks={sinks}"
            )
        self.window, self.sinks = int(window), int(sinks)
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.positions = np.zeros(0, dtype=np.int64)  # absolute position of each kept token
        self.seen = 0  # tokens appended so far (the absolute position of the next one)

    def __len__(self) -> int:
        return len(self.positions)

    def cache_positions(self) -> np.ndarray:
        """0 .. len - 1: StreamingLLM's positions inside the cache (for RoPE on cached keys)."""
        return np.arange(len(self))

    def _evict(self) -> None:
        """Keep the sinks and the last window - 1 tokens (what the next query can still see)."""
        keep_recent = self.window - 1
        if len(self) <= self.sinks + keep_recent:
            return
        idx = np.concatenate(
            [np.arange(self.sinks), np.arange(len(self) - keep_recent, len(self))]
        ).astype(np.int64)
        sink_part = slice(0, self.sinks)
        recent = slice(len(self) - keep_recent, len(self))
        parts_k = [self.k[..., sink_part, :], self.k[..., recent, :]]
        parts_v = [self.v[..., sink_part, :], self.v[..., recent, :]]
        self.k = cat([p for p in parts_k if p.shape[-2]], dim=-2) if idx.size else None
        self.v = cat([p for p in parts_v if p.shape[-2]], dim=-2) if idx.size else None
        self.positions = self.positions[idx]

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Append k [..., Tn, D], v [..., Tn, Dv]; return (keys, values, mask [Tn, Tk])."""
        if k.ndim < 2 or v.ndim < 2 or k.shape[:-1] != v.shape[:-1]:
            raise ValueError(
                f"SinkKVCache.update: k [..., T, D] and v [..., T, Dv] must share their leading "
                f"dims, got {tuple(k.shape)} and {tuple(v.shape)}"
            )
        if self.k is not None and (
            k.shape[:-2] != self.k.shape[:-2] or k.shape[-1] != self.k.shape[-1]
        ):
            raise ValueError(
                f"SinkKVCache.update: k of shape {tuple(k.shape)} does not extend the cached "
                f"{tuple(self.k.shape)} along dim -2"
            )
        Tn = k.shape[-2]
        self._evict()
        new_pos = np.arange(self.seen, self.seen + Tn)
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = cat([self.k, k], dim=-2), cat([self.v, v], dim=-2)
        self.positions = np.concatenate([self.positions, new_pos])
        self.seen += Tn
        mask = long_context_mask(new_pos, self.positions, self.window, self.sinks, k.device)
        return self.k, self.v, mask


def sliding_window_attention(
    q: Tensor, k: Tensor, v: Tensor, window: int, sinks: int = 0, chunk_size: int = 128
) -> Tensor:
    """Causal sliding-window (``sinks=0``) or StreamingLLM attention over a whole sequence,
    block by block through ``SinkKVCache``: queries in chunks of ``chunk_size``, each chunk
    attending to at most sinks + window - 1 + chunk_size keys. Equal to
    ``scaled_dot_product_attention(q, k, v, attn_mask=attention_sink_mask(T, sinks=sinks,
    window=window))``, but the largest score array is [chunk, sinks + window - 1 + chunk]
    instead of [T, T]: memory linear in T. Differentiable (the engine's autograd through the
    chunks). q: [..., T, D]; k, v: [..., T, D|Dv].
    """
    T = q.shape[-2]
    if k.shape[-2] != T or v.shape[-2] != T:
        raise ValueError(
            f"sliding_window_attention: q, k, v must share T on dim -2, got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if int(chunk_size) < 1:
        raise ValueError(f"sliding_window_attention: chunk_size must be >= 1, got {chunk_size}")
    cache, outs = SinkKVCache(window, sinks), []
    for a in range(0, T, chunk_size):
        sl = slice(a, min(a + chunk_size, T))
        ck, cv, mask = cache.update(k[..., sl, :], v[..., sl, :])
        outs.append(scaled_dot_product_attention(q[..., sl, :], ck, cv, attn_mask=mask))
    return outs[0] if len(outs) == 1 else cat(outs, dim=-2)


# ---------------------------------------------------------------- kNN memory
class KNNMemory:
    """The external memory of a Memorizing Transformer layer (Wu et al. 2022): the keys and
    values of past segments, one ``tinyllm.rag.ExactIndex`` (inner product) per (batch row,
    head), searched by the queries of the current segment.

    ``add(k, v)`` with k, v [B, H, T, D] (arrays or Tensors, stored detached: no gradient
    flows into the memory, as in the paper); ``search(q, topk)`` with q [B, H, Tq, D] returns
    (keys, values) [B, H, Tq, topk', D], topk' = min(topk, stored), the stored keys of the
    largest q.k first; ``clear()`` starts a new document. ``capacity`` drops the oldest
    entries (the paper's FIFO), by rebuilding the index.
    """

    def __init__(self, capacity: int = 65536) -> None:
        if int(capacity) < 1:
            raise ValueError(f"KNNMemory: capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.clear()

    def clear(self) -> None:
        self.keys = self.values = None  # [B, H, N, D]
        self._indexes: list | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def _rebuild(self) -> None:
        from tinyllm.rag.exact import ExactIndex

        B, H, _, D = self.keys.shape
        self._indexes = []
        for b in range(B):
            row = []
            for h in range(H):
                index = ExactIndex(D, metric="ip")
                index.add(self.keys[b, h].astype(np.float32))
                row.append(index)
            self._indexes.append(row)

    def add(self, k, v) -> None:
        k = np.asarray(k.data if isinstance(k, Tensor) else k)
        v = np.asarray(v.data if isinstance(v, Tensor) else v)
        if k.ndim != 4 or v.shape[:3] != k.shape[:3]:
            raise ValueError(
                f"KNNMemory.add: expected k [B, H, T, D] and v [B, H, T, Dv], got "
                f"{k.shape}, {v.shape}"
            )
        if self.keys is not None and self.keys.shape[:2] != k.shape[:2]:
            raise ValueError(
                f"KNNMemory.add: the memory holds [B, H] = {self.keys.shape[:2]}, got k "
                f"{k.shape}; clear() it first"
            )
        if self.keys is None:
            self.keys, self.values = k.copy(), v.copy()
        else:
            self.keys = np.concatenate([self.keys, k], axis=2)
            self.values = np.concatenate([self.values, v], axis=2)
        if len(self) > self.capacity:  # FIFO: keep the newest
            self.keys = self.keys[:, :, -self.capacity :]
            self.values = self.values[:, :, -self.capacity :]
            self._rebuild()
        elif self._indexes is None:
            self._rebuild()
        else:
            for b, row in enumerate(self._indexes):
                for h, index in enumerate(row):
                    index.add(k[b, h].astype(np.float32))

    def search(self, q, topk: int):
        q = np.asarray(q.data if isinstance(q, Tensor) else q)
        if len(self) == 0:
            raise ValueError("KNNMemory.search: the memory is empty")
        B, H, Tq, _ = q.shape
        kk = min(int(topk), len(self))
        ids = np.empty((B, H, Tq, kk), np.int64)
        for b in range(B):
            for h in range(H):
                _, ids[b, h] = self._indexes[b][h].search(q[b, h].astype(np.float32), kk)
        bi = np.arange(B)[:, None, None, None]
        hi = np.arange(H)[None, :, None, None]
        return self.keys[bi, hi, ids], self.values[bi, hi, ids]  # [B, H, Tq, kk, D]


class KNNMemoryAttention(Module):
    """A Memorizing-Transformer attention layer around an existing ``Attention``: its own
    causal attention over the segment (``local``), plus attention over the ``topk`` keys of
    past segments retrieved from ``memory`` for each query (``mem``), mixed per head by a
    learned gate g (the paper's):

        mem_t   = sum_j softmax_j(q_t . k_j / sqrt(D)) v_j      over the retrieved k_j, v_j
        o_t     = sigmoid(g_h) mem_t + (1 - sigmoid(g_h)) local_t,      then o_proj

    Memory keys and queries are taken before RoPE (positionless, as the paper's memory keys
    carry no position). After each forward the segment's keys and values are added to the
    memory (detached). ``gate`` [H] starts at ``gate_init`` (sigmoid(-2) ~ 0.12 on memory).
    With an empty memory it is the wrapped attention exactly. No KV cache (segments only).
    """

    def __init__(self, attention, topk: int = 32, capacity: int = 65536,
                 gate_init: float = -2.0) -> None:  # fmt: skip
        super().__init__()
        from tinyllm.nn.parameter import Parameter

        if attention.n_kv_heads != attention.n_heads:
            raise ValueError("KNNMemoryAttention: grouped-query attention is not supported")
        self.attn = attention
        self.topk = int(topk)
        self.memory = KNNMemory(capacity)
        self.gate = Parameter(np.full(attention.n_heads, gate_init, np.float32))
        self.use_memory = True

    def forward(self, x, cache=None, position_offset: int | None = None, attn_mask=None):
        from tinyllm.nn.attention import attend

        a = self.attn
        if cache is not None or attn_mask is not None:
            raise ValueError("KNNMemoryAttention: no KV cache or attn_mask (segments only)")
        B, T, _ = x.shape
        H, D = a.n_heads, a.head_dim
        offset = 0 if position_offset is None else int(position_offset)
        q0 = a.q_proj(x).reshape(B, T, H, D).transpose(1, 2)  # [B, H, T, D], before RoPE
        k0 = a.k_proj(x).reshape(B, T, H, D).transpose(1, 2)
        v = a.v_proj(x).reshape(B, T, H, D).transpose(1, 2)
        q, k = a.rotary(q0, k0, offset) if a.rotary is not None else (q0, k0)
        dropout = a.dropout if a.training else 0.0
        o = attend(q, k, v, causal=True, window=a.window, dropout_p=dropout, scale=a.scale)
        if self.use_memory and len(self.memory):
            km, vm = self.memory.search(q0, self.topk)  # [B, H, T, k, D] constants
            km, vm = Tensor(km.astype(q0.dtype)), Tensor(vm.astype(v.dtype))
            scores = (q0.unsqueeze(-2) * km).sum(-1) * (1.0 / float(np.sqrt(D)))  # [B, H, T, k]
            mem = (softmax(scores, dim=-1).unsqueeze(-1) * vm).sum(-2)
            g = sigmoid(self.gate).reshape(1, H, 1, 1)
            o = g * mem + (1 - g) * o
        if self.use_memory:
            self.memory.add(k0.detach(), v.detach())
        return a.o_proj(o.transpose(1, 2).reshape(B, T, H * D))


def attach_knn_memory(model, layer: int, topk: int = 32, capacity: int = 65536):
    """Replace ``model.blocks[layer].attn`` by a ``KNNMemoryAttention`` around it (the same
    weights); returns the new layer (its ``memory.clear()`` starts a new document)."""
    block = model.blocks[layer]
    if isinstance(block.attn, KNNMemoryAttention):
        return block.attn
    block.attn = KNNMemoryAttention(block.attn, topk=topk, capacity=capacity)
    return block.attn
