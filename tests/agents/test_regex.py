"""The regex automaton against Python's ``re`` (membership) and ``regex`` (prefix liveness)."""

import re

import numpy as np
import pytest
import regex
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinyllm.agents.regex import DEAD, RegexAutomaton, regex_escape
from tinyllm.agents.token_mask import RegexGuide, TokenVocabulary

# ------------------------------------------------------------ random patterns of the subset
_LEAVES = st.sampled_from(
    [
        "a",
        "b",
        "c",
        "é",
        "-",
        r"\.",
        r"\*",
        r"\\",
        r"\n",
        ".",
        r"\d",
        r"\w",
        r"\s",
        r"\D",
        "[ab]",
        "[a-c]",
        "[^a]",
        "[^a-c\\n]",
        "[]a]",
        "[a-]",
        "[\\d_]",
        "[^\\s]",
        r"\x41",
        "x{",
        "}",
        "]",
    ]
)


def _quantify(p: str) -> st.SearchStrategy[str]:
    g = f"(?:{p})"
    return st.sampled_from(
        [g + "*", g + "+", g + "?", g + "{2}", g + "{0,2}", g + "{1,}", g + "{,3}", g + "{1,3}"]
    )


_PATTERNS = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda t: t[0] + t[1]),
        st.tuples(inner, inner).map(lambda t: f"(?:{t[0]}|{t[1]})"),
        inner.map(lambda p: f"({p})"),
        inner.flatmap(_quantify),
        st.just(""),
    ),
    max_leaves=8,
)
_TEXT = st.text(alphabet="abcé-.*\\\n 1_A{}]x", max_size=8)


def _ok_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be bytes
        return False
    return True


@settings(max_examples=300)  # cheap: ~1 ms per example
@given(_PATTERNS, st.lists(_TEXT, min_size=1, max_size=10))
def test_membership_equals_re_fullmatch_on_random_strings(pattern, texts):
    automaton = RegexAutomaton(pattern)
    oracle = re.compile(pattern, re.ASCII)
    for text in texts:
        assert automaton.fullmatch(text) == (oracle.fullmatch(text) is not None), (pattern, text)


@settings(max_examples=100)  # from_regex draws cost ~20 ms per example
@given(st.data(), _PATTERNS)
def test_accepts_strings_generated_from_the_pattern(data, pattern):
    # Positives: hypothesis generates members of the language from re's parse of the pattern.
    compiled = re.compile(pattern, re.ASCII)
    automaton = RegexAutomaton(pattern)
    for _ in range(5):
        text = data.draw(st.from_regex(compiled, fullmatch=True))
        assume(_ok_utf8(text))
        assert automaton.fullmatch(text), (pattern, text)
        # and the byte walk of a member is never dead on the way
        assert automaton.walk(text.encode()) != DEAD


@settings(max_examples=300)  # cheap: ~1 ms per example
@given(_PATTERNS, _TEXT)
def test_dead_state_means_no_completion(pattern, text):
    # DEAD after a prefix <=> the prefix cannot be extended to a match; oracle: regex's
    # partial matching (a different engine), on whole characters.
    automaton = RegexAutomaton(pattern)
    partial = regex.fullmatch(pattern, text, partial=True, flags=regex.ASCII | regex.V0)
    assert (automaton.walk(text.encode()) != DEAD) == (partial is not None), (pattern, text)


@pytest.mark.parametrize(
    "pattern",
    ["^a", "a$", "(?=a)", r"(a)\1", "a**", "a*?", "(a", "a)", "[a", "*a", "[é]", r"\b", "a{3,1}"],
)
def test_unsupported_or_malformed_patterns_raise(pattern):
    with pytest.raises(ValueError, match="compile_regex"):
        RegexAutomaton(pattern)


def test_regex_escape_matches_literally():
    text = 'a.b*c{1}[x]|(y)\\z-?+^$\n"'
    assert RegexAutomaton(regex_escape(text)).fullmatch(text)
    assert re.fullmatch(regex_escape(text), text)


def test_utf8_negated_class_rejects_invalid_bytes():
    a = RegexAutomaton("[^a]")
    assert a.fullmatch("é".encode()) and a.fullmatch("😀".encode())
    for bad in (b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe0\x80\x80", b"\xf5\x80\x80\x80"):
        assert not a.fullmatch(bad), bad  # stray continuation, overlong, surrogate, > U+10FFFF


# ------------------------------------------------------------ token masks
def _train_bpe():
    from tinyllm.tokenizers.bpe import BPETokenizer

    text = "the answer is 42. the score is 17, then 3.5 and 1999! yes no maybe " * 20
    return BPETokenizer.train(text, vocab_size=300, special_tokens=["<|endoftext|>"])


@pytest.mark.parametrize("pattern", [r"(?:yes|no)", r"-?[0-9]+(?:\.[0-9]+)?", r"the [a-z ]{1,12}!"])
def test_bpe_mask_equals_partial_match_oracle(pattern):
    tok = _train_bpe()
    vocab = TokenVocabulary.from_bpe(tok)
    guide = RegexGuide(pattern, vocab)
    assert any(len(t) > 1 for t in vocab.tokens if t)  # multi-byte tokens are present
    rng = np.random.default_rng(0)
    for prefix in ["", "t", "the ", "th", "-1", "3.", "ye", "n"]:
        state = guide.automaton.walk(prefix.encode())
        if state == DEAD:
            continue
        mask = guide.mask(state)
        for token_id in rng.permutation(vocab.size)[:150]:
            data = vocab.tokens[token_id]
            if token_id == vocab.eos_token_id:
                expect = re.fullmatch(pattern, prefix, re.ASCII) is not None
            elif not data or max(data) >= 0x80:
                # no special token may appear; and these patterns have no negated class or
                # ".", so no byte of a multi-byte character can start a match
                expect = False
            else:
                candidate = prefix + data.decode("ascii")
                expect = (
                    regex.fullmatch(pattern, candidate, partial=True, flags=regex.ASCII) is not None
                )
            assert mask[token_id] == expect, (pattern, prefix, data)


def test_masks_are_cached_per_state():
    guide = RegexGuide("[0-9]{2}", TokenVocabulary.bytes_level())
    m1 = guide.mask(guide.initial)
    assert guide.mask(guide.initial) is m1 and guide.num_cached_masks == 1
    assert m1.sum() == 10 and not m1[256]
    with pytest.raises(ValueError, match="DEAD"):
        guide.mask(DEAD)


def test_finished_state_allows_only_eos_and_bad_states_raise():
    from tinyllm.agents.token_mask import FINISHED

    guide = RegexGuide("a", TokenVocabulary.bytes_level())
    done = guide.next_state(guide.next_state(guide.initial, ord("a")), 256)
    assert done == FINISHED and np.flatnonzero(guide.mask(done)).tolist() == [256]
    assert guide.next_state(done, 256) == FINISHED and guide.next_state(done, ord("a")) == DEAD
    assert guide.next_state(guide.initial, 256) == DEAD  # EOS before a match
    with pytest.raises(ValueError, match="no state"):
        guide.automaton.step(FINISHED, ord("a"))
