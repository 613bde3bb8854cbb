"""One forward of a ragged batch through the paged cache (selective batching, Orca).

Sequence n brings Tn new tokens at positions p_n .. p_n + Tn - 1 (a prefill chunk, or one
decode token). Everything but attention runs on the concatenation [sum Tn, C]; each token's
K and V are written into its slot (table[p // S], p % S); attention is per sequence, through
its block table (decode rows batched in one ``paged_attention_forward`` call, prefill chunks
with the bottom-right causal mask). Returns the logits after each sequence's last token.
The weights, norms, FFN and RoPE tables are ``Decoder``'s (models/decoder.py): the same
forward as ``LanguageModel.generate``, with the cache laid out in blocks.
"""

from __future__ import annotations

import numpy as np

from tinyllm import backend
from tinyllm.kernels import rope_forward, use
from tinyllm.kernels.paged_attention import paged_attention_forward, paged_prefill_attention
from tinyllm.models.decoder import Decoder
from tinyllm.serve.paged_cache import PagedKVCache


class PagedRunner:
    KERNELS = ("reference", "numba", "cuda", "auto")

    def __init__(self, model, num_blocks: int, block_size: int = 16, kernel: str = "reference"):
        if kernel not in self.KERNELS:
            raise ValueError(f"PagedRunner: kernel must be one of {self.KERNELS}, got {kernel!r}")
        self.dec = Decoder(model, 1, 1)  # weights only; its own cache is 1 token
        d = self.dec
        self.cache = PagedKVCache(len(d.layers), num_blocks, block_size, d.Hkv, d.D, d.dtype, d.xp)
        self.block_size, self.max_len = block_size, model.config.block_size
        # the decode tier (kernels.dispatch): "reference" is bitwise the contiguous formula;
        # "numba"/"cuda" force a tier where the arrays' device allows it; "auto" picks by device
        self.kernel = kernel

    def forward(self, batch: list[tuple[object, list[int], int]]):
        """batch: (seq id, new tokens, position of the first); logits [N, V] (host array)."""
        d, xp, cache = self.dec, self.dec.xp, self.cache
        H, Hkv, D = d.H, d.Hkv, d.D
        tokens = np.concatenate([np.asarray(t, dtype=np.int64) for _, t, _ in batch])
        positions = np.concatenate([p + np.arange(len(t)) for _, t, p in batch])
        if positions.max() >= self.max_len:
            raise ValueError(f"PagedRunner: position {positions.max()} beyond the context "
                             f"length {self.max_len}")  # fmt: skip
        blocks, offsets = [], []
        for seq, t, p in batch:
            b, o = cache.slots(seq, range(p, p + len(t)))
            blocks += b
            offsets += o
        blocks, offsets = xp.asarray(blocks), xp.asarray(offsets)
        x = d.embed[xp.asarray(tokens)]  # [N_tok, C]
        if d.wpe is not None:
            x = x + d.wpe[xp.asarray(positions)]
        bounds = np.cumsum([0] + [len(t) for _, t, _ in batch])
        decode = [i for i, (_, t, _) in enumerate(batch) if len(t) == 1]
        tables = {seq: xp.asarray(cache.tables[seq]) for seq, _, _ in batch}
        if decode:  # one padded [n_decode, width] table for every layer's decode call
            rows = [int(bounds[j]) for j in decode]
            lens = [batch[j][2] + 1 for j in decode]
            width = max(len(cache.tables[batch[j][0]]) for j in decode)
            bt = np.zeros((len(decode), width), dtype=np.int64)
            for r, j in enumerate(decode):
                t = cache.tables[batch[j][0]]
                bt[r, : len(t)] = t
            bt = xp.asarray(bt)
        Ntok = len(tokens)
        for i, layer in enumerate(d.layers):
            h = d._apply_norm(x, layer["norm_1"])
            qkv = layer["qkv"](h)
            qk = qkv[:, : (H + Hkv) * D].reshape(Ntok, H + Hkv, D).transpose(1, 0, 2)
            if layer["rotary"] is not None:
                rot = layer["rotary"]
                cos, sin = rot.cos_sin(int(positions.max()) + 1, 0, qk)
                idx = xp.asarray(positions)
                qk = rope_forward(qk, cos[idx], sin[idx], interleaved=rot.layout == "interleaved")
            q = qk[:H].transpose(1, 0, 2)  # [N_tok, H, D]
            k = qk[H:].transpose(1, 0, 2)
            v = qkv[:, (H + Hkv) * D :].reshape(Ntok, Hkv, D)
            cache.K[i, blocks, :, offsets] = k
            cache.V[i, blocks, :, offsets] = v
            a = xp.empty_like(q)
            if decode:
                with use(self.kernel):
                    a[rows] = paged_attention_forward(q[rows], cache.K[i], cache.V[i], bt, lens)
            for j, (seq, t, p) in enumerate(batch):
                if len(t) == 1:
                    continue
                lo, hi = int(bounds[j]), int(bounds[j + 1])
                a[lo:hi] = paged_prefill_attention(
                    q[lo:hi], cache.K[i], cache.V[i], tables[seq], p + len(t)
                )
            o = layer["o"](a.reshape(Ntok, H * D))
            x = x + o
            x = x + d._ffn(d._apply_norm(x, layer["norm_2"]), layer)
        last = xp.asarray(bounds[1:] - 1)
        return backend.to_numpy(d.head(d._apply_norm(x[last], d.final)))


__all__ = ["PagedRunner"]
