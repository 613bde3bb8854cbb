"""Constrained sampling: every masked random-logit sample matches the regex / the schema."""

import json
import re

import numpy as np
import pytest

from tinyllm.agents.json_schema import schema_to_regex
from tinyllm.agents.logits import JSONLogitsProcessor, RegexLogitsProcessor
from tinyllm.agents.token_mask import TokenVocabulary

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 5},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "tags": {"type": "array", "items": {"enum": ["a", 'b"', 1, None]}, "maxItems": 3},
        "ok": {"type": "boolean"},
        "pos": {
            "type": "object",
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
            "required": ["y"],
        },
        "unit": {"const": "cm"},
    },
    "required": ["name", "ok"],
}


def _sample(proc, vocab, rng, n, max_steps=400):
    """n samples, one row each: argmax of (masked) standard-normal logits, prompt = [0]."""
    out = []
    for _ in range(n):
        proc._states = {(): proc.guide.initial}
        proc.prompt_length = 1
        ids = [0]
        for _ in range(max_steps):
            scores = proc(np.array([ids]), rng.standard_normal((1, vocab.size)))
            token = int(np.argmax(scores[0]))
            if token == vocab.eos_token_id:
                break
            ids.append(token)
        else:
            raise AssertionError(f"no EOS within {max_steps} steps: {ids}")
        out.append(b"".join(vocab.tokens[t] for t in ids[1:]))
    return out


def test_json_schema_samples_always_validate():
    vocab = TokenVocabulary.bytes_level()
    proc = JSONLogitsProcessor(SCHEMA, vocab)
    rng = np.random.default_rng(0)
    docs = _sample(proc, vocab, rng, 1000)
    seen_optional = set()
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for data in docs:
        doc = json.loads(data.decode("utf-8"))
        validator.validate(doc)
        assert list(doc) == [k for k in SCHEMA["properties"] if k in doc]  # canonical order
        seen_optional |= set(doc) - {"name", "ok"}
    # the sampler explored the schema (optional members both present and absent)
    assert seen_optional == {"age", "score", "tags", "pos", "unit"}


@pytest.mark.parametrize(
    "pattern",
    [r"-?(?:0|[1-9][0-9]{0,3})(?:\.[0-9]{1,2})?", r"(?:[a-z]+@[a-z]+\.(?:com|org))", r".{1,4}"],
)
def test_regex_samples_always_match(pattern):
    vocab = TokenVocabulary.bytes_level()
    proc = RegexLogitsProcessor(pattern, vocab)
    rng = np.random.default_rng(1)
    for data in _sample(proc, vocab, rng, 300):
        assert re.fullmatch(pattern, data.decode("utf-8"), re.ASCII), data


def test_bpe_vocabulary_samples_match():
    from tinyllm.tokenizers.bpe import BPETokenizer

    tok = BPETokenizer.train(
        "answer: 42, answer: 17, answer: 3.5, then 1999 " * 30,
        vocab_size=290,
        special_tokens=["<|endoftext|>"],
    )
    vocab = TokenVocabulary.from_bpe(tok)
    pattern = r"answer: [0-9]{1,3}(?:\.[0-9])?"
    proc = RegexLogitsProcessor(pattern, vocab)
    rng = np.random.default_rng(2)
    samples = _sample(proc, vocab, rng, 200)
    for data in samples:
        assert re.fullmatch(pattern, data.decode("utf-8")), data


def test_json_regex_matches_json_dumps_of_valid_documents():
    # Independent direction: documents written by hand, serialized by json.dumps, must match.
    regex = re.compile(schema_to_regex(SCHEMA))
    for doc in [
        {"name": "", "ok": False},
        {"name": 'ab"\\', "age": -12, "score": 1.5e-3, "tags": [], "ok": True},
        {"name": "é", "tags": ["a", 1, None], "ok": True, "pos": {"y": 0}, "unit": "cm"},
    ]:
        assert regex.fullmatch(json.dumps(doc, separators=(",", ":"), ensure_ascii=False)), doc
    for bad in [
        '{"ok":true}',
        '{"name":"x","ok":1}',
        '{"name":"abcdef","ok":true}',
        '{"ok":true,"name":"x"}',
        '{"name":"x","ok":true,"pos":{"x":1}}',
    ]:
        assert not regex.fullmatch(bad), bad


def test_processor_checks_shapes_and_dead_prefixes():
    vocab = TokenVocabulary.bytes_level()
    proc = RegexLogitsProcessor("ab", vocab, prompt_length=0)
    with pytest.raises(ValueError, match="257"):
        proc(np.zeros((1, 0), dtype=np.int64), np.zeros((1, 10)))
    with pytest.raises(ValueError, match="leave the language"):
        proc(np.array([[ord("b")]]), np.zeros((1, 257)))
    with pytest.raises(ValueError, match="unsupported keyword"):
        schema_to_regex({"type": "string", "pattern": "x"})


def test_with_a_tinyllm_model_generate_and_finished_rows_pad_with_eos():
    import tinyllm
    from tinyllm.models import ModelConfig, build_model

    tinyllm.manual_seed(0)
    model = build_model(
        ModelConfig(arch="llama", vocab_size=257, d_model=16, n_layer=1, n_head=2, block_size=96)
    )
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"}},
        "required": ["ok", "n"],
    }
    vocab = TokenVocabulary.bytes_level()
    prompt = np.full((6, 2), ord("{"), dtype=np.int64)
    proc = JSONLogitsProcessor(schema, vocab)
    out = model.generate(
        tinyllm.tensor(prompt), 48, generator=np.random.default_rng(0), logits_processor=proc
    ).data[:, 2:]
    finished = 0
    for row in out.tolist():
        if 256 in row:
            end = row.index(256)
            assert all(t == 256 for t in row[end:])  # after EOS only EOS
            jsonschema.validate(json.loads(bytes(row[:end]).decode()), schema)
            finished += 1
        else:  # unfinished within the budget: still a live prefix of the language
            assert proc.guide.automaton.walk(bytes(row)) != -1
    assert finished >= 3
