"""Tuning a MiniLM cross-encoder with LoRA and a head (a tiny random BERT, 32 positions: no
model package needed): the split forward of a pair against the joint pass, the mined groups,
a tuning run judged by the full joint pass, and the saved cross-encoder."""

from __future__ import annotations

import numpy as np
import pytest

import tinyllm
from tests.models.test_bert import TINY_VOCAB, tiny_model
from tests.rag.test_rag_embedder_tuning import TEXTS, toy_store
from tinyllm.embeddings import MiniLMEmbedder
from tinyllm.rag.cross_encoder import joint_embeddings, listwise_loss
from tinyllm.rag.cross_encoder_tuning import (
    HEAD,
    PairGroup,
    TunedCrossEncoder,
    load_cross_encoder,
    mine_groups,
    tune_cross_encoder,
)
from tinyllm.rag.embedder_tuning import adapter_digest, lower_states, save_adapter, top_embeddings
from tinyllm.rag.topic_scoring import rank_topics
from tinyllm.tokenizers.wordpiece import WordPieceTokenizer

QUESTIONS = [
    ("the cat", ["t0"]),
    ("a b", ["t1"]),
    ("mat c", ["t2"]),
    ("sat on", ["t2"]),
    ("the cat", ["t2"]),
]


def pair_embedder() -> MiniLMEmbedder:
    """The tiny BERT with room for a query and a passage in one sequence."""
    tokenizer = WordPieceTokenizer({t: i for i, t in enumerate(TINY_VOCAB)})
    return MiniLMEmbedder(model=tiny_model(seed=5, max_position_embeddings=32), tokenizer=tokenizer)


@pytest.mark.parametrize("top_layers", [1, 2])
def test_lower_then_top_layers_of_a_pair_is_the_joint_pass(top_layers):
    embedder = pair_embedder()
    pairs = [(q, t) for q, _ in QUESTIONS for t in TEXTS[:3]]
    states = lower_states(embedder.model, embedder.tokenizer, pairs, top_layers, 32, batch_size=5)
    with tinyllm.no_grad():
        split = top_embeddings(embedder.model, top_layers, states).numpy()
    joint = joint_embeddings(embedder, pairs, max_length=32)
    np.testing.assert_allclose(split, joint, rtol=1e-5, atol=1e-6)
    ids, types = embedder.tokenizer.encode_with_types(*pairs[0])
    assert len(states[0]) == len(ids) and types[-1] == 1  # the passage is segment 1


@pytest.mark.parametrize("size", [2, 3])
def test_mined_groups_are_the_top_documents_with_an_answer_and_a_miss(size):
    store, homes = toy_store()
    weights = {"fused": 1.0, "title": 0.5}
    groups = mine_groups(store, homes, QUESTIONS, size=size, weights=weights)
    assert [g.query for g in groups] == [q for q, _ in QUESTIONS]
    for group, (query, topics) in zip(groups, QUESTIONS):
        table = store.topic_features(query)
        shown = [p for _, p, _ in rank_topics(table, weights)[:size]]
        answers = [bool(homes[p] & set(topics)) for p in shown]
        if any(answers):
            assert group.passages.tolist() == shown
        else:  # the best fused answering passage takes the last place
            best = next(p for p, _ in table.fused if homes[p] & set(topics))
            assert group.passages.tolist() == shown[:-1] + [best]
        assert group.positive.tolist() == [bool(homes[p] & set(topics)) for p in group.passages]
        assert group.positive.any() and not group.positive.all()
    with pytest.raises(ValueError, match="size must be >= 2"):
        mine_groups(store, homes, QUESTIONS, size=1)


def group_loss(encoder, groups) -> float:
    """Mean listwise loss of the groups under the encoder's full joint pass."""
    losses = []
    for g in groups:
        scores = encoder([(g.query, TEXTS[p]) for p in g.passages])
        losses.append(listwise_loss(scores, g.positive)[0])
    return float(np.mean(losses))


def test_tuning_lowers_the_loss_and_the_cross_encoder_round_trips(tmp_path, monkeypatch):
    store, homes = toy_store()
    groups = mine_groups(store, homes, QUESTIONS[:4] * 3, size=3)  # consistent labels
    embedder = pair_embedder()
    options = dict(top_layers=1, rank=2, alpha=4.0, lr=5e-2, head_lr=0.2, epochs=10,
                   batch_size=4, max_length=32)  # fmt: skip
    rng_before = tinyllm.backend.get_rng_state()["cpu"]
    adapter = tune_cross_encoder(embedder, TEXTS, groups, **options)
    assert tinyllm.backend.get_rng_state()["cpu"] == rng_before
    assert adapter[HEAD].shape == (8,)
    # before tuning the head is 0: every candidate ties, log(K / |P|) per group
    untuned = np.mean([np.log(3 / g.positive.sum()) for g in groups])
    tuned = TunedCrossEncoder(embedder, adapter[HEAD], max_length=32)
    assert group_loss(tuned, groups) < 0.5 * untuned
    # saved and loaded into a fresh model: the same scores
    save_adapter(tmp_path / "ce.npz", adapter, rank=2, alpha=4.0)
    monkeypatch.setattr(tinyllm.embeddings, "MiniLMEmbedder", lambda: pair_embedder())
    loaded = load_cross_encoder(tmp_path / "ce.npz")
    loaded.max_length = 32
    pairs = [(g.query, TEXTS[p]) for g in groups[:4] for p in g.passages]
    np.testing.assert_allclose(loaded(pairs), tuned(pairs), rtol=1e-5, atol=1e-6)
    # the same seed gives the same cross-encoder
    repeat = tune_cross_encoder(pair_embedder(), TEXTS, groups, **options)
    assert adapter_digest(repeat) == adapter_digest(adapter)


def test_bad_input_is_refused(tmp_path):
    embedder = pair_embedder()
    group = PairGroup("the cat", np.array([0, 1]), np.array([True, False]))
    with pytest.raises(ValueError, match="no training groups"):
        tune_cross_encoder(embedder, TEXTS, [])
    longer = PairGroup("a", np.array([0, 1, 2]), np.array([True, False, False]))
    with pytest.raises(ValueError, match="every group needs 2 passages"):
        tune_cross_encoder(embedder, TEXTS, [group, longer])
    with pytest.raises(ValueError, match=r"head \(4,\), expected \(8,\)"):
        TunedCrossEncoder(embedder, np.zeros(4))
    save_adapter(tmp_path / "no_head.npz", {}, rank=2, alpha=4.0)
    with pytest.raises(ValueError, match="has no 'head.weight'"):
        load_cross_encoder(tmp_path / "no_head.npz")
    assert TunedCrossEncoder(embedder, np.zeros(8))([]).shape == (0,)
