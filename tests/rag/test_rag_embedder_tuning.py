"""Tuning the MiniLM bi-encoder with LoRA (a tiny random BERT: no model package needed): the
split forward against the embedder, the in-batch loss against the listwise loss, the mined
rows, a tuning run, and the adapter on disk."""

from __future__ import annotations

import numpy as np
import pytest

import tinyllm
from tests.models.test_bert import tiny_embedder
from tinyllm import embeddings
from tinyllm.rag.cross_encoder import listwise_loss
from tinyllm.rag.embedder_tuning import (
    TUNED_PREFIX,
    TuningRow,
    adapter_digest,
    apply_adapter,
    in_batch_loss,
    load_adapter,
    lower_states,
    mine_rows,
    save_adapter,
    top_embeddings,
    tune_minilm,
    tuned_minilm,
)
from tinyllm.rag.passages import Passage
from tinyllm.rag.retriever import PassageRetriever
from tinyllm.tensor import Tensor

TEXTS = ["the cat sat on the mat", "a b c", "the mat", "cat a mat b", "c c the cat", "sat"]


@pytest.mark.parametrize("top_layers", [1, 2])
def test_lower_then_top_layers_is_the_embedder(top_layers):
    embedder = tiny_embedder()
    states = lower_states(embedder.model, embedder.tokenizer, TEXTS, top_layers, 64, batch_size=4)
    with tinyllm.no_grad():
        split = top_embeddings(embedder.model, top_layers, states).numpy()
    np.testing.assert_allclose(split, embedder(TEXTS), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="top_layers must be in 1..2"):
        lower_states(embedder.model, embedder.tokenizer, TEXTS, 3, 64)


def test_in_batch_loss_is_the_listwise_loss_of_each_row():
    rng = np.random.default_rng(0)
    q, p = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    answers = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]], dtype=bool)
    queries, passages = Tensor(q, requires_grad=True), Tensor(p, requires_grad=True)
    loss = in_batch_loss(queries, passages, answers, scale=2.0)
    loss.backward()
    s = 2.0 * q @ p.T
    rows = [listwise_loss(s[i], answers[i]) for i in range(3)]
    assert loss.item() == pytest.approx(np.mean([value for value, _ in rows]), rel=1e-10)
    d_s = np.stack([grad for _, grad in rows]) / 3  # dL/ds, then s = 2 Q Pᵀ
    np.testing.assert_allclose(queries.grad.numpy(), 2.0 * d_s @ p, rtol=1e-9)
    np.testing.assert_allclose(passages.grad.numpy(), 2.0 * d_s.T @ q, rtol=1e-9)
    with pytest.raises(ValueError, match="every row needs"):
        in_batch_loss(queries, passages, np.zeros((3, 4), dtype=bool), 1.0)


def toy_store():
    passages = [Passage(i, f"t{i % 3}", text) for i, text in enumerate(TEXTS)]
    memberships = [[p.topic] for p in passages]
    store = PassageRetriever.build(passages, tiny_embedder(), memberships=memberships)
    homes = [frozenset(m) for m in memberships]
    return store, homes


def test_mined_rows_pair_an_answer_with_a_hard_negative():
    store, homes = toy_store()
    rows = mine_rows(store, homes, [("the cat", ["t0"]), ("a b", ["t1", "t2"])])
    for row, topics in zip(rows, (["t0"], ["t1", "t2"])):
        assert row.answers.tolist() == [bool(h & set(topics)) for h in homes]
        assert row.answers[row.positive] and not row.answers[row.negative]
    with pytest.raises(ValueError, match="no passage answers"):
        mine_rows(store, homes, [("the cat", ["t9"])])


def test_tuning_lowers_the_loss_and_the_adapter_round_trips(tmp_path, monkeypatch):
    store, homes = toy_store()
    questions = [("the cat", ["t0"]), ("a b", ["t1"]), ("mat c", ["t2"]), ("sat", ["t2"])] * 4
    rows = mine_rows(store, homes, questions)
    embedder = tiny_embedder()
    before = embedder(TEXTS)

    def mean_loss(model):
        states_q = lower_states(model, embedder.tokenizer, [r.query for r in rows], 1, 64)
        states_p = lower_states(model, embedder.tokenizer, TEXTS, 1, 64)
        with tinyllm.no_grad():
            q, p = top_embeddings(model, 1, states_q), top_embeddings(model, 1, states_p)
            return in_batch_loss(q, p, np.stack([r.answers for r in rows]), 20.0).item()

    start = mean_loss(embedder.model)
    rng_before = tinyllm.backend.get_rng_state()["cpu"]
    adapter = tune_minilm(
        embedder, TEXTS, rows, top_layers=1, rank=2, alpha=4.0, lr=5e-2, epochs=8, batch_size=4
    )
    assert tinyllm.backend.get_rng_state()["cpu"] == rng_before  # the global stream is untouched
    assert mean_loss(embedder.model) < 0.5 * start
    assert sorted(adapter) == sorted(  # one A and one B for each linear map of the top layer
        f"layers.1.{name}.{ab}"
        for name in ("attention.q_proj", "attention.k_proj", "attention.v_proj",
                     "attention.o_proj", "intermediate", "output")
        for ab in ("lora_A", "lora_B")
    )  # fmt: skip
    assert not np.allclose(embedder(TEXTS), before)
    save_adapter(tmp_path / "lora.npz", adapter, rank=2, alpha=4.0)
    loaded, rank, alpha = load_adapter(tmp_path / "lora.npz")
    assert (rank, alpha) == (2, 4.0) and adapter_digest(loaded) == adapter_digest(adapter)
    fresh = tiny_embedder()
    apply_adapter(fresh.model, loaded, rank, alpha)
    np.testing.assert_allclose(fresh(TEXTS), embedder(TEXTS), rtol=1e-5, atol=1e-6)
    # tuned_minilm: the embedder with the adapter merged, named by its digest (MiniLM
    # itself replaced by the tiny BERT)
    monkeypatch.setattr(embeddings, "MiniLMEmbedder", lambda: tiny_embedder())
    named = tuned_minilm(tmp_path / "lora.npz")
    assert named.name == TUNED_PREFIX + adapter_digest(adapter)
    np.testing.assert_allclose(named(TEXTS), embedder(TEXTS), rtol=1e-5, atol=1e-6)
    # the same seed gives the same adapter
    again = tiny_embedder()
    repeat = tune_minilm(
        again, TEXTS, rows, top_layers=1, rank=2, alpha=4.0, lr=5e-2, epochs=8, batch_size=4
    )
    assert adapter_digest(repeat) == adapter_digest(adapter)
    with pytest.raises(ValueError, match="missing or has another shape"):
        apply_adapter(tiny_embedder().model, loaded, 3, alpha)
    with pytest.raises(ValueError, match="no training rows"):
        tune_minilm(tiny_embedder(), TEXTS, [])
    with pytest.raises(ValueError, match="than the 5 passage_texts"):
        tune_minilm(tiny_embedder(), TEXTS[:5], rows)
    assert isinstance(rows[0], TuningRow)
