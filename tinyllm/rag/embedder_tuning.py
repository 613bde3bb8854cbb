"""Tuning all-MiniLM-L6-v2 to a corpus: LoRA on its top layers, trained as a bi-encoder.

Training rows are (question, answering topics). For each row the store's first stage (BM25
and dense cosine, each over its top 100, min-max fused with weights 1 / 1) gives the
positive p⁺, the best fused passage whose homes meet the topics, and the hard negative p⁻,
the best one whose homes do not. A batch of B rows scores every query against every
candidate of the batch (its p⁺ and p⁻, so the other rows' passages are in-batch negatives):

    s_ij = τ cos(e(q_i), e(p_j)),
    L = (1/B) Σ_i [log Σ_j e^{s_ij} − log Σ_{j ∈ P_i} e^{s_ij}],

P_i the candidates whose homes meet row i's topics: per row, the listwise loss of
:func:`tinyllm.rag.cross_encoder.listwise_loss`. e is the unit mean-pooled last hidden state,
as :class:`~tinyllm.embeddings.MiniLMEmbedder` embeds. Only LoRA matrices train
(:mod:`tinyllm.nn.lora`: W' = W + (α/r) B A on the q, k, v, o and both feed-forward maps of
the top ``top_layers`` layers), so the adapter is small enough to ship (``save_adapter``).
Measured in round 8 of ``experiments/rag_retrieval.py``, not a default: the tuned model
gains on questions about topics that training questions covered and not on new topics.
The frozen lower layers do not change, so their outputs for every text are computed once
(:func:`lower_states`) and each step runs the top layers only: a fold of round 8 of
``experiments/rag_retrieval.py`` (two epochs over about 1,300 rows, then the store rebuilt
with the tuned model) takes about 4.5 minutes on 2 CPU cores.

AdamW (weight decay 0.01) with a linear warm-up over the first 10 % of the steps and a
linear decay to 0; dropout of the model's layers is on while training. The random draws
(LoRA's initial A, dropout, the batch order) come from ``seed``; tinyllm's global generator
is restored afterwards.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyllm.backend import get_rng_state, manual_seed, set_rng_state
from tinyllm.embeddings import l2_normalize, mean_pool, padded_batches
from tinyllm.grad_mode import no_grad
from tinyllm.io.atomic import atomic_write
from tinyllm.nn.lora import apply_lora, lora_named_parameters, lora_parameters, merge_lora
from tinyllm.nn.module import eval_mode
from tinyllm.optim.adamw import AdamW
from tinyllm.tensor import Tensor

TUNED_PREFIX = "tinyllm.embeddings.MiniLMEmbedder+lora:"  # + the adapter's digest
MINING_DEPTH = 100  # the first-stage lists the positive and the negative are mined from
MINING_WEIGHTS = (1.0, 1.0)  # BM25, dense


@dataclass(frozen=True)
class TuningRow:
    """One training row: the query, which passages answer it (bool [P]), its positive p⁺
    and hard negative p⁻ (None when every mined passage answers)."""

    query: str
    answers: np.ndarray
    positive: int
    negative: int | None


def mine_rows(store, homes: Sequence[Collection[str]], rows) -> list[TuningRow]:
    """:class:`TuningRow` of each ``(query, topics)`` in ``rows``: ``store`` (a
    :class:`~tinyllm.rag.retriever.PassageRetriever` with a dense index) ranks, ``homes``
    (:func:`~tinyllm.rag.evaluation.passage_homes`) says which passages answer."""
    out = []
    for query, topics in rows:
        topics = set(topics)
        answers = np.array([bool(h & topics) for h in homes])
        if not answers.any():
            raise ValueError(f"mine_rows: no passage answers {query!r} (topics {sorted(topics)})")
        ranked = [pid for pid, _ in store.first_stage(query, MINING_DEPTH, MINING_WEIGHTS)[0]]
        positive = next((p for p in ranked if answers[p]), int(np.flatnonzero(answers)[0]))
        negative = next((p for p in ranked if not answers[p]), None)
        out.append(TuningRow(query, answers, positive, negative))
    return out


def _padded(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    x = np.zeros((len(rows), width, rows[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        x[i, : len(r)], mask[i, : len(r)] = r, 1
    return x, mask


def _encoded(tokenizer, text: str | tuple[str, str], max_length: int):
    if isinstance(text, tuple):  # [CLS] q [SEP] p [SEP], the passage cut to fit
        return tokenizer.encode_with_types(*text, max_length=max_length, truncation="only_second")
    return tokenizer.encode_with_types(text, max_length=max_length, truncation=True)


def lower_states(
    model,
    tokenizer,
    texts: Sequence[str | tuple[str, str]],
    top_layers: int,
    max_length: int,
    batch_size: int = 32,
) -> list[np.ndarray]:
    """For every text, the output [T_i, C] of the embeddings and the layers below the top
    ``top_layers`` (eval mode, no gradient; T_i tokens after truncation to ``max_length``).
    A text may be a (query, passage) pair, read as one sequence (token types 0 and 1)."""
    from tinyllm.models.bert import padding_mask

    first_top = _first_top(model, top_layers)
    encoded = [_encoded(tokenizer, t, max_length) for t in texts]
    out: list[np.ndarray | None] = [None] * len(texts)
    with eval_mode(model), no_grad():
        for rows, ids, types, mask in padded_batches(encoded, batch_size):
            x = model.embeddings(Tensor(ids), Tensor(types))
            attention = padding_mask(mask)
            for layer in model.layers[:first_top]:
                x = layer(x, attention)
            states = x.numpy()
            for r, i in enumerate(rows):
                out[i] = states[r, : len(encoded[i][0])].copy()
    return out


def _first_top(model, top_layers: int) -> int:
    n = len(model.layers)
    if not 1 <= top_layers <= n:
        raise ValueError(f"embedder tuning: top_layers must be in 1..{n}, got {top_layers}")
    return n - top_layers


def top_embeddings(model, top_layers: int, states: Sequence[np.ndarray]) -> Tensor:
    """Unit mean-pooled outputs [B, C] of the top ``top_layers`` layers run on ``states``
    (from :func:`lower_states`): the sentence embeddings, differentiable in the top layers."""
    from tinyllm.models.bert import padding_mask

    x, mask = _padded(states)
    h = Tensor(x)
    attention = padding_mask(mask)
    for layer in model.layers[_first_top(model, top_layers) :]:
        h = layer(h, attention)
    return l2_normalize(mean_pool(h, mask))


def listwise_rows(scores: Tensor, positive: np.ndarray) -> Tensor:
    """Mean over the rows of log Σ_j e^{s_ij} − log Σ_{j∈P_i} e^{s_ij} (``positive`` [B, M]
    bool: P_i; every row needs one): the listwise loss of
    :func:`tinyllm.rag.cross_encoder.listwise_loss`, row by row."""
    positive = np.asarray(positive, dtype=bool)
    if not positive.any(axis=1).all():
        raise ValueError("listwise loss: every row needs an answering candidate")
    off = Tensor(np.where(positive, 0.0, -1e9).astype(scores.dtype))
    return (scores.logsumexp(dim=1) - (scores + off).logsumexp(dim=1)).mean()


def in_batch_loss(queries: Tensor, passages: Tensor, answers: np.ndarray, scale: float) -> Tensor:
    """:func:`listwise_rows` of s = scale · Q Pᵀ (``answers`` [B, M] bool: P_i)."""
    return listwise_rows((queries @ passages.transpose(0, 1)) * scale, answers)


def train_top_layers(
    model,
    top_layers: int,
    rank: int,
    alpha: float,
    n_rows: int,
    batch_loss: Callable[[np.ndarray], Tensor],
    lr: float,
    epochs: float,
    batch_size: int,
    seed: int,
    extra: Sequence[dict] = (),
    progress: str | None = None,
) -> dict[str, np.ndarray]:
    """Put LoRA on ``model``'s top ``top_layers`` layers and minimise ``batch_loss(rows)``
    (``rows``: indices into the ``n_rows`` training rows, shuffled each epoch) with AdamW
    (weight decay 0.01, the learning rate warmed up linearly over the first 10 % of the
    steps, then decayed linearly to 0); ``extra``: more parameter groups (``{"params",
    "lr"}``, e.g. a head). Returns the adapter ``{name: A or B}`` and merges it into the
    weights. ``progress``: a label to print the loss under, or None. The draws (LoRA's A,
    dropout, the order) come from ``seed``; tinyllm's global generator is restored."""
    start_top = _first_top(model, top_layers)
    saved = get_rng_state()
    manual_seed(seed)
    try:
        for layer in model.layers[start_top:]:
            apply_lora(layer, r=rank, alpha=alpha)
        lora = [p for layer in model.layers[start_top:] for p in lora_parameters(layer)]
        groups = [{"params": lora, "lr": lr}, *extra]
        base_lrs = [group["lr"] for group in groups]
        rng = np.random.default_rng(seed)
        steps = int(np.ceil(n_rows / batch_size * epochs))
        warmup = max(1, steps // 10)
        order = np.concatenate([rng.permutation(n_rows) for _ in range(int(np.ceil(epochs)))])
        optimizer = AdamW(groups, lr=lr, weight_decay=0.01)
        model.train()
        began, losses = time.perf_counter(), []
        for step in range(steps):
            loss = batch_loss(order[step * batch_size : (step + 1) * batch_size])
            factor = (step + 1) / warmup if step < warmup else (steps - step) / (steps - warmup)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.item()))
            if progress and (step % 50 == 0 or step == steps - 1):
                print(f"{progress}: step {step + 1}/{steps}, loss {np.mean(losses[-50:]):.4f}, "
                      f"{time.perf_counter() - began:.0f} s", flush=True)  # fmt: skip
    finally:
        model.eval()
        set_rng_state(saved)
    adapter = {
        f"layers.{start_top + i}.{name}": np.asarray(p.data, dtype=np.float32)
        for i, layer in enumerate(model.layers[start_top:])
        for name, p in lora_named_parameters(layer)
    }
    merge_lora(model)
    return adapter


def tune_minilm(
    embedder,
    passage_texts: Sequence[str],
    rows: Sequence[TuningRow],
    top_layers: int = 2,
    rank: int = 16,
    alpha: float = 32.0,
    lr: float = 2e-4,
    epochs: float = 2.0,
    batch_size: int = 16,
    scale: float = 20.0,
    query_length: int = 64,
    passage_length: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Train LoRA on ``embedder.model``'s top layers (in place, then merged into the
    weights) on ``rows`` (:func:`mine_rows`, indices into ``passage_texts``); returns the
    adapter ``{name: A or B}`` for :func:`save_adapter`. See the module docstring."""
    if not rows:
        raise ValueError("tune_minilm: no training rows")
    wrong = [r.query for r in rows if len(r.answers) != len(passage_texts)]
    if wrong:
        raise ValueError(
            f"tune_minilm: {len(wrong)} rows (first {wrong[0]!r}) mark answers over another "
            f"number of passages than the {len(passage_texts)} passage_texts"
        )
    model, tokenizer = embedder.model, embedder.tokenizer
    queries = lower_states(model, tokenizer, [r.query for r in rows], top_layers, query_length)
    passages = lower_states(model, tokenizer, passage_texts, top_layers, passage_length)

    def batch_loss(picked: np.ndarray) -> Tensor:
        batch = [rows[i] for i in picked]
        candidates = list(
            dict.fromkeys(c for r in batch for c in (r.positive, r.negative) if c is not None)
        )
        return in_batch_loss(
            top_embeddings(model, top_layers, [queries[i] for i in picked]),
            top_embeddings(model, top_layers, [passages[c] for c in candidates]),
            np.array([[r.answers[c] for c in candidates] for r in batch]),
            scale,
        )

    return train_top_layers(
        model, top_layers, rank, alpha, len(rows), batch_loss, lr, epochs, batch_size, seed,
        progress="tune_minilm" if progress else None,
    )  # fmt: skip


def save_adapter(path: str | Path, adapter: dict[str, np.ndarray], rank: int, alpha: float) -> None:
    """Write the adapter (its A and B matrices, rank and alpha) as one .npz, atomically."""
    with atomic_write(path, "wb") as handle:
        np.savez(handle, rank=np.array(rank), alpha=np.array(alpha), **adapter)


def load_adapter(path: str | Path) -> tuple[dict[str, np.ndarray], int, float]:
    """(adapter, rank, alpha) as :func:`save_adapter` wrote them."""
    with np.load(path, allow_pickle=False) as data:
        adapter = {k: data[k] for k in data.files if k not in ("rank", "alpha")}
        return adapter, int(data["rank"]), float(data["alpha"])


def apply_adapter(model, adapter: dict[str, np.ndarray], rank: int, alpha: float) -> None:
    """Wrap the layers named in ``adapter`` in LoRA, set their A and B, and merge:
    W <- W + (alpha / rank) B A (tinyllm's global generator is left as it was)."""
    layers = sorted({int(key.split(".")[1]) for key in adapter})
    saved = get_rng_state()
    try:
        for index in layers:
            apply_lora(model.layers[index], r=rank, alpha=alpha)
    finally:
        set_rng_state(saved)
    seen = set()
    for index in layers:
        for name, p in lora_named_parameters(model.layers[index]):
            key = f"layers.{index}.{name}"
            if key not in adapter or adapter[key].shape != p.data.shape:
                raise ValueError(
                    f"apply_adapter: {key} {p.data.shape} is missing or has another shape in "
                    "the adapter"
                )
            p.data = adapter[key].astype(p.data.dtype)
            seen.add(key)
    if seen != set(adapter):
        raise ValueError(f"apply_adapter: unused arrays {sorted(set(adapter) - seen)}")
    merge_lora(model)


def adapter_digest(adapter: dict[str, np.ndarray]) -> str:
    """The first 12 hex digits of a SHA-256 over the adapter's names and float32 bytes."""
    digest = hashlib.sha256()
    for key in sorted(adapter):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(adapter[key], dtype=np.float32).tobytes())
    return digest.hexdigest()[:12]


def default_adapter_path() -> Path:
    """Where an adopted adapter ships: ``tinyllm/data/rag_minilm_lora.npz`` (none ships yet:
    round 8 of ``experiments/rag_retrieval.py`` did not adopt one)."""
    return Path(__file__).resolve().parent.parent / "data" / "rag_minilm_lora.npz"


def tuned_minilm(path: str | Path, **options):
    """A :class:`~tinyllm.embeddings.MiniLMEmbedder` (``options`` passed on) whose model
    carries the adapter saved at ``path``, merged; its ``name`` (what a store records, so
    that a store built with it cannot be loaded with another embedder) names the adapter
    by digest."""
    from tinyllm.embeddings import MiniLMEmbedder

    adapter, rank, alpha = load_adapter(path)
    embedder = MiniLMEmbedder(**options)
    apply_adapter(embedder.model, adapter, rank, alpha)
    embedder.name = TUNED_PREFIX + adapter_digest(adapter)
    return embedder
