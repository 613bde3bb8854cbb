"""Beam search (Hugging Face's ``num_beams`` semantics).

Each step every live beam b with log-probability score s_b is extended by every token v:
s_b + log softmax(z_b)_v; the 2 * num_beams best candidates are scanned in order: a candidate
ending in ``eos_token_id`` becomes a finished hypothesis (if it ranks among the first
num_beams), the others fill the next num_beams live beams. A hypothesis of L generated tokens
(EOS included) is ranked by

    score = sum log p / L ** length_penalty      (length_penalty > 0 favours longer ones)

``early_stopping=True`` stops once num_beams hypotheses are finished; ``False`` also waits
until the best live beam, scored as if it ended now, cannot beat the worst kept hypothesis
(HF's heuristic). If the search ends at ``max_new_tokens`` instead, the live beams join the
hypotheses. The best ``num_return_sequences`` are returned.

The model is any object with ``prefill(tokens [N, T]) -> logits [N, V]``,
``step(tokens [N]) -> logits [N, V]`` and ``reorder(index [N])`` (``Decoder`` is one).
"""

from __future__ import annotations

import numpy as np

from tinyllm import backend
from tinyllm.nn.module import eval_mode


def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def beam_search(
    stepper,
    prompt: list[int],
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
    eos_token_id: int | None = None,
    num_return_sequences: int = 1,
) -> list[tuple[list[int], float]]:
    """The best ``num_return_sequences`` (generated tokens, normalized score), best first."""
    if num_beams < 1 or not 1 <= num_return_sequences <= num_beams:
        raise ValueError(
            f"beam_search: need num_beams >= 1 and 1 <= num_return_sequences <= num_beams, got "
            f"{num_beams} and {num_return_sequences}"
        )
    if max_new_tokens < 1 or not prompt:
        raise ValueError("beam_search: need a non-empty prompt and max_new_tokens >= 1")
    nb = num_beams
    logits = stepper.prefill(np.asarray([prompt] * nb))
    scores = np.full(nb, -np.inf)
    scores[0] = 0.0  # identical beams at the start: expand one
    seqs: list[list[int]] = [[] for _ in range(nb)]
    finished: list[tuple[float, list[int]]] = []
    done = False  # stopped because enough hypotheses finished: live beams are dropped (HF)

    def add(seq, total):
        finished.append((total / len(seq) ** length_penalty, seq))
        finished.sort(key=lambda h: -h[0])
        del finished[nb:]

    for t in range(max_new_tokens):
        logp = _log_softmax(backend.to_numpy(logits).astype(np.float64))
        cand = (scores[:, None] + logp).reshape(-1)
        V = logp.shape[1]
        order = np.argsort(-cand, kind="stable")[: 2 * nb]
        next_beams, next_tokens, next_scores = [], [], []
        for rank, c in enumerate(order):
            if not np.isfinite(cand[c]):
                break
            b, v = divmod(int(c), V)
            if eos_token_id is not None and v == eos_token_id:
                if rank < nb:
                    add(seqs[b] + [v], float(cand[c]))
                continue
            next_beams.append(b)
            next_tokens.append(v)
            next_scores.append(float(cand[c]))
            if len(next_beams) == nb:
                break
        if len(finished) >= nb:
            best_live = next_scores[0] / (t + 1) ** length_penalty if next_scores else -np.inf
            if early_stopping or best_live <= finished[-1][0]:
                done = True
                break
        if not next_beams or t == max_new_tokens - 1:
            seqs = [seqs[b] + [v] for b, v in zip(next_beams, next_tokens)]
            scores = np.array(next_scores)
            break
        while len(next_beams) < nb:  # fewer live candidates than beams: pad with dead ones
            next_beams.append(next_beams[0])
            next_tokens.append(next_tokens[0])
            next_scores.append(-np.inf)
        stepper.reorder(np.asarray(next_beams))
        seqs = [seqs[b] + [v] for b, v in zip(next_beams, next_tokens)]
        scores = np.array(next_scores)
        logits = stepper.step(np.asarray(next_tokens))
    for seq, s in zip(seqs, scores):
        if not done and np.isfinite(s) and seq:
            add(seq, float(s))
    return [(seq, score) for score, seq in finished[:num_return_sequences]]


def model_beam_search(model, prompt: list[int], num_beams: int, max_new_tokens: int, **kwargs):
    """``beam_search`` on a tinyllm GPT/Llama through its KV-cached ``Decoder``."""
    from tinyllm.models.decoder import Decoder

    total = len(prompt) + max_new_tokens
    if total > model.config.block_size:
        raise ValueError(
            f"model_beam_search: prompt + max_new_tokens = {total} exceeds the context length "
            f"{model.config.block_size}"
        )
    with eval_mode(model):
        return beam_search(Decoder(model, num_beams, total), prompt, num_beams, max_new_tokens,
                           **kwargs)  # fmt: skip
