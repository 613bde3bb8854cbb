"""Optional oracles for the byte-level BPE tokenizer, skipped when the package is absent:

* Hugging Face ``tokenizers``: its BPE trainer (ByteLevel pre-tokenizer, full 256-byte initial
  alphabet) learns the same merges, in the same order, as ``BPETokenizer.train``; its BPE
  model splits text into the same tokens.
* ``tiktoken``: an ``Encoding`` built from our ranks encodes every string to our ids.
"""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyllm.tokenizers import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer
from tinyllm.tokenizers.bytes_unicode import bytes_to_token_string

STRINGS = [
    "",
    "Hello, World! It's 2024; we'll see... ok?",
    "def f(x):\n    return x ** 2  # square\n\n\n",
    "\x00\x00null\x00bytes\x00",
    "e\u0301 n\u0303 a\u0308\u0304 combining marks",
    "emoji 😀👍🏽👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "日本語のテキスト 中文 한국어 русский текст عربى हिन्दी",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n\r\n",
    "a" * 300,
    " " * 200 + "x",
    "mixed: αβγ 123 ٣٤٥ ⅷ ½ ①",
    "The assert statement raises AssertionError when the expression is false.",
]


def hf_train(docs, vocab_size, use_regex=True, special_tokens=()):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(special_tokens),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    return tok


def hf_merge_strings(hf_tokenizer):
    merges = json.loads(hf_tokenizer.to_str())["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def our_merge_strings(tok):
    return [
        f"{bytes_to_token_string(tok.vocab[a])} {bytes_to_token_string(tok.vocab[b])}"
        for a, b in tok.merges
    ]


@pytest.fixture(scope="module")
def corpus():
    from tinyllm.data.corpus import load_text

    return load_text(None)


# ----------------------------------------------------------------------------- Hugging Face


def test_hf_trainer_same_merges_on_default_corpus(corpus):
    hf = hf_train([corpus], 4096)
    ours = BPETokenizer.train(corpus, 4096)
    assert our_merge_strings(ours) == hf_merge_strings(hf)
    assert len(hf.get_vocab()) == ours.vocab_size == 4096


def test_hf_trainer_same_merges_with_special_tokens(corpus):
    specials = ["<|endoftext|>", "<pad>"]
    docs = corpus[:100_000].split("\n\n")
    hf = hf_train(docs, 1000, special_tokens=specials)
    ours = BPETokenizer.train(docs, 1000, special_tokens=specials)
    assert our_merge_strings(ours) == hf_merge_strings(hf)
    assert ours.vocab_size == len(hf.get_vocab())


def test_hf_byte_ids_follow_code_points():
    hf = hf_train(["x"], 256)
    vocab = hf.get_vocab()
    assert vocab["!"] == 0 and vocab["Ġ"] == 220 and len(vocab) == 256


@given(st.lists(st.text(alphabet="ab c\n.1é😀", max_size=40), min_size=1, max_size=8))
def test_hf_trainer_same_merges_random_corpora(docs):
    hf = hf_train(docs, 256 + 40)
    ours = BPETokenizer.train(docs, 256 + 40)
    assert our_merge_strings(ours) == hf_merge_strings(hf)


@given(st.lists(st.text(alphabet="abcd ", min_size=1, max_size=30), min_size=1, max_size=8))
def test_hf_trainer_same_merges_without_pretokenization(docs):
    hf = hf_train(docs, 256 + 30, use_regex=False)
    ours = BPETokenizer.train(docs, 256 + 30, pattern=None)
    assert our_merge_strings(ours) == hf_merge_strings(hf)


def test_hf_tie_break_by_creation_order():
    docs = ["zzq", "zzq", "aaq", "aaq", "zz"]
    hf = hf_train(docs, 260, use_regex=False)
    assert hf_merge_strings(hf) == ["z z", "a a", "zz q", "aa q"]
    assert our_merge_strings(BPETokenizer.train(docs, 260, pattern=None)) == hf_merge_strings(hf)


def test_hf_model_splits_text_into_the_same_tokens(corpus):
    docs = [corpus[:200_000]]
    hf = hf_train(docs, 2000)
    ours = BPETokenizer.train(docs, 2000)
    for text in [*STRINGS, corpus[200_000:210_000]]:
        expected = hf.encode(text).tokens
        got = [bytes_to_token_string(ours.vocab[i]) for i in ours.encode(text)]
        assert got == expected


# ----------------------------------------------------------------------------- tiktoken


def tiktoken_encoding(tok, pattern):
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding(
        "tinyllm-test",
        pat_str=pattern,
        mergeable_ranks=tok.mergeable_ranks(),
        special_tokens=tok.special_tokens,
    )


@pytest.fixture(scope="module")
def gpt2_pair(corpus):
    tok = BPETokenizer.train(corpus, 4096, special_tokens=["<|endoftext|>"])
    return tok, tiktoken_encoding(tok, GPT2_PATTERN)


def test_tiktoken_same_ids_on_corpus_and_strings(gpt2_pair, corpus):
    tok, enc = gpt2_pair
    assert enc.encode_ordinary(corpus) == tok.encode(corpus)
    for text in STRINGS:
        assert enc.encode_ordinary(text) == tok.encode(text)
        assert enc.decode(tok.encode(text)) == text


@given(st.text())
def test_tiktoken_same_ids_random_text(gpt2_pair, text):
    tok, enc = gpt2_pair
    assert enc.encode_ordinary(text) == tok.encode(text)


def test_tiktoken_same_ids_with_special_tokens(gpt2_pair):
    tok, enc = gpt2_pair
    text = "first<|endoftext|>second <|endoftext|>"
    assert enc.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    assert enc.encode(text, disallowed_special=()) == tok.encode(text, allowed_special="none")


def test_tiktoken_same_ids_gpt4_pattern(corpus):
    tok = BPETokenizer.train(corpus[:200_000], 2000, pattern=GPT4_PATTERN)
    enc = tiktoken_encoding(tok, GPT4_PATTERN)
    for text in [*STRINGS, corpus[200_000:230_000]]:
        assert enc.encode_ordinary(text) == tok.encode(text)
