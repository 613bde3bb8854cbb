"""Context compression (extractive, surprisal) and reranking (MMR, cross-encoder)."""

import numpy as np
import pytest

from tinyllm.rag.compress import embedding_scorer, extractive_compress, surprisal_compress
from tinyllm.rag.embedders import TfidfProjectionEmbedder
from tinyllm.rag.rerank import cross_encoder_rerank, mmr

CONTEXT = (
    "Generators are functions that contain yield. "
    "The weather was pleasant that day and nobody complained. "
    "Each yield suspends the generator and hands a value to the caller. "
    "Lists store items in order. "
    "A generator resumes after the yield when next() is called on it."
)


def test_extractive_keeps_relevant_sentences_in_order_within_budget():
    result = extractive_compress("how does yield suspend a generator", CONTEXT, budget=25)
    assert sum(len(result.sentences[i].split()) for i in result.kept) <= 25
    assert result.kept == sorted(result.kept)
    assert 2 in result.kept and 1 not in result.kept
    assert result.text == " ".join(result.sentences[i] for i in result.kept)
    # a sentence that does not fit is skipped but smaller ones are still tried
    tiny = extractive_compress("lists yield", CONTEXT, budget=5)
    assert tiny.kept == [3]
    assert extractive_compress("x", "", 10).text == ""


def test_extractive_with_embedding_scorer_and_passage_list():
    embed = TfidfProjectionEmbedder(dim=64).fit([CONTEXT])
    result = extractive_compress(
        "weather pleasant",
        [CONTEXT, "Nobody likes bad weather."],
        budget=12,
        scorer=embedding_scorer(embed),
    )
    assert result.kept[0] == 1 and len(result.sentences) == 6
    with pytest.raises(ValueError, match="extractive_compress: scorer returned shape"):
        extractive_compress("q", CONTEXT, 10, scorer=lambda q, s: np.zeros(2))


def toy_logprobs(calls):
    """A fake LM: a token is predictable (log p = -0.1) if it repeats the previous token,
    otherwise its log-probability is -len(token) (longer words are more surprising)."""

    def logprobs(seq):
        calls.append(list(seq))
        out = []
        for i, tok in enumerate(seq):
            out.append(-0.1 if i > 0 and seq[i - 1] == tok else -float(len(tok)))
        return np.array(out)

    return logprobs


TOKENS = "the the quick brown fox fox jumps over a lazy lazy dog".split()


def test_surprisal_keeps_exactly_the_top_surprisal_tokens():
    result = surprisal_compress(TOKENS, toy_logprobs([]), budget=5)
    s = result.surprisal
    assert result.kept.tolist() == sorted(result.kept.tolist())
    gamma = result.thresholds[0]
    assert set(np.flatnonzero(s > gamma)) <= set(result.kept.tolist())
    assert all(s[i] >= gamma for i in result.kept)
    assert result.tokens == [TOKENS[i] for i in result.kept]
    assert result.tokens == ["quick", "brown", "jumps", "over", "lazy"]


def test_surprisal_budgets_are_monotone():
    previous = set()
    for budget in range(len(TOKENS) + 1):
        kept = set(surprisal_compress(TOKENS, toy_logprobs([]), budget=budget).kept.tolist())
        assert len(kept) == budget and previous <= kept
        previous = kept
    assert len(surprisal_compress(TOKENS, toy_logprobs([]), ratio=0.5).kept) == 6


def test_iterative_segments_condition_on_compressed_prefix():
    calls = []
    result = surprisal_compress(TOKENS, toy_logprobs(calls), budget=6, segment_size=4)
    assert len(result.kept) == 6 and len(calls) == 3
    assert calls[0] == TOKENS[:4]
    # the second call sees the compressed first segment, then the raw second segment
    kept_first = [TOKENS[i] for i in result.kept if i < 4]
    assert calls[1] == kept_first + TOKENS[4:8]
    with pytest.raises(ValueError, match="exactly one of budget and ratio"):
        surprisal_compress(TOKENS, toy_logprobs([]))


def test_mmr_lambda_extremes_and_duplicates():
    rng = np.random.default_rng(0)
    query = rng.standard_normal(8)
    docs = rng.standard_normal((10, 8))
    relevance = docs @ query / np.linalg.norm(docs, axis=1) / np.linalg.norm(query)
    assert mmr(query, docs, 10, lambda_=1.0) == list(np.argsort(-relevance, kind="stable"))
    # duplicates: the best document twice; with a diversity weight both are not in the top 2
    # (not a theorem for lambda near 1: the duplicate wins when every other document has
    # relevance below r_best - (1 - lambda)/lambda * (1 - cos), as here for lambda = 0.9)
    best = int(np.argmax(relevance))
    with_dup = np.vstack([docs, docs[best]])
    assert set(mmr(query, with_dup, 2, lambda_=1.0)) == {best, 10}
    for lam in (0.3, 0.5, 0.7):
        top2 = mmr(query, with_dup, 2, lambda_=lam)
        assert set(top2) != {best, 10}
    # lambda = 0: first the most relevant, then the least similar to it
    picks = mmr(query, docs, 2, lambda_=0.0)
    cos = docs @ docs[picks[0]] / np.linalg.norm(docs, axis=1) / np.linalg.norm(docs[picks[0]])
    cos[picks[0]] = np.inf
    assert picks[0] == best and picks[1] == int(np.argmin(cos))


def test_cross_encoder_rerank_batches_and_orders():
    batches = []

    def score_pairs(pairs):
        batches.append(len(pairs))
        return [len(set(q.split()) & set(p.split())) for q, p in pairs]

    passages = ["a b", "a b c", "x", "b c d e", "c"]
    ranked = cross_encoder_rerank("a b c", passages, score_pairs, k=3, batch_size=2)
    assert [i for i, _ in ranked] == [1, 0, 3]
    assert batches == [2, 2, 1]
    with pytest.raises(ValueError, match="returned 1 scores for 2 pairs"):
        cross_encoder_rerank("q", ["a", "b"], lambda pairs: [1.0])
