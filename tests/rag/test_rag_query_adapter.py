"""The query adapter (near-identity linear map on query vectors, multi-positive InfoNCE) and
the template questions it can be fitted on."""

from __future__ import annotations

import numpy as np
import pytest

import tinyllm
from tinyllm.data.corpus import default_corpus_topics
from tinyllm.rag.context import topic_headings, topic_titles
from tinyllm.rag.evaluation import load_questions
from tinyllm.rag.passages import corpus_passages
from tinyllm.rag.query_adapter import (
    QueryAdapter,
    fit_query_adapter,
    infonce_loss,
    infonce_loss_and_grad,
)
from tinyllm.rag.retriever import PassageRetriever
from tinyllm.rag.similarity import normalize
from tinyllm.rag.template_questions import TITLE_TEMPLATES, template_questions
from tinyllm.tensor import Tensor

TOPICS = default_corpus_topics()


def _problem(seed: int, n: int = 6, m: int = 9, d: int = 5):
    rng = np.random.default_rng(seed)
    queries = normalize(rng.standard_normal((n, d)))
    passages = normalize(rng.standard_normal((m, d)))
    positives = rng.random((n, m)) < 0.3
    positives[np.arange(n), rng.integers(0, m, n)] = True  # at least one each
    return queries, passages, positives


def _naive_loss(delta, queries, passages, positives, scale, weight_decay):
    """L(Δ) written out directly in NumPy (no max shift, no engine): the reference."""
    d = queries.shape[1]
    z = queries @ (np.eye(d) + delta) if delta.ndim == 2 else queries * (1.0 + delta)
    u = z / np.sqrt(np.sum(z**2, axis=1, keepdims=True))
    e = np.exp(scale * (u @ passages.T))
    per_query = np.log(e.sum(axis=1)) - np.log(np.where(positives, e, 0.0).sum(axis=1))
    return per_query.mean() + weight_decay / 2 * np.sum(delta**2)


@pytest.mark.parametrize("form", ["full", "diagonal"])
def test_infonce_engine_gradient_matches_finite_differences(form):
    queries, passages, positives = _problem(0)
    rng = np.random.default_rng(1)
    shape = (5, 5) if form == "full" else (5,)
    delta = 0.3 * rng.standard_normal(shape)
    q, p = Tensor(queries), Tensor(passages)
    # the engine's backward of the Tensor loss against central differences of its forward
    assert tinyllm.gradcheck(
        lambda d: infonce_loss(d, q, p, positives, 7.0, 0.2),
        [Tensor(delta.copy(), requires_grad=True)],
        atol=1e-8,
        rtol=1e-6,
    )
    # the returned gradient against central differences of the NumPy reference
    loss, grad = infonce_loss_and_grad(delta, queries, passages, positives, 7.0, 0.2)
    numeric = np.zeros_like(delta)
    h = 1e-6  # central differences in float64: error ~ h^2 * |L'''| ~ 1e-11
    for index in np.ndindex(delta.shape):
        step = np.zeros_like(delta)
        step[index] = h
        up = _naive_loss(delta + step, queries, passages, positives, 7.0, 0.2)
        down = _naive_loss(delta - step, queries, passages, positives, 7.0, 0.2)
        numeric[index] = (up - down) / (2 * h)
    assert isinstance(loss, float) and grad.shape == delta.shape
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("form", ["full", "diagonal"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_infonce_loss_matches_the_numpy_reference(form, seed):
    queries, passages, positives = _problem(10 + seed, n=12, m=17, d=7)
    rng = np.random.default_rng(seed)
    delta = 0.4 * rng.standard_normal((7, 7) if form == "full" else (7,))
    for scale, decay in ((20.0, 0.0), (7.0, 0.3), (0.5, 2.0)):  # scale = 1 / temperature
        loss, _ = infonce_loss_and_grad(delta, queries, passages, positives, scale, decay)
        expected = _naive_loss(delta, queries, passages, positives, scale, decay)
        assert loss == pytest.approx(expected, rel=1e-12)
        tensor_loss = infonce_loss(
            Tensor(delta), Tensor(queries), Tensor(passages), positives, scale, decay
        )
        assert tensor_loss.shape == () and tensor_loss.item() == loss


@pytest.mark.parametrize("form", ["full", "diagonal"])
def test_infonce_loss_is_finite_throughout_and_equals_the_minus_inf_mask(form):
    """The positives' logsumexp masks with a finite HIDDEN_LOGIT: under detect_anomaly no op
    makes an Inf, and loss and gradient equal those of a -inf mask bit for bit."""
    import tinyllm.functional as F

    queries, passages, positives = _problem(3, n=12, m=17, d=7)
    delta = 0.4 * np.random.default_rng(4).standard_normal((7, 7) if form == "full" else (7,))
    with tinyllm.detect_anomaly():
        loss, grad = infonce_loss_and_grad(delta, queries, passages, positives, 20.0, 0.1)

    leaf = Tensor(delta, requires_grad=True)  # the same loss written with -inf
    q, p = Tensor(queries), Tensor(passages)
    z = q + (F.matmul(q, leaf) if delta.ndim == 2 else q * leaf)
    logits = F.matmul(z / F.sqrt(F.sum(z * z, dim=1, keepdim=True)), p.t()) * 20.0
    masked = F.masked_fill(logits, ~positives, -np.inf)
    minus_inf = F.mean(F.logsumexp(logits, 1) - F.logsumexp(masked, 1))
    minus_inf = minus_inf + F.sum(leaf * leaf) * 0.05
    minus_inf.backward()
    assert loss == minus_inf.item()
    np.testing.assert_array_equal(grad, leaf.grad.numpy())


def test_infonce_loss_by_hand_at_the_identity():
    queries = np.array([[1.0, 0.0]])
    passages = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    positives = np.array([[True, False, False]])
    loss, _ = infonce_loss_and_grad(np.zeros((2, 2)), queries, passages, positives, 2.0)
    # logits 2, 0, -2: loss = log(e^2 + 1 + e^-2) - 2
    assert loss == pytest.approx(np.log(np.exp(2) + 1 + np.exp(-2)) - 2, rel=1e-12)


def test_fit_learns_a_map_the_identity_misses():
    # queries are the positive passage seen through a fixed rotation: cosine retrieval with
    # the identity is poor, the fitted adapter undoes the rotation on fresh queries too
    rng = np.random.default_rng(2)
    d, m = 8, 40
    passages = normalize(rng.standard_normal((m, d)))
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    train, test = rng.integers(0, m, 200), rng.integers(0, m, 100)

    def noisy(ids):
        return normalize(passages[ids] @ rotation + 0.05 * rng.standard_normal((len(ids), d)))

    positives = np.zeros((200, m), bool)
    positives[np.arange(200), train] = True
    adapter = fit_query_adapter(noisy(train), passages, positives, 20.0, 1e-4, 500)
    fresh = noisy(test)

    def accuracy(vectors):
        return float(np.mean(np.argmax(vectors @ passages.T, axis=1) == test))

    assert accuracy(fresh) < 0.3
    assert accuracy(adapter(fresh)) > 0.95
    # the diagonal form cannot express a rotation: it must do worse than the full map
    diagonal = fit_query_adapter(noisy(train), passages, positives, 20.0, 1e-4, 500, "diagonal")
    assert accuracy(diagonal(fresh)) < accuracy(adapter(fresh))


def test_fit_is_deterministic_and_strong_decay_stays_near_identity():
    queries, passages, positives = _problem(3, n=20, m=15, d=6)
    a = fit_query_adapter(queries, passages, positives, 10.0, 1e-2)
    with tinyllm.no_grad():  # the fit turns autograd on for its own loss
        b = fit_query_adapter(queries, passages, positives, 10.0, 1e-2)
    assert np.array_equal(a.delta, b.delta)
    near = fit_query_adapter(queries, passages, positives, 10.0, 1e3)
    assert np.linalg.norm(near.delta) < 1e-2 * np.linalg.norm(a.delta)


def test_adapter_round_trip_and_errors(tmp_path):
    adapter = QueryAdapter(np.arange(9.0).reshape(3, 3) / 10, {"weight_decay": 0.1})
    adapter.save(tmp_path / "adapter.npz")
    loaded = QueryAdapter.load(tmp_path / "adapter.npz")
    x = normalize(np.random.default_rng(0).standard_normal((4, 3))).astype(np.float32)
    np.testing.assert_allclose(loaded(x), adapter(x), rtol=1e-6)
    assert loaded.meta == {"weight_decay": 0.1}
    np.testing.assert_allclose(np.linalg.norm(adapter(x), axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected vectors of shape \(n, 3\)"):
        adapter(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="square"):
        QueryAdapter(np.zeros((2, 3)))
    queries, passages, positives = _problem(4)
    positives[2] = False
    with pytest.raises(ValueError, match="query 2 has no positive passage"):
        fit_query_adapter(queries, passages, positives)
    with pytest.raises(ValueError, match=r"positives has shape \(6, 8\)"):
        infonce_loss_and_grad(np.zeros((5, 5)), queries, passages, positives[:, :8])


def test_retriever_applies_the_adapter_to_queries_only():
    passages = corpus_passages(50, 100)[:30]
    rng = np.random.default_rng(5)
    table = {p.text: normalize(rng.standard_normal((1, 8)))[0] for p in passages}

    def embed(texts):
        return np.stack([table.get(t, np.full(8, 8**-0.5)) for t in texts]).astype(np.float32)

    store = PassageRetriever.build(passages, embedder=embed)
    query = "a text the table does not know"
    plain = [p.id for p, _ in store.search(query, 5, "dense")]
    target = passages[17]

    class ToTarget:  # maps every query onto passage 17's vector
        def __call__(self, vectors):
            return np.repeat(table[target.text][None], len(vectors), 0)

    store.query_adapter = ToTarget()
    assert store.search(query, 1, "dense")[0][0].id == target.id
    assert np.allclose(store.dense_index._vectors, embed([p.text for p in passages]))
    store.query_adapter = None  # the cached query vector is not reused across adapters
    assert [p.id for p, _ in store.search(query, 5, "dense")] == plain


def test_template_questions_follow_their_rules():
    pairs = template_questions(TOPICS, per_topic=40, seed=0)
    assert pairs == template_questions(TOPICS, per_topic=40, seed=0)  # deterministic
    assert len({q for q, _ in pairs}) == len(pairs)
    titles = topic_titles(TOPICS)
    asked = {q.lower() for q in (x["question"] for x in load_questions())}
    per_topic: dict[str, int] = {}
    for question, answers in pairs:
        assert answers and answers <= set(TOPICS)
        assert question.lower() not in asked  # made by rule, not copied from the question set
        for topic in answers:
            per_topic[topic] = per_topic.get(topic, 0) + 1
        if question.startswith(("What does", "When is", "Why does", "What causes", "How do I fix")):
            name = question.rstrip("?").split()[2]
            assert all(name in TOPICS[t] for t in answers), question  # its homes hold it
            assert len(answers) <= 3
        else:
            prefix, suffix = next(
                t.split("{}")
                for t in TITLE_TEMPLATES
                if question.startswith(t.split("{}")[0]) and question.endswith(t.split("{}")[1])
            )
            subject = question[len(prefix) : len(question) - len(suffix)]
            for topic in answers:  # a heading shared by two topics answers for both
                heads = [titles[topic]] + [h for _, h in topic_headings(TOPICS[topic])]
                assert any(subject.lower() in h.lower() for h in heads), question
    assert set(per_topic) == set(TOPICS)  # every topic has questions
