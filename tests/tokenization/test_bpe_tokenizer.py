"""Byte-level BPE: trainer vs a naive full-recount reference, round trips, special tokens,
files. No optional package needed (the Hugging Face / tiktoken oracles are in
test_bpe_oracles.py)."""

import json
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyllm.tokenizers import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer
from tinyllm.tokenizers.bpe_trainer import hf_tie_key, train_bpe
from tinyllm.tokenizers.bytes_unicode import (
    BYTE_TO_UNICODE,
    bytes_to_token_string,
    token_string_to_bytes,
)
from tinyllm.tokenizers.pretokenize import compile_pattern, pretokenize

# ----------------------------------------------------------------------------- references


def naive_train(word_counts, num_new_tokens):
    """Textbook BPE: recount every pair from scratch before each merge.

    Tie-break: highest count, then smallest (hf_id(left), hf_id(right)), where hf_id orders
    byte tokens by the code point of their GPT-2 byte-level character and merged tokens by
    creation. A merge that rebuilds an existing byte string reuses its id.
    """
    order = sorted(range(256), key=lambda b: ord(BYTE_TO_UNICODE[b]))
    hf_id = {b: i for i, b in enumerate(order)}

    def key(token):
        return hf_id[token] if token < 256 else token

    words = {tuple(word): count for word, count in word_counts.items() if word and count > 0}
    token_bytes = [bytes([i]) for i in range(256)]
    id_of = {data: i for i, data in enumerate(token_bytes)}
    merges = []
    created = 0
    while created < num_new_tokens:
        counts = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += count
        if not counts:
            break
        a, b = min(counts, key=lambda p: (-counts[p], key(p[0]), key(p[1])))
        merged = token_bytes[a] + token_bytes[b]
        if merged in id_of:
            c = id_of[merged]
        else:
            c = len(token_bytes)
            token_bytes.append(merged)
            id_of[merged] = c
            created += 1
        merges.append((a, b, c))
        new_words = {}
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(c)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + count
        words = new_words
    return merges, token_bytes


def naive_encode_chunk(tok, data):
    """Merge the lowest-rank adjacent pair, leftmost first, one merge at a time."""
    ids = list(data)
    while len(ids) > 1:
        candidates = [
            (tok._merge_rank[p], i) for i, p in enumerate(zip(ids, ids[1:])) if p in tok._merge_rank
        ]
        if not candidates:
            break
        _, i = min(candidates)
        ids[i : i + 2] = [tok._merge_result[ids[i], ids[i + 1]]]
    return ids


def chunk_counts(texts, pattern=GPT2_PATTERN):
    compiled = compile_pattern(pattern)
    counts = Counter()
    for text in texts:
        counts.update(pretokenize(text, compiled))
    return {chunk.encode("utf-8"): count for chunk, count in counts.items()}


@pytest.fixture(scope="module")
def corpus_tokenizer():
    from tinyllm.data.corpus import load_text

    return BPETokenizer.train(load_text(None)[:150_000], vocab_size=1024)


# Small alphabets make ties, overlaps ("aaa") and rebuilt tokens ((ab)c vs a(bc)) common.
small_texts = st.lists(st.text(alphabet="ab c\n.1é😀", max_size=40), min_size=1, max_size=8)
tricky_strings = [
    "",
    "hello world",
    "Hello, World! It's 2024; we'll see... ok?",
    "\x00\x00null\x00bytes\x00",
    "e\u0301 n\u0303 a\u0308\u0304 combining marks",
    "emoji 😀👍🏽👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "日本語のテキスト 中文 한국어 русский текст عربى हिन्दी",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n\r\n",
    "a" * 300,
    " " * 200 + "x",
    "\ufffd replacement char \U0010ffff max code point",
    "mixed: αβγ 123 ٣٤٥ ⅷ ½ ①",
]


# ----------------------------------------------------------------------------- byte table


def test_byte_table_is_gpt2s():
    assert len(set(BYTE_TO_UNICODE)) == 256
    assert BYTE_TO_UNICODE[ord(" ")] == "Ġ"
    assert BYTE_TO_UNICODE[ord("\n")] == "Ċ"
    assert BYTE_TO_UNICODE[ord("A")] == "A"
    assert BYTE_TO_UNICODE[0] == "Ā" and BYTE_TO_UNICODE[173] == "Ń"
    data = bytes(range(256))
    assert token_string_to_bytes(bytes_to_token_string(data)) == data
    with pytest.raises(ValueError, match="byte-level"):
        token_string_to_bytes("a b")


def test_hf_tie_key_orders_bytes_by_code_point():
    assert hf_tie_key(ord("!")) == 0
    assert hf_tie_key(ord(" ")) == 220  # 188 kept code points, then bytes 0..32 -> U+0100..
    assert sorted(range(256), key=hf_tie_key) == sorted(
        range(256), key=lambda b: ord(BYTE_TO_UNICODE[b])
    )
    assert hf_tie_key(300) == 300


# ----------------------------------------------------------------------------- training


@given(small_texts, st.integers(0, 40))
def test_merges_equal_naive_full_recount(texts, num_new):
    counts = chunk_counts(texts)
    fast = train_bpe(counts, num_new)
    merges, token_bytes = naive_train(counts, num_new)
    assert fast.merges == merges
    assert fast.token_bytes == token_bytes


@given(
    st.dictionaries(st.binary(min_size=1, max_size=12), st.integers(1, 5), max_size=12),
    st.integers(0, 30),
)
def test_merges_equal_naive_on_raw_byte_words(word_counts, num_new):
    fast = train_bpe(word_counts, num_new)
    assert fast.merges == naive_train(word_counts, num_new)[0]


def test_merges_equal_naive_on_corpus_slice():
    from tinyllm.data.corpus import load_text

    counts = chunk_counts([load_text(None)[:20_000]])
    assert train_bpe(counts, 60).merges == naive_train(counts, 60)[0]


def test_overlapping_pairs_counted_and_merged_left_to_right():
    result = train_bpe({b"aaaa": 1, b"aaa": 1}, 2)
    a = ord("a")
    assert result.merges[0] == (a, a, 256)  # (a,a): 3 + 2 occurrences
    assert result.token_bytes[256] == b"aa"
    # "aaaa" -> [aa, aa]; "aaa" -> [aa, a]: (aa, aa) and (aa, a) tie at 1; the byte token
    # "a" has a smaller id than the merged token "aa", so (aa, a) wins
    assert result.merges[1] == (256, a, 257)
    assert result.token_bytes[257] == b"aaa"


def test_tie_break_is_by_creation_order_not_by_string():
    # zz is created before aa; then (zz, q) and (aa, q) tie at 2. Hugging Face orders tied
    # pairs by token id (creation order), so (zz, q) comes first although "aa" < "zz".
    docs = ["zzq", "zzq", "aaq", "aaq", "zz"]
    tok = BPETokenizer.train(docs, vocab_size=260, pattern=None)
    learned = [tok.vocab[a] + tok.vocab[b] for a, b in tok.merges]
    assert learned == [b"zz", b"aa", b"zzq", b"aaq"]


def test_tie_break_uses_byte_level_code_points():
    # (" ", "a") and ("a", "b") both occur twice. ' ' is 'Ġ' (U+0120) in the byte-level table,
    # which sorts after 'a', so ("a", "b") wins the tie although b" " < b"a".
    tok = BPETokenizer.train(["ab", " a", "ab", " a"], vocab_size=257, pattern=None)
    assert [tok.vocab[a] + tok.vocab[b] for a, b in tok.merges] == [b"ab"]


def test_two_merges_may_build_the_same_token():
    # Training never produced this in random searches, but the format allows it: the second
    # rule for "abc" reuses its id, like Hugging Face's BPE model.
    vocab = {i: bytes([i]) for i in range(256)}
    vocab.update({256: b"ab", 257: b"bc", 258: b"abc"})
    a, b, c = b"abc"
    tok = BPETokenizer(vocab, [(a, b), (b, c), (256, c), (a, 257)], pattern=None)
    assert tok.encode("abc") == [258]
    assert tok.encode("xbc") == [ord("x"), 257]
    assert tok._merge_result[a, 257] == 258


def test_train_vocab_size_and_special_ids(corpus_tokenizer):
    assert corpus_tokenizer.vocab_size == 1024
    assert len(corpus_tokenizer.merges) == 1024 - 256
    tok = BPETokenizer.train("hello hello world", vocab_size=300, special_tokens=["<|eot|>"])
    # training runs out of pairs long before 300 tokens; the special token comes next
    assert tok.special_tokens == {"<|eot|>": len(tok.vocab)}
    assert tok.vocab_size == len(tok.vocab) + 1 < 300


def test_train_ignores_special_tokens_in_text():
    specials = ["<|endoftext|>"]
    text = "one two<|endoftext|>three <|endoftext|> four" * 5
    with_specials = BPETokenizer.train(text, 300, special_tokens=specials)
    pieces = text.split("<|endoftext|>")
    without = BPETokenizer.train(pieces, 299)
    assert with_specials.merges == without.merges
    assert all(b"<|" not in token for token in with_specials.vocab.values())


def test_train_iterator_keeps_documents_apart():
    tok = BPETokenizer.train(iter(["ab", "ab"]), 260, pattern=None)
    joined = BPETokenizer.train("abab", 260, pattern=None)
    assert [tok.vocab[a] + tok.vocab[b] for a, b in tok.merges] == [b"ab"]
    assert b"abab" in joined.vocab.values()


def test_train_argument_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("abc", 255)
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("abc", 257, special_tokens=["<a>", "<b>"])
    with pytest.raises(TypeError, match="item 1"):
        BPETokenizer.train(["ok", 3], 300)
    with pytest.raises(ValueError, match="invalid pattern"):
        BPETokenizer.train("abc", 300, pattern="(unclosed")


# ----------------------------------------------------------------------------- encode / decode


@given(st.text())
def test_round_trip_arbitrary_unicode(corpus_tokenizer, text):
    ids = corpus_tokenizer.encode(text)
    assert corpus_tokenizer.decode(ids) == text
    assert corpus_tokenizer.decode_bytes(ids) == text.encode("utf-8")


@pytest.mark.parametrize("text", tricky_strings)
def test_round_trip_tricky_strings(corpus_tokenizer, text):
    assert corpus_tokenizer.decode(corpus_tokenizer.encode(text)) == text


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN, None])
def test_round_trip_each_pattern(pattern):
    from tinyllm.data.corpus import load_text

    tok = BPETokenizer.train(load_text(None)[:30_000], 400, pattern=pattern)
    for text in tricky_strings:
        assert tok.decode(tok.encode(text)) == text


@given(st.text(alphabet="ab c\n.1é😀", max_size=400))
def test_encode_equals_naive_merge_order(text):
    # pattern=None makes long chunks, which take the heap path; short ones the rescan path
    tok = BPETokenizer.train(["ab c\n" * 20, "aab.1 cc é😀é😀" * 9, text], 300, pattern=None)
    for piece in (text, text[:40], "aab.1 cc é😀é😀" * 3):
        data = piece.encode("utf-8")
        assert tok.encode(piece) == (naive_encode_chunk(tok, data) if data else [])


def test_encode_is_cached_and_batch_matches(corpus_tokenizer):
    texts = ["the cat", "the dog", "", "the cat"]
    assert corpus_tokenizer.encode_batch(texts) == [corpus_tokenizer.encode(t) for t in texts]
    assert " cat" in corpus_tokenizer._cache


def test_training_text_compresses(corpus_tokenizer):
    text = "The assert statement raises AssertionError when the expression is false."
    ids = corpus_tokenizer.encode(text)
    assert len(ids) < len(text.encode()) / 2.5


def test_decode_invalid_utf8_replaces():
    tok = BPETokenizer.train("ééé", 260)
    ids = tok.encode("é")
    assert tok.decode_bytes([0xC3]) == b"\xc3"
    assert tok.decode([0xC3]) == "\ufffd"
    assert tok.decode(ids) == "é"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.decode([10_000])


def test_encode_type_error(corpus_tokenizer):
    with pytest.raises(TypeError, match="text must be a str"):
        corpus_tokenizer.encode(b"bytes")


# ----------------------------------------------------------------------------- special tokens


@pytest.fixture(scope="module")
def special_tokenizer():
    return BPETokenizer.train(
        "hello world, hello there " * 20, 300, special_tokens=["<|endoftext|>", "<|end|>"]
    )


def test_special_tokens_allowed(special_tokenizer):
    tok = special_tokenizer
    eot, end = tok.special_tokens["<|endoftext|>"], tok.special_tokens["<|end|>"]
    ids = tok.encode("hello<|endoftext|>world<|end|>", allowed_special="all")
    assert ids.count(eot) == 1 and ids.count(end) == 1
    assert ids[-1] == end
    assert tok.decode(ids) == "hello<|endoftext|>world<|end|>"
    assert tok.encode("<|endoftext|><|endoftext|>", allowed_special="all") == [eot, eot]


def test_special_tokens_subset_none_and_raise(special_tokenizer):
    tok = special_tokenizer
    eot = tok.special_tokens["<|endoftext|>"]
    text = "a<|endoftext|>b<|end|>c"
    subset = tok.encode(text, allowed_special={"<|endoftext|>"})
    assert eot in subset and tok.special_tokens["<|end|>"] not in subset
    assert tok.decode(subset) == text
    plain = tok.encode(text, allowed_special="none")
    assert eot not in plain and tok.decode(plain) == text
    with pytest.raises(ValueError, match="special token"):
        tok.encode(text)
    with pytest.raises(ValueError, match="unknown special"):
        tok.encode(text, allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(text, allowed_special="some")


def test_special_token_id_collision_rejected():
    vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match="already used"):
        BPETokenizer(vocab, [], special_tokens={"<s>": 5})


# ----------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path, special_tokenizer, corpus_tokenizer):
    for tok in (special_tokenizer, corpus_tokenizer):
        path = tmp_path / "tok.json"
        tok.save(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["type"] == "tinyllm.BPETokenizer"
        assert data["vocab"]["Ġ"] == ord(" ")
        assert all(isinstance(m, str) and m.count(" ") == 1 for m in data["merges"])
        loaded = BPETokenizer.load(path)
        assert loaded.vocab == tok.vocab
        assert loaded.merges == tok.merges
        assert loaded.special_tokens == tok.special_tokens
        assert loaded.pattern == tok.pattern
        assert loaded.to_dict() == tok.to_dict()
        for text in tricky_strings:
            assert loaded.encode(text) == tok.encode(text)


def test_save_load_pattern_none(tmp_path):
    tok = BPETokenizer.train("aa bb aa bb", 262, pattern=None)
    tok.save(tmp_path / "t.json")
    loaded = BPETokenizer.load(tmp_path / "t.json")
    assert loaded.pattern is None
    assert loaded.encode("aa bb") == tok.encode("aa bb")


def test_load_accepts_hf_style_list_merges(tmp_path, special_tokenizer):
    data = special_tokenizer.to_dict()
    data["merges"] = [m.split(" ") for m in data["merges"]]
    assert BPETokenizer.from_dict(data).merges == special_tokenizer.merges


def _corrupt(data, edit):
    data = json.loads(json.dumps(data))
    edit(data)
    return data


def _set(key, value):
    def edit(data):
        data[key] = value

    return edit


def _del(key):
    def edit(data):
        del data[key]

    return edit


def _vocab_edit(fn):
    def edit(data):
        fn(data["vocab"])

    return edit


MALFORMED = [
    ("missing key", _del("vocab")),
    ("missing key", _del("merges")),
    ("'type' must be", _set("type", "something.else")),
    ("unsupported 'version'", _set("version", 99)),
    ("'pattern' must be", _set("pattern", 5)),
    ("invalid pattern", _set("pattern", "(oops")),
    ("'vocab' must be an object", _set("vocab", [1, 2])),
    ("must be a non-negative int", _vocab_edit(lambda v: v.update({"zz": "7"}))),
    ("must be a non-negative int", _vocab_edit(lambda v: v.update({"zz": -1}))),
    ("not a byte-level token string", _vocab_edit(lambda v: v.update({"a b": 9999}))),
    ("used twice", _vocab_edit(lambda v: v.update({"zzzq": 0}))),
    ("all 256 single bytes", _vocab_edit(lambda v: v.pop("Ā"))),
    ("'merges' must be a list", _set("merges", "h e")),
    ("must be 'left right'", _set("merges", ["h e l"])),
    ("must be 'left right'", _set("merges", [3])),
    ("is not in vocab", _set("merges", ["h qqqq"])),
    ("result", _set("merges", ["q q"])),
    ("'special_tokens' must be", _set("special_tokens", ["<|endoftext|>"])),
    ("already used", _set("special_tokens", {"<|endoftext|>": 0})),
    ("non-negative int", _set("special_tokens", {"<|endoftext|>": "x"})),
]


@pytest.mark.parametrize("message, edit", MALFORMED, ids=[m for m, _ in MALFORMED])
def test_load_malformed_raises_clear_value_error(tmp_path, special_tokenizer, message, edit):
    good = special_tokenizer.to_dict()
    bad = _corrupt(good, edit)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        BPETokenizer.load(path)
    assert "BPETokenizer.load" in str(info.value) and "bad.json" in str(info.value)


def test_load_not_json_and_not_utf8(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="top level must be a JSON object"):
        BPETokenizer.load(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        BPETokenizer.load(path)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        BPETokenizer.load(path)
