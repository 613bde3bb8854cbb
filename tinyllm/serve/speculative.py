"""Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): a draft model q proposes
gamma tokens, the target p checks them in one forward, and the emitted tokens are distributed
exactly as sampling from p alone.

For drafted x_i ~ q_i:  accept with probability min(1, p_i(x_i) / q_i(x_i)) (u_i < p/q);
at the first rejection emit a token from the residual r(x) = max(0, p_i - q_i) / sum(...)
and stop; when all gamma are accepted, emit a bonus token from p_{gamma+1}. Per position,
P(emit x) = q(x) min(1, p(x)/q(x)) + (1 - sum_y min(p, q)(y)) r(x) = min(p, q)(x) +
max(0, p - q)(x) = p(x). Greedy (temperature 0): accept iff x_i = argmax p_i, which
reproduces the target's greedy decoding token for token.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinyllm import backend
from tinyllm.generation.processors import _softmax


def residual_distribution(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """max(0, p - q) normalized ([V]); p itself when p == q (never sampled then)."""
    r = np.maximum(p - q, 0.0)
    total = r.sum()
    return r / total if total > 0 else p


def emitted_distribution(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The closed form of one speculative position's output distribution: draft x ~ q,
    accepted with min(1, p/q), else a residual draw (equals p, the claim the tests check)."""
    accept = np.where(q > 0, np.minimum(1.0, p / np.where(q > 0, q, 1.0)), 0.0)
    return q * accept + (1.0 - (q * accept).sum()) * residual_distribution(p, q)


def verify(
    draft_tokens: np.ndarray,
    q_probs: np.ndarray,
    p_probs: np.ndarray,
    rng: np.random.Generator | None,
) -> list[int]:
    """The emitted tokens for drafts [gamma] with draft probs q [gamma, V] and target probs
    p [gamma + 1, V]; ``rng=None`` is greedy (accept iff the draft is the target's argmax)."""
    gamma = len(draft_tokens)
    if q_probs.shape[0] != gamma or p_probs.shape[0] != gamma + 1:
        raise ValueError(
            f"speculative verify: q_probs must be [{gamma}, V] and p_probs [{gamma + 1}, V], "
            f"got {q_probs.shape} and {p_probs.shape}"
        )
    out: list[int] = []
    for i, x in enumerate(int(t) for t in draft_tokens):
        if rng is None:
            best = int(np.argmax(p_probs[i]))
            out.append(best)
            if best != x:
                return out
            continue
        if rng.random() < p_probs[i, x] / q_probs[i, x]:
            out.append(x)
            continue
        r = residual_distribution(p_probs[i], q_probs[i])
        out.append(int(min(np.searchsorted(np.cumsum(r), rng.random() * r.sum(), "right"),
                           len(r) - 1)))  # fmt: skip
        return out
    last = p_probs[gamma]
    if rng is None:
        out.append(int(np.argmax(last)))
    else:
        cdf = np.cumsum(last)
        out.append(int(min(np.searchsorted(cdf, rng.random() * cdf[-1], "right"), len(cdf) - 1)))
    return out


def _probs(logits, temperature: float) -> np.ndarray:
    z = backend.to_numpy(logits).astype(np.float64)
    return _softmax(z / temperature) if temperature > 0 else _softmax(z)


def speculative_generate(
    target,
    draft,
    prompt: list[int],
    max_new_tokens: int,
    gamma: int = 4,
    temperature: float = 1.0,
    seed: int = 0,
    callback: Callable[[list[int]], None] | None = None,
) -> tuple[list[int], dict]:
    """Continue ``prompt`` with ``target`` (a tinyllm GPT/Llama) helped by ``draft`` (a smaller
    one, same vocabulary). Returns (new tokens, stats with the acceptance rate). The context
    must fit both models' block_size (no sliding window here). ``callback(tokens)`` gets the
    tokens each round emits (for streaming and latency measurements)."""
    from tinyllm.models.decoder import Decoder

    if target.config.vocab_size != draft.config.vocab_size:
        raise ValueError(
            f"speculative_generate: vocabularies differ ({target.config.vocab_size} vs "
            f"{draft.config.vocab_size})"
        )
    total = len(prompt) + max_new_tokens + gamma + 1
    limit = min(target.config.block_size, draft.config.block_size)
    if total > limit:
        raise ValueError(
            f"speculative_generate: prompt + max_new_tokens + gamma + 1 = {total} exceeds the "
            f"context length {limit}"
        )
    rng = np.random.default_rng(seed) if temperature > 0 else None
    tdec, ddec = Decoder(target, 1, total), Decoder(draft, 1, total)
    tokens = list(prompt)
    # both caches hold tokens[:-1]; the last token is fed at the start of each round
    if len(tokens) > 1:
        tdec.prefill(np.asarray([tokens[:-1]]))
        ddec.prefill(np.asarray([tokens[:-1]]))
    drafted = accepted = rounds = 0
    new: list[int] = []
    while len(new) < max_new_tokens:
        # both caches hold len(tokens) - 1 positions here
        drafts, q_rows, feed = [], [], tokens[-1]
        for _ in range(gamma):
            q = _probs(ddec.step(np.asarray([feed]))[0], temperature)
            x = int(np.argmax(q)) if rng is None else int(
                min(np.searchsorted(np.cumsum(q), rng.random(), "right"), len(q) - 1))  # fmt: skip
            drafts.append(x)
            q_rows.append(q)
            feed = x
        p_logits = tdec.prefill(np.asarray([[tokens[-1], *drafts]]), all_logits=True)[0]
        p_rows = _probs(p_logits, temperature)
        emitted = verify(np.asarray(drafts), np.asarray(q_rows), p_rows, rng)
        n_acc = len(emitted) - 1 if len(emitted) <= gamma else gamma
        drafted += gamma
        accepted += n_acc
        rounds += 1
        tokens += emitted
        new += emitted
        if callback is not None:
            callback(emitted[: max(0, max_new_tokens - len(new) + len(emitted))])
        # keep the accepted prefix: positions up to the last emitted token (exclusive)
        tdec.truncate(len(tokens) - 1)
        ddec.truncate(min(ddec.pos, len(tokens) - 1))
        if ddec.pos < len(tokens) - 1:  # all accepted: the draft never saw its last draft
            ddec.step(np.asarray([tokens[ddec.pos]]))
    new = new[:max_new_tokens]
    stats = {
        "rounds": rounds,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / max(drafted, 1),
        "tokens_per_round": len(new) / max(rounds, 1),
    }
    return new, stats
