"""What every language model here shares: weight init, and ``generate()`` with a KV cache.

Generation keeps a sliding context of at most ``block_size`` tokens: the prompt goes through
``Decoder.prefill`` in one batched forward, then one token at a time through ``Decoder.step``
(a lean array-code inference path with a preallocated KV cache, checked against the module
forward); the one host sync per new token reads its logits for sampling. When the context is
full, the cache is rebuilt (one prefill) from the last ``block_size // 2`` tokens (positions
restart at 0), so the model never sees a position it was not trained on. ``use_cache=False``
recomputes the same context from scratch at every step: the two paths produce the same
tokens, which the tests check.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

import tinyllm
from tinyllm import backend
from tinyllm.generation.sampling import sample_next
from tinyllm.models.decoder import Decoder
from tinyllm.nn import Embedding, Linear, Module, eval_mode, init
from tinyllm.nn.moe import routing_token_ids


def init_gpt2_(
    model: Module, std: float, n_layer: int, residual_projections: tuple[str, ...]
) -> None:
    """GPT-2's init of every ``Linear`` and ``Embedding`` of ``model``, in module order:
    weights N(0, std), biases 0, and the Linears named in ``residual_projections`` (those that
    write into the residual stream) at std / sqrt(2 n_layer)."""
    residual_std = std / math.sqrt(2 * n_layer)
    for name, module in model.named_modules():
        if isinstance(module, Linear):
            last = name.rsplit(".", 1)[-1]
            init.normal_(module.weight, 0.0, residual_std if last in residual_projections else std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, Embedding):
            init.normal_(module.weight, 0.0, std)


def check_generate_args(idx, max_new_tokens: int) -> None:
    """``generate``'s argument checks, shared by every model's ``generate``."""
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise ValueError(f"generate: idx must be [B, T] with T >= 1, got {tuple(idx.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")


def sampling_step(
    last: np.ndarray,
    tokens,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    logits_processor: Callable | None = None,
    callback: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The next token of every sequence (int64 [B], on the host), the step every model's
    ``generate`` shares: ``logits_processor(tokens [B, T'], last [B, V])`` if given, then
    ``sample_next`` (greedy at temperature 0; else temperature, top-k, top-p, one uniform
    draw per row from ``rng``), then ``callback`` with the first sequence's token."""
    if logits_processor is not None:
        last = logits_processor(backend.to_numpy(tokens), last)
    nxt = sample_next(last, rng, temperature, top_k, top_p)
    if callback is not None:
        callback(int(nxt[0]))
    return nxt


class LanguageModel(Module):
    """Base class: subclasses define ``blocks`` (a ModuleList) and ``forward(idx, caches)``."""

    config = None

    def init_weights(self, residual_projections: tuple[str, ...]) -> None:
        """GPT-2's init (``init_gpt2_``): N(0, 0.02) for weights, zeros for biases, and the
        projections that write into the residual stream scaled by 1/sqrt(2 n_layer)."""
        init_gpt2_(self, self.config.init_std, self.config.n_layer, residual_projections)

    def uses_moe(self) -> bool:
        """True when some layer is a mixture of experts."""
        from tinyllm.nn.moe import MoE

        return any(isinstance(m, MoE) for _, m in self.named_modules())

    def new_caches(self) -> list:
        return [block.new_cache() for block in self.blocks]

    @tinyllm.no_grad()
    def generate(
        self,
        idx,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: np.random.Generator | None = None,
        callback: Callable[[int], None] | None = None,
        use_cache: bool = True,
        logits_processor: Callable | None = None,
    ):
        """Continue ``idx`` [B, T] (int64) by ``max_new_tokens`` sampled tokens; returns [B, T+N].

        ``temperature=0`` is greedy. ``callback(token)`` is called with each new token of the
        first sequence (for streaming). ``generator`` seeds the sampling.
        ``logits_processor(input_ids [B, T'], logits [B, V]) -> logits`` (e.g. a
        ``tinyllm.generation.LogitsProcessorList``: penalties, bans, min-p, typical, ...) runs
        on each step's logits before temperature / top-k / top-p.

        Mixture-of-experts layers (``tinyllm.nn.moe.MoE``) decode with the cache too (top-k,
        noisy top-k without its noise, aux-free and hash routing). A model whose tokens see
        each other in the FFN (expert-choice routing, Soft MoE, a capacity factor: see
        ``Decoder.unsupported``) cannot: it decodes by the uncached forward whatever
        ``use_cache`` says. Hash-routed layers read the context's token ids.
        """
        check_generate_args(idx, max_new_tokens)
        rng = generator if generator is not None else np.random.default_rng()
        if use_cache and Decoder.unsupported(self) is not None:
            use_cache = False  # a token's FFN output depends on other tokens: no cache
        with eval_mode(self):
            block = self.config.block_size
            xp = backend.get_array_module(idx.data)
            # the tokens stay where idx is: only the logits each new token is sampled from are read
            tokens = idx.data.astype(np.int64)
            start = max(0, tokens.shape[1] - block)  # first token of the current context
            decoder = Decoder(self, tokens.shape[0], block) if use_cache else None
            pending = tokens[:, start:]  # tokens not yet fed through the cache
            for _ in range(max_new_tokens):
                if use_cache:
                    if pending.shape[1] > 1:  # the prompt (or a slid context): one forward
                        logits = decoder.prefill(pending)
                    else:
                        logits = decoder.step(pending[:, 0])
                    last = backend.to_numpy(logits)  # the one host sync per new token
                else:
                    context = tinyllm.Tensor(tokens[:, start:])
                    with routing_token_ids(self, context):  # hash-routed MoE layers read the ids
                        logits = self(context)
                    last = backend.to_numpy(logits.data[:, -1, :])
                nxt = sampling_step(last, tokens, rng, temperature, top_k, top_p, logits_processor,
                                    callback)  # fmt: skip
                pending = xp.asarray(nxt[:, None])  # host to device, no sync
                tokens = xp.concatenate([tokens, pending], axis=1)
                if tokens.shape[1] - start > block:  # context full: slide, rebuild the cache
                    start = tokens.shape[1] - block // 2
                    if use_cache:
                        decoder.reset()
                        pending = tokens[:, start:]
        return tinyllm.Tensor(tokens)
